"""The widget's path for layers whose result does not fit in memory: ``outofcore`` into temporary zarr arrays.

Results stay lazy (dask over zarr): the mean, std and consistency layers are computed by napari as it displays them.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .. import outofcore
from ._job import Job, Output, job_record
from ..engine import Upscaler
from ..errors import ResShiftError

FALLBACK_MEMORY_LIMIT = 2 * 1024**3
_scratch: list[tempfile.TemporaryDirectory] = []  # live as long as the session: napari reads the results lazily


def default_memory_limit() -> int:
    """A quarter of the memory free now: the rest stays for napari, the input and the user's other work."""
    try:
        import psutil
    except ImportError:
        return FALLBACK_MEMORY_LIMIT
    return max(256 * 1024**2, psutil.virtual_memory().available // 4)


def axes_of(job: Job) -> str:
    """``outofcore`` axis letters for the layer: a channel-labelled axis is ``c``, other stack axes ``t`` / ``z``."""
    plain = [i for i in range(job.stack_ndim) if job.rgb or i != job.channel_axis]
    if len(plain) > 2:
        raise ResShiftError(
            f"layer {job.name!r} has {len(plain)} stack axes; layers too big for memory may have at most two "
            "(time and z) besides channels"
        )
    letters = dict(zip(plain, "tz"[-len(plain):] if plain else ""))
    stack = "".join(letters.get(i, "c") for i in range(job.stack_ndim))
    return stack + ("yxc" if job.rgb else "yx")


def run_job(upscaler: Upscaler, job: Job, *, tile: int, overlap: int, on_chunk=None) -> Output:
    """Upscale ``job`` chunk by chunk into temporary zarr arrays; ``on_chunk(done, total)`` may raise to stop."""
    import dask.array as da
    import zarr

    started = time.perf_counter()
    s = upscaler.scale
    axes = axes_of(job)
    data = outofcore._lazy(job.data)  # a zarr plane selection stays lazy until a window is read
    whole = outofcore.Layout(axes, data.shape, s, tile, overlap, rgb=job.rgb)
    norm = outofcore.fit_normalization(data, whole, mode=job.norm, percentiles=job.percentiles)
    if not job.whole_stack:
        data = data[tuple(slice(i, i + 1) for i in job.planes[0])]
    layout = outofcore.Layout(axes, data.shape, s, tile, overlap, rgb=job.rgb)
    total = len(layout.planes()) * layout.grid[0] * layout.grid[1] * job.samples
    dtype = np.dtype(job.data.dtype)
    scratch = tempfile.TemporaryDirectory(prefix="resshift-")
    done = 0

    def chunk_done(_key):
        nonlocal done
        done += 1
        if on_chunk is not None:
            on_chunk(done, total)

    try:
        results = []
        for k in range(job.samples):
            target = zarr.open_array(
                store=str(Path(scratch.name) / f"sample{k}.zarr"),
                mode="w",
                shape=layout.target_shape,
                chunks=layout.target_chunks,
                dtype=dtype,
            )
            outofcore.upscale_into(upscaler, data, target, layout, norm=norm, seed=job.seed + k, on_chunk=chunk_done)
            results.append(da.from_zarr(target))
    except BaseException:
        scratch.cleanup()
        raise
    _scratch.append(scratch)
    if job.samples == 1:
        image, std = results[0], None
    else:
        stack = da.stack([r.astype(np.float32) for r in results])
        image, std = stack.mean(0), stack.std(0, ddof=1)
    consistency = lazy_consistency(image, data, scale=s, rgb=job.rgb) if job.consistency else None
    info = (upscaler.record(seed=job.seed, tile=tile, overlap=overlap) | {"normalization": norm.to_dict()}
            | job_record(job, started) | {"storage": scratch.name})
    return Output(image, std, consistency, info)


def lazy_consistency(result, lr, *, scale: int, rgb: bool):
    """|block mean of the result − input|, evaluated by dask only where napari looks."""
    import dask.array as da

    spatial = (result.ndim - 3, result.ndim - 2) if rgb else (result.ndim - 2, result.ndim - 1)
    down = da.coarsen(np.mean, result.astype(np.float32), {spatial[0]: scale, spatial[1]: scale})
    diff = abs(down - da.asarray(lr).astype(np.float32))
    return diff[..., :3].mean(-1) if rgb else diff
