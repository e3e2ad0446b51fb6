"""Intensity normalisation between stored values and the model's [-1, 1], recorded so that it maps back.

Modes: ``range`` (the dtype's full range; floats are taken as [0, 1]), ``percentile`` (per channel, robust to hot
pixels; the default for anything but 8-bit, since 12/16-bit microscopy rarely fills its dtype) and ``minmax``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import ResShiftError

MODES = ("range", "percentile", "minmax")
NORM_MODES = ("auto", *MODES)  # what a front-end offers: auto picks range for 8-bit, percentile otherwise
DEFAULT_PERCENTILES = (0.01, 99.99)
SUPPORTED = ("uint8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64", "bool")


@dataclass(frozen=True)
class Normalization:
    """value -> (value - low) / (high - low) * 2 - 1, per channel."""

    mode: str
    low: tuple[float, ...]
    high: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self) | {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(d["mode"], tuple(d["low"]), tuple(d["high"]))

    def _bounds(self, ndim: int, channel_axis: int | None):
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if channel_axis is None:
            return low[0], high[0]
        shape = [1] * ndim
        shape[channel_axis] = -1
        return low.reshape(shape), high.reshape(shape)

    def forward(self, x: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
        """Stored values -> float32 in about [-1, 1]."""
        low, high = self._bounds(x.ndim, channel_axis)
        return ((x.astype(np.float64) - low) / (high - low) * 2 - 1).astype(np.float32)

    def inverse(self, y: np.ndarray, dtype, *, channel_axis: int | None = None) -> np.ndarray:
        """Model values -> stored values of ``dtype`` (clipped and rounded for integers)."""
        low, high = self._bounds(y.ndim, channel_axis)
        x = (y.astype(np.float64) + 1) / 2 * (high - low) + low
        dtype = np.dtype(dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return np.clip(np.rint(x), info.min, info.max).astype(dtype)
        if dtype.kind == "b":
            return x >= 0.5
        return x.astype(dtype)


def check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.name not in SUPPORTED:
        raise ResShiftError(f"pixel type {dtype.name} is not supported; convert to one of {', '.join(SUPPORTED)}")
    return dtype


def dtype_range(dtype) -> tuple[float, float]:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def _sample(x, channel_axis: int | None, limit: int = 4_000_000) -> np.ndarray:
    """An evenly strided subset of every channel, enough for robust percentiles of a huge (dask/zarr) array."""
    strided = [a for a in range(x.ndim) if a != channel_axis]
    step = max(1, int(np.ceil((x.size / limit) ** (1 / max(1, len(strided))))))
    return np.asarray(x[tuple(slice(None, None, step) if a in strided else slice(None) for a in range(x.ndim))])


def is_rgba(x, channel_axis: int, *, grid: int = 4, patch: int = 64) -> bool:
    """Whether a channel axis holds RGB(A) samples: 3 channels, or 4 whose 4th is transparency.

    A 4th channel is transparency when at least 90% of it is fully clear or fully opaque; otherwise it is a band of
    its own, such as the near infrared of RGBN aerial imagery, whatever the file's tags say. It is judged on
    ``grid`` x ``grid`` patches of the middle plane, so that a huge mosaic decodes a few chunks only.
    """
    if x.shape[channel_axis] not in (3, 4):
        return False
    if x.shape[channel_axis] == 3:
        return True
    rows, cols = [a for a in range(x.ndim) if a != channel_axis][-2:]
    index = [n // 2 for n in x.shape]
    index[channel_axis] = 3
    patches = []
    for i, j in np.ndindex(grid, grid):
        top, left = (x.shape[a] * (2 * k + 1) // (2 * grid) for a, k in ((rows, i), (cols, j)))
        index[rows], index[cols] = slice(top, top + patch), slice(left, left + patch)
        patches.append(np.asarray(x[tuple(index)]).ravel())
    return float(np.isin(np.concatenate(patches), (0, dtype_range(x.dtype)[1])).mean()) >= 0.9


def fit(
    x,
    *,
    mode: str = "auto",
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> Normalization:
    """Choose the normalisation for array ``x`` (numpy, dask or zarr), one (low, high) per channel."""
    dtype = check_dtype(x.dtype)
    if mode == "auto":
        mode = "range" if dtype.itemsize == 1 else "percentile"
    channels = 1 if channel_axis is None else x.shape[channel_axis]
    if mode == "range":
        low, high = dtype_range(dtype)
        return Normalization(mode, (low,) * channels, (high,) * channels)
    if mode not in MODES:
        raise ResShiftError(f"unknown normalisation {mode!r}; use one of {', '.join(NORM_MODES)}")
    data = _sample(x, channel_axis).astype(np.float64)
    data = np.moveaxis(data, channel_axis, 0).reshape(channels, -1) if channel_axis is not None else data.reshape(1, -1)
    lows, highs = [], []
    for row in data:
        row = row[np.isfinite(row)]
        if row.size == 0:
            lo, hi = 0.0, 1.0
        elif mode == "minmax":
            lo, hi = float(row.min()), float(row.max())
        else:
            lo, hi = (float(v) for v in np.percentile(row, percentiles))
        if hi <= lo:  # a constant channel: keep its value in the middle of the range
            lo, hi = lo - 0.5, lo + 0.5
        lows.append(lo)
        highs.append(hi)
    return Normalization(mode, tuple(lows), tuple(highs))
