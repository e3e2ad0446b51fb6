"""Running one widget job on a device: sampling steps, in memory or out of core, and the out-of-memory fallback.

Qt-free and napari-free, so the GPU paths are checked on machines without a display; ``_widget`` calls it in a worker.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from . import _big_layers, _in_memory, _job
from ..engine import Upscaler
from ..errors import ResShiftError

MIN_RETRY_TILE = 32  # LR pixels: below this the halo dominates and a GPU gains nothing over the CPU


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(exc).lower()
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def fallback_plan(tile: int, overlap: int, device: str) -> list[tuple[int, str]]:
    """(tile, device) attempts after running out of GPU memory: smaller tiles on the device, then the CPU."""
    plan = [(tile, device)]
    smaller = tile // 2
    while device != "cpu" and smaller >= MIN_RETRY_TILE and smaller > overlap:
        plan.append((smaller, device))
        smaller //= 2
    if device != "cpu":
        plan.append((tile, "cpu"))
    return plan


@contextlib.contextmanager
def sampling_steps(upscaler: Upscaler, steps: int | None):
    """Run with another number of steps than the model was trained with, then restore its schedule."""
    model = upscaler.model
    saved = model.schedule
    if steps and steps != saved.steps:
        model.set_steps(steps)
    try:
        yield
    finally:
        model.schedule = saved


def run(
    load: Callable[[str], Upscaler],
    job: _job.Job,
    *,
    device: str,
    memory_limit: int,
    report: Callable[..., None],
) -> tuple[_job.Output, int]:
    """Load with ``load(device)`` and run ``job``; returns (output, scale).

    ``report("model", scale, card)``, ``report("plane", number, planes)``, ``report("tile", done, total)`` and
    ``report("note", sentence)`` tell the caller how it goes; raising from ``report`` stops the run. Out of GPU
    memory, it retries with smaller tiles, then on the CPU.
    """
    upscaler = load(device)
    report("model", upscaler.scale, upscaler.card)
    tile, overlap = _in_memory.resolve_tiling(upscaler, tile=job.tile, overlap=job.overlap)
    attempts = fallback_plan(tile, overlap, upscaler.device.type)
    for n, (tile, on) in enumerate(attempts):
        if on != upscaler.device.type:
            upscaler = load(on)
        try:
            with sampling_steps(upscaler, job.steps):
                return _run_once(upscaler, job, tile=tile, overlap=overlap, memory_limit=memory_limit, report=report)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if n + 1 == len(attempts):
                raise ResShiftError(
                    f"out of memory on the {on.upper()}; choose 'current plane', fewer samples or smaller tiles"
                ) from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            next_tile, next_on = attempts[n + 1]
            report("note", f"out of {on.upper()} memory: retrying with {next_tile}-pixel tiles on {next_on.upper()}")


def _run_once(upscaler: Upscaler, job, *, tile: int, overlap: int, memory_limit: int, report) -> tuple:
    def on_tile(done, total):
        report("tile", done, total)

    def on_plane(number, planes):
        report("plane", number, planes)

    if job.box is None and _in_memory.estimate_bytes(job, scale=upscaler.scale) > memory_limit:
        output = _big_layers.run_job(upscaler, job, tile=tile, overlap=overlap, on_chunk=on_tile)
    else:
        output = _in_memory.run_job(upscaler, job, tile=tile, overlap=overlap, on_tile=on_tile, on_plane=on_plane)
    return output, upscaler.scale
