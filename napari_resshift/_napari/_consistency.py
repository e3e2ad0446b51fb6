"""The data-consistency map of an in-memory result: |area-downsampled result − input|, computed in row slices so
the GUI thread keeps the GIL between them.
"""
from __future__ import annotations

import numpy as np

ROWS_PER_CHUNK = 256  # numpy work in the worker goes in slices so the GUI thread gets the GIL between them


def area_downsample(image: np.ndarray, scale: int) -> np.ndarray:
    """Mean over each scale×scale block: the exact, antialiased inverse footprint of an integer upscale."""
    h, w = image.shape[0] // scale, image.shape[1] // scale
    out = np.empty((h, w) + image.shape[2:], np.float32)
    rows = max(1, ROWS_PER_CHUNK // scale)
    for y in range(0, h, rows):
        block = image[y * scale:(y + rows) * scale].astype(np.float32)
        out[y:y + rows] = block.reshape(-1, scale, w, scale, *image.shape[2:]).mean(axis=(1, 3))
    return out


def consistency_map(result: np.ndarray, lr: np.ndarray, *, scale: int, rgb: bool) -> np.ndarray:
    """|area-downsampled result − input| in the input's units; colour channels (not alpha) are averaged."""
    diff = np.abs(area_downsample(result, scale) - lr.astype(np.float32))
    return diff[..., :3].mean(-1) if rgb else diff
