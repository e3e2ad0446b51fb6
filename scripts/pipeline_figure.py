"""Writes docs/pipeline_result.png: a crop of the example mosaic, nearest-neighbour x4 beside the pipeline's output.

Run after the README's main command: python scripts/pipeline_figure.py demo.zarr demo_x4.ome.zarr
"""
import sys
from pathlib import Path

import numpy as np
import zarr
from PIL import Image

CROP = 96  # LR pixels


def level0(path: str) -> np.ndarray:
    node = zarr.open(path, mode="r")
    return node if isinstance(node, zarr.Array) else node["0"]


def to_uint8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((x.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def main(lr_path: str, hr_path: str, out: str = "docs/pipeline_result.png") -> None:
    lr, hr = level0(lr_path), level0(hr_path)
    lr = np.asarray(lr).reshape(lr.shape[-2:])
    y, x = lr.shape[0] // 3, lr.shape[1] // 3
    crop = lr[y:y + CROP, x:x + CROP]
    up = np.asarray(hr).reshape(hr.shape[-2:])[4 * y:4 * (y + CROP), 4 * x:4 * (x + CROP)]
    lo, hi = np.percentile(crop, (0.5, 99.8))
    nearest = np.kron(to_uint8(crop, lo, hi), np.ones((4, 4), np.uint8))
    gap = np.full((nearest.shape[0], 8), 255, np.uint8)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.hstack([nearest, gap, to_uint8(up, lo, hi)])).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
