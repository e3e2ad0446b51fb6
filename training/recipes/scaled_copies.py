"""Scale augmentation as files: Lanczos-shrunk copies of a folder's images, as more training photos.

``python -m training.recipes.scaled_copies SRC DST --scales 0.6 0.8 --min-side 192`` writes ``DST/<stem>_x<scale>.png``
for every image of SRC and scale whose shorter side stays at least MIN_SIDE; SRC is only read.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from .split import IMAGE_SUFFIXES


def suffix(scale: float) -> str:
    return f"_x{round(scale * 10)}"


def scaled_copies(src: Path, dst: Path, scales: list[float], min_side: int) -> int:
    """Writes the copies; returns how many. Refuses, before writing, scales that would not shrink or that share a
    name (copies are named by tenths, so 0.75 and 0.8 would overwrite each other)."""
    if not all(0 < s < 1 for s in scales) or len({suffix(s) for s in scales}) < len(scales):
        raise ValueError(f"scales {scales}: give each between 0 and 1, at most one per tenth (0.6 -> _x6)")
    dst.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        image = Image.open(path).convert("RGB")
        for scale in scales:
            size = (round(image.width * scale), round(image.height * scale))
            if min(size) >= min_side:
                image.resize(size, Image.LANCZOS).save(dst / f"{path.stem}{suffix(scale)}.png")
                written += 1
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--scales", type=float, nargs="+", default=[0.6, 0.8])
    p.add_argument("--min-side", type=int, default=192)
    args = p.parse_args(argv)
    try:
        written = scaled_copies(args.src, args.dst, args.scales, args.min_side)
    except ValueError as exc:
        p.error(str(exc))
    print(f"wrote {written} files to {args.dst}")


if __name__ == "__main__":
    main()
