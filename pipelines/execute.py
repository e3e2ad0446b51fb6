"""Running the blocks of an upscaling job: dask's threaded scheduler, a LocalCluster, or an existing cluster.

Tasks carry a small ``Job`` (paths and the model spec, never weights); each process loads the model once. Finished
chunks are recorded as empty files under the output's ``.resshift-done`` folder, written after the chunk itself.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from napari_resshift.errors import reported
from napari_resshift.normalization import Normalization
from napari_resshift.outofcore import Block, Layout, block_keys, cached_upscaler, set_threads, upscale_block

from .readers import InputSpec

DONE_DIR = ".resshift-done"
CONNECT_TIMEOUT = 5  # seconds: a cluster that does not answer by then is refused before the output is created


@dataclass(frozen=True)
class Job:
    input: InputSpec
    output: str  # the output group; level 0 is its array "0"
    layout: Layout
    norm: Normalization
    seed: int
    dtype: str
    model: str
    device: str
    precision: str
    threads: int  # torch threads per task: fixed, so that the bits do not depend on how many tasks run at once


def finished_keys(output) -> set[str]:
    done = Path(output) / DONE_DIR
    return {p.name for p in done.iterdir()} if done.is_dir() else set()


def run_block(job: Job, block: Block, done: frozenset, on_chunk=None) -> int:
    """One task: upscale the unfinished chunks of ``block`` and record each as done once written."""
    set_threads(job.threads)
    upscaler = cached_upscaler(job.model, device=job.device, precision=job.precision)
    target = zarr.open_array(f"{job.output}/0", mode="r+")
    done_dir = Path(job.output) / DONE_DIR

    def record(key: str) -> None:
        (done_dir / key).touch()
        if on_chunk is not None:
            on_chunk(key)

    return upscale_block(
        upscaler, job.input.open_array(), target, job.layout, block,
        norm=job.norm, seed=job.seed, dtype=job.dtype, done=done, on_chunk=record,
    )


def _pending(job: Job, blocks: list[Block], done: set[str]) -> list[tuple[Block, frozenset]]:
    return [(b, frozenset(k for k in block_keys(b) if k in done)) for b in blocks if not set(block_keys(b)) <= done]


def run_local(job: Job, blocks: list[Block], done: set[str], *, threads: int, bar) -> None:
    """dask's threaded scheduler in this process, ``threads`` tasks at once."""
    import dask

    tick = lambda _key: bar.update(1)  # noqa: E731 - threads share this process, so the bar sees every chunk
    tasks = [dask.delayed(run_block, pure=False)(job, b, d, tick) for b, d in _pending(job, blocks, done)]
    dask.compute(*tasks, scheduler="threads", num_workers=threads)


@contextlib.contextmanager
def connect(*, scheduler: str | None, workers: int | None):
    """A dask.distributed client for an existing cluster at ``scheduler`` or a LocalCluster of ``workers``
    processes (one thread each), else None (the local threaded scheduler); a cluster that cannot be reached is one
    ``ResShiftError`` line after ``CONNECT_TIMEOUT`` seconds."""
    if not (scheduler or workers):
        yield None
        return
    from distributed import Client, LocalCluster

    cluster = None
    with reported(f"--scheduler {scheduler}: cannot connect" if scheduler else "cannot start a dask LocalCluster",
                  hint="; is the scheduler running and reachable from here?" if scheduler else ""):
        if scheduler:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
            client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_distributed(job: Job, blocks: list[Block], done: set[str], *, client, bar) -> None:
    """Every unfinished block as a task of ``client``'s cluster."""
    from distributed import as_completed

    bar.write(f"dask dashboard: {client.dashboard_link}")
    futures = [client.submit(run_block, job, b, d, pure=False) for b, d in _pending(job, blocks, done)]
    for future in as_completed(futures):
        bar.update(future.result())


def build_pyramid(output, levels: int) -> None:
    """Levels 1.. from level 0 by 2x2 means (rounded for integers), chunk-aligned so that writes never collide."""
    import dask.array as da

    group = zarr.open_group(str(output), mode="r+")
    for k in range(1, levels):
        source, target = group[str(k - 1)], group[str(k)]
        axes = source.metadata.dimension_names if source.metadata.zarr_format == 3 else None
        lazy = da.from_zarr(source)
        spatial = {lazy.ndim - 2: 2, lazy.ndim - 1: 2}
        if axes:
            spatial = {i: 2 for i, a in enumerate(axes) if a in "yx"}
        crop = tuple(slice(0, n - n % 2) if i in spatial else slice(None) for i, n in enumerate(lazy.shape))
        lazy = lazy[crop].rechunk({i: max(2, (c // 2) * 2) for i, c in enumerate(lazy.chunksize) if i in spatial})
        mean = da.coarsen(np.mean, lazy.astype(np.float64), spatial)
        kind = np.dtype(target.dtype)
        if kind.kind in "iu":
            info = np.iinfo(kind)
            mean = da.clip(da.round(mean), info.min, info.max)
        da.store(mean.astype(kind).rechunk(target.chunks), target, lock=False)
