"""A small, real-looking fluorescence mosaic generated on the spot, so the main command runs with no data of one's own.

Textured cell nuclei over a dim background, stitched from camera fields with uneven illumination and shot noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from napari_resshift.errors import ResShiftError

from . import ome

PIXEL_SIZE = 0.65  # micrometre: a 10x objective on a common sCMOS camera
FIELD = 256  # camera field side in pixels; the mosaic is stitched from these
EXAMPLE_NAME = "example mosaic"  # how --overwrite knows an example of its own


def mosaic(height: int = 512, width: int = 512, *, seed: int = 0) -> np.ndarray:
    """uint16 image of ``height`` x ``width`` pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cells = np.zeros((height, width), np.float32)
    for _ in range(height * width // 1500):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(5, 11, size=2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        cells += rng.uniform(0.5, 1.0) / (1 + np.exp(np.clip((u * u + v * v - 1) * 6, -30, 30)))
    chromatin = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 1.5)
    texture = 1 + 1.5 * chromatin / (chromatin.std() + 1e-6) * 0.25
    background = 0.08 + 0.04 * ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 40) * 20
    fy = (yy % FIELD) / FIELD - 0.5
    fx = (xx % FIELD) / FIELD - 0.5
    vignette = 1 - 0.35 * (fy * fy + fx * fx)
    signal = (np.clip(cells, 0, 1.2) * texture + np.clip(background, 0, None)) * vignette
    photons = rng.poisson(np.clip(signal, 0, None) * 3000) + rng.normal(100, 3, size=signal.shape)
    return np.clip(photons, 0, 65535).astype(np.uint16)


def _is_example(path: Path) -> bool:
    try:
        ms = ome.read_multiscales(zarr.open_group(str(path), mode="r").attrs.asdict())
    except Exception:  # noqa: BLE001 - whatever is there, it is not an example of ours
        return False
    return bool(ms) and ms.get("name") == EXAMPLE_NAME


def write_example(path, *, height: int = 512, width: int = 512, overwrite: bool = False) -> Path:
    """An OME-Zarr 0.5 image (axes yx, micrometre units) at ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ResShiftError(f"{path}: already exists; choose another path or add --overwrite")
    if path.exists() and not _is_example(path):
        raise ResShiftError(f"{path}: not an example written by this command; --overwrite only replaces those: "
                            "remove it yourself or choose another path")
    image = mosaic(height, width)
    fmt = ome.pick_format("0.5")
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    level0 = group.create_array("0", shape=image.shape, chunks=(FIELD, FIELD), dtype=image.dtype,
                                 dimension_names=["y", "x"])
    level0[:] = image
    scale = {"y": PIXEL_SIZE, "x": PIXEL_SIZE}
    ms = ome.multiscales("yx", levels=1, scale=scale, translation={}, units={"y": "micrometer", "x": "micrometer"},
                         name=EXAMPLE_NAME)
    group.attrs.update(fmt.attrs(ms))
    return path
