"""Packs a training folder for a machine without imagecodecs: TIFFs re-saved losslessly with zlib, the rest copied.

``python scripts/pack_training_data.py runs/split/train OUT.tar.gz [--min-side 128]``: the archive unpacks to
``train/<domain>/...``; files whose planes are smaller than ``--min-side`` (the training crop) are left out, and every
re-saved TIFF is checked to read back identically (array, axes, channel groups).
"""
import argparse
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from training.data import _read_tiff, open_source


def pack(src: Path, out: Path, *, min_side: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            source = open_source(f)
            if min(source.height, source.width) < min_side:
                print(f"left out (smaller than {min_side} px): {f.name}")
                continue
            dst = root / f.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix.lower() not in (".tif", ".tiff"):
                shutil.copy(f, dst)
                continue
            with tifffile.TiffFile(f) as t:
                series = t.series[0]
                array, axes = series.asarray(), series.axes
            rgb = axes.endswith("S") and array.shape[-1] in (3, 4)
            dst = dst.with_suffix(".tif")
            tifffile.imwrite(dst, array, compression="zlib", metadata={"axes": axes},
                             photometric="rgb" if rgb else "minisblack")
            a, b = _read_tiff(f), _read_tiff(dst)
            if not (np.array_equal(a[0], b[0]) and a[1:] == b[1:]):
                raise SystemExit(f"{f}: does not read back identically after re-saving")
        with tarfile.open(out, "w:gz") as tar:
            tar.add(root, arcname="train")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--min-side", type=int, default=128)
    args = p.parse_args()
    pack(args.src, args.out, min_side=args.min_side)


if __name__ == "__main__":
    main()
