"""The widget's path for layers whose result fits in memory: every plane (or a preview's box) and every sample
through the engine into numpy, with the samples' running mean and standard deviation.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from .. import normalization
from ..engine import Upscaler
from ..tiling import plan_tiles, tiles_for_region
from ._consistency import consistency_map
from ._job import Job, Output, job_record


def resolve_tiling(upscaler: Upscaler, *, tile: int | None, overlap: int | None) -> tuple[int, int]:
    return upscaler.tiling(tile=tile, overlap=overlap)


def plane_norms(job: Job) -> normalization.Normalization:
    """One normalisation for the whole layer, so every plane of a stack keeps the same intensity scale."""
    axis = job.data.ndim - 1 if job.rgb else job.channel_axis
    return normalization.fit(job.data, mode=job.norm, channel_axis=axis, percentiles=job.percentiles)


def norm_for_plane(norm: normalization.Normalization, job: Job, plane: tuple[int, ...]):
    if job.rgb or job.channel_axis is None:
        return norm
    c = plane[job.channel_axis]
    return normalization.Normalization(norm.mode, (norm.low[c],), (norm.high[c],))


class Welford:
    """Running mean and variance of same-shaped arrays, one sample at a time (no N copies in memory)."""

    def __init__(self):
        self.n = 0
        self.mean = None
        self.m2 = None

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float32)
        self.n += 1
        if self.mean is None:
            self.mean, self.m2 = x, np.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(1, self.n - 1))


Progress = Callable[[int, int], None]


def run_job(
    upscaler: Upscaler, job: Job, *, tile: int, overlap: int, on_tile: Progress | None = None, on_plane=None
) -> Output:
    """Upscale every plane of ``job`` (``samples`` times each) in memory, or its ``box`` only; ``on_tile(done,
    total)`` may raise to stop, ``on_plane(number, planes)`` is told which plane starts."""
    started = time.perf_counter()
    s = upscaler.scale
    h, w = job.region_shape
    norm = plane_norms(job)
    hr_box = None if job.box is None else tuple(v * s for v in job.box)
    per_plane = tiles_per_plane(job, tile=tile, overlap=overlap, scale=s)
    total = per_plane * len(job.planes) * job.samples
    colour = job.data.shape[-1:] if job.rgb else ()
    out_dtype = job.data.dtype if job.samples == 1 else np.dtype(np.float32)
    image = np.empty((len(job.planes), h * s, w * s) + colour, out_dtype)
    std = np.empty((len(job.planes), h * s, w * s) + colour, np.float32) if job.samples > 1 else None
    consistency = np.empty((len(job.planes), h, w), np.float32) if job.consistency else None
    done = 0
    info = {}
    for p, plane in enumerate(job.planes):
        if on_plane is not None:
            on_plane(p + 1, len(job.planes))
        lr = np.array(job.data[plane], copy=True)
        stats = Welford()
        for k in range(job.samples):
            def report(d, n, base=done):
                if on_tile is not None:
                    on_tile(base + d, total)

            result = upscaler.upscale(
                lr,
                channel_axis=2 if job.rgb else None,
                rgb=job.rgb,
                seed=job.seed + k,
                tile=tile,
                overlap=overlap,
                norm=norm_for_plane(norm, job, plane),
                plane_offset=flat_index(plane, job.data.shape[: job.stack_ndim]),
                box=hr_box,
                on_tile=report,
            )
            done += per_plane
            info = result.info
            if job.samples == 1:
                image[p] = result.image
            else:
                stats.add(result.image)
        if job.samples > 1:
            image[p], std[p] = stats.mean, stats.std()
        if consistency is not None:
            region = lr if job.box is None else lr[job.box[0]:job.box[2], job.box[1]:job.box[3]]
            consistency[p] = consistency_map(image[p], region, scale=s, rgb=job.rgb)
    info = info | {"normalization": norm.to_dict(), "seed": job.seed} | job_record(job, started)

    lead = job.data.shape[: job.stack_ndim] if job.whole_stack else (1,) * job.stack_ndim

    def shaped(a):
        return None if a is None else a.reshape(lead + a.shape[1:])

    return Output(shaped(image), shaped(std), shaped(consistency), info)


def tiles_per_plane(job: Job, *, tile: int, overlap: int, scale: int) -> int:
    """Tiles one sample of one plane computes: all of the plane's, or those reaching a preview's box."""
    h, w = job.plane_shape
    tiles = plan_tiles(h, w, tile=tile, overlap=overlap)
    if job.box is None:
        return len(tiles)
    return len(tiles_for_region(tiles, tuple(v * scale for v in job.box), scale))


def flat_index(plane: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """The plane's number in C order: it keys the noise, so a plane gets the same noise whatever the scope."""
    return int(np.ravel_multi_index(plane, shape)) if shape else 0


def estimate_bytes(job: Job, *, scale: int) -> int:
    """Memory the in-memory path needs for its outputs (the input is read a plane at a time)."""
    per_plane = math.prod(job.region_shape) * scale * scale * (job.data.shape[-1] if job.rgb else 1)
    item = job.data.dtype.itemsize if job.samples == 1 else 4 * 2
    return per_plane * item * len(job.planes)
