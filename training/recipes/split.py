"""The default model's data split: about 15% of the files of each domain held out, never trained on.

``python -m training.recipes.split ../shared/data runs/split`` makes ``train/<domain>`` and ``val/<domain>`` folders of
links (or, with ``--copy``, of copies of the files, to carry to another machine).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

DOMAINS = ("natural", "microscopy", "satellite")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
VAL_PERCENT = 15
# Files that are channels or frames of one field of view share a stem; they go to the same side of the split.
CHANNEL_TAG = re.compile(r"(_(w\d|[DFRGN]|\d{4}|ms_lr|pan_hr|\d{4}))+$", re.IGNORECASE)


def group_of(path: Path) -> str:
    stem = CHANNEL_TAG.sub("", path.stem)
    return f"{path.parent.name}/{stem}"


def validation_groups(files: list[Path]) -> set[str]:
    """Groups in the order of a hash of their name, taken until they hold VAL_PERCENT of the files."""
    groups = sorted({group_of(f) for f in files}, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    chosen, count = set(), 0
    for g in groups:
        if count * 100 >= VAL_PERCENT * len(files):
            break
        chosen.add(g)
        count += sum(group_of(f) == g for f in files)
    return chosen


def split(root: Path) -> dict[str, dict[str, list[Path]]]:
    out = {}
    for domain in DOMAINS:
        files = sorted(p for p in (root / domain).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if root.joinpath(domain, "pairs").is_dir():  # real LR/HR pairs are for evaluation of 2x, not x4 training
            files = [p for p in files if p.parent.name != "pairs"]
        val = validation_groups(files)
        out[domain] = {
            "val": [p for p in files if group_of(p) in val],
            "train": [p for p in files if group_of(p) not in val],
        }
    return out


def too_small(path: Path, side: int) -> bool:
    from training.data import open_source

    source = open_source(path)
    return min(source.height, source.width) < side


def place(src: Path, dst: Path, *, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recipes.split", description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="the shared data folder (natural/, microscopy/, satellite/)")
    p.add_argument("out", type=Path)
    p.add_argument("--copy", action="store_true", help="copy files instead of linking them")
    p.add_argument("--only", choices=("train", "val"), help="place only one side")
    p.add_argument("--min-side", type=int, default=0, help="leave out images smaller than this (the training crop)")
    args = p.parse_args(argv)
    if not all((args.data / d).is_dir() for d in DOMAINS):
        print(f"error: {args.data} lacks one of {', '.join(DOMAINS)}", file=sys.stderr)
        return 2
    for domain, sides in split(args.data).items():
        for side, files in sides.items():
            if args.only and side != args.only:
                continue
            for f in files:
                if args.min_side and too_small(f, args.min_side):
                    print(f"left out, smaller than {args.min_side} px: {f}")
                    continue
                rel = f.relative_to(args.data / domain)
                place(f, args.out / side / domain / str(rel).replace(os.sep, "__"), copy=args.copy)
        print(f"{domain}: {len(sides['train'])} train, {len(sides['val'])} validation files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
