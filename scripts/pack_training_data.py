"""Packs a training folder for a machine without imagecodecs: TIFFs re-saved losslessly with zlib, the rest copied.

``python scripts/pack_training_data.py runs/split/train OUT.tar.gz [--min-side 128] [--max-side 768]``: the archive
unpacks to ``train/<domain>/...``; files whose planes are smaller than ``--min-side`` (the training crop) are left out,
TIFF and PNG planes larger than ``--max-side`` are cut to their centre (to fit a size limit, e.g. a lent GPU's; JPEGs
stay whole, since cutting them means re-encoding), and every re-saved TIFF is checked to read back identically (array,
axes, channel groups).
"""
import argparse
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from training.data import open_source


def centre(array: np.ndarray, axes: str, side: int | None) -> np.ndarray:
    """The central side x side of every Y-X plane (planes already that small stay whole)."""
    if side is None:
        return array
    cut = [slice(None)] * array.ndim
    for axis in (axes.index("Y"), axes.index("X")):
        start = max(0, (array.shape[axis] - side) // 2)
        cut[axis] = slice(start, start + side)
    return array[tuple(cut)]


def pack(src: Path, out: Path, *, min_side: int, max_side: int | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            source = open_source(f)
            if min(source.height, source.width) < min_side:
                print(f"left out (smaller than {min_side} px): {f.name}")
                continue
            dst = root / f.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix.lower() == ".png" and max_side and max(source.height, source.width) > max_side:
                with Image.open(f) as im:
                    pixels = np.asarray(im)
                Image.fromarray(centre(pixels, "YX", max_side)).save(dst, optimize=True)
                continue
            if f.suffix.lower() not in (".tif", ".tiff"):
                shutil.copy(f, dst)
                continue
            with tifffile.TiffFile(f) as t:
                series = t.series[0]
                array, axes = series.asarray(), series.axes
            array = centre(array, axes, max_side)
            rgb = axes.endswith("S") and array.shape[-1] in (3, 4)
            dst = dst.with_suffix(".tif")
            tifffile.imwrite(dst, array, compression="zlib", metadata={"axes": axes},
                             photometric="rgb" if rgb else "minisblack")
            again = open_source(dst)
            same = (source.axes, source.groups) == (again.axes, again.groups)
            if not (same and np.array_equal(centre(source.array, source.axes, max_side), again.array)):
                raise SystemExit(f"{f}: does not read back identically after re-saving")
        with tarfile.open(out, "w:gz") as tar:
            tar.add(root, arcname="train")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--min-side", type=int, default=128)
    p.add_argument("--max-side", type=int, help="cut larger TIFF and PNG planes to their central max-side x max-side")
    args = p.parse_args()
    pack(args.src, args.out, min_side=args.min_side, max_side=args.max_side)


if __name__ == "__main__":
    main()
