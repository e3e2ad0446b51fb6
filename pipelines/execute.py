"""Running the blocks of an upscaling job: dask's threaded scheduler, a LocalCluster, or an existing cluster.

Tasks carry a small ``Job`` (paths and the model spec, never weights); each process loads the model once. Finished
chunks are recorded as empty files under the output's ``.resshift-done`` folder, written after the chunk itself.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import zarr

from napari_resshift.errors import reported
from napari_resshift.normalization import Normalization
from napari_resshift.outofcore import (Block, Layout, block_keys, cached_upscaler, set_threads, upscale_block,
                                      upscale_into)

from . import storage
from .readers import InputSpec

DONE_DIR = ".resshift-done"
CONNECT_TIMEOUT = 5  # seconds: a cluster that does not answer by then is refused before the output is created
PREFETCH = 1  # blocks read ahead and written behind: one is enough to hide the disk behind a block's compute


@dataclass(frozen=True)
class Job:
    input: InputSpec
    output: object  # the output group (a path, or a storage.RemotePath each worker opens itself); level 0 is "0"
    layout: Layout
    norm: Normalization
    seed: int
    dtype: str
    model: str
    device: str
    precision: str
    threads: int  # torch threads per task: fixed, so that the bits do not depend on how many tasks run at once
    steps: int | None = None  # sampling steps; None: the model's own


def finished_keys(output) -> set[str]:
    done = storage.path(output) / DONE_DIR
    return {p.name for p in done.iterdir()} if done.is_dir() else set()


def _open(job: Job, on_chunk):
    """This process's model, the output's level 0 and a recorder that marks a written chunk done."""
    set_threads(job.threads)
    upscaler = cached_upscaler(worker_model(job.model), device=worker_device(job.device), precision=job.precision,
                               steps=job.steps)
    output = storage.path(job.output)
    target = zarr.open_array(storage.zarr_store(output, read_only=False), path="0", mode="r+")
    done_dir = output / DONE_DIR

    def record(key: str) -> None:
        (done_dir / key).touch()
        if on_chunk is not None:
            on_chunk(key)

    return upscaler, target, record


def run_block(job: Job, block: Block, done: frozenset, on_chunk=None) -> int:
    """One task: upscale the unfinished chunks of ``block`` and record each as done once written."""
    upscaler, target, record = _open(job, on_chunk)
    return upscale_block(
        upscaler, job.input.open_array(), target, job.layout, block,
        norm=job.norm, seed=job.seed, dtype=job.dtype, done=done, on_chunk=record,
    )


def run_pipelined(job: Job, blocks: list[Block], done: set[str], *, on_chunk=None) -> int:
    """All ``blocks`` in order in this thread, the next one read and normalised while one computes and the last
    one's chunks written meanwhile: a GPU does not wait for the disk."""
    upscaler, target, record = _open(job, on_chunk)
    return upscale_into(upscaler, job.input.open_array(), target, job.layout, norm=job.norm, seed=job.seed,
                        dtype=job.dtype, done=done, on_chunk=record, blocks=blocks, prefetch=PREFETCH)


def worker_device(device: str) -> str:
    """``device`` for this process: on a machine with several GPUs, dask worker k takes GPU k mod n, so each worker
    loads the model once, on its own GPU."""
    import torch

    if device not in ("auto", "cuda") or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        return device
    return f"cuda:{int(name) % torch.cuda.device_count()}" if name.isdigit() else device


def _pending(job: Job, blocks: list[Block], done: set[str]) -> list[tuple[Block, frozenset]]:
    return [(b, frozenset(k for k in block_keys(b) if k in done)) for b in blocks if not set(block_keys(b)) <= done]


def run_local(job: Job, blocks: list[Block], done: set[str], *, threads: int, bar) -> None:
    """In this process: one thread computing while others read ahead and write behind, or dask's threaded
    scheduler, ``threads`` tasks at once."""
    import dask

    tick = lambda _key: bar.update(1)  # noqa: E731 - threads share this process, so the bar sees every chunk
    if threads == 1:
        run_pipelined(job, blocks, done, on_chunk=tick)
        return
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


def worker_model(model: str) -> str:
    """``model`` as this process finds it: a model file of the client's disk that this dask worker lacks is the copy
    ``run_distributed`` sent it (workers need share no disk)."""
    if os.path.exists(model) or not os.path.basename(model):
        return model
    try:
        from distributed import get_worker

        sent = os.path.join(get_worker().local_directory, os.path.basename(model))
    except (ImportError, ValueError):
        return model
    return sent if os.path.exists(sent) else model


def run_distributed(job: Job, blocks: list[Block], done: set[str], *, client, bar) -> None:
    """Every unfinished block as a task of ``client``'s cluster. A model file of this machine is sent to each worker
    once (a shipped model name loads from the installed package); tasks carry its path, never its weights."""
    from distributed import as_completed

    if os.path.isfile(job.model):
        client.upload_file(job.model, load=False)
    bar.write(f"dask dashboard: {client.dashboard_link}")
    futures = [client.submit(run_block, job, b, d, pure=False) for b, d in _pending(job, blocks, done)]
    for future in as_completed(futures):
        bar.update(future.result())


def build_pyramid(output, levels: int) -> None:
    """Levels 1.. from level 0 by 2x2 means (rounded for integers), chunk-aligned so that writes never collide."""
    import dask.array as da

    group = zarr.open_group(storage.zarr_store(storage.path(output), read_only=False), mode="r+")
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
