"""What the widget is asked to upscale and what it gives back: the layer checks, the planes picked, the ``Job``
snapshot of a request and the ``Output`` of a run with the record the widget adds to the engine's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .. import normalization
from ..errors import ResShiftError

MIN_SIDE = 2  # LR pixels: a single row or column carries no neighbourhood for the model to work from
CHANNEL_LABELS = ("c", "ch", "channel", "channels")


@dataclass
class Job:
    """A snapshot of one request, taken in the GUI thread so the worker never touches a live layer."""

    name: str
    data: object  # numpy, dask or zarr array, read plane by plane
    rgb: bool
    channel_axis: int | None  # a stack axis that holds channels (normalised per channel), if any
    planes: list[tuple[int, ...]]  # indices over the stack axes to upscale
    whole_stack: bool
    layer_state: dict
    seed: int = 0
    samples: int = 1
    tile: int | None = None
    overlap: int | None = None
    steps: int | None = None
    consistency: bool = False
    norm: str = "auto"
    percentiles: tuple[float, float] = normalization.DEFAULT_PERCENTILES
    box: tuple[int, int, int, int] | None = None  # (y0, x0, y1, x1) in LR pixels: a preview of this region only

    @property
    def stack_ndim(self) -> int:
        return self.data.ndim - 2 - int(self.rgb)

    @property
    def plane_shape(self) -> tuple[int, int]:
        lead = self.stack_ndim
        return tuple(self.data.shape[lead:lead + 2])

    @property
    def region_shape(self) -> tuple[int, int]:
        """The LR size of what is upscaled: the box of a preview, else the whole plane."""
        if self.box is None:
            return self.plane_shape
        y0, x0, y1, x1 = self.box
        return y1 - y0, x1 - x0


@dataclass
class Output:
    """The arrays a run made, in output-layer layout, and the record that goes into layer metadata."""

    image: np.ndarray
    std: np.ndarray | None
    consistency: np.ndarray | None
    info: dict


def check_layer(layer) -> None:
    """Raise a one-line ``ResShiftError`` for anything the widget cannot upscale."""
    from napari.layers import Image

    if layer is None:
        raise ResShiftError("there is no image layer to upscale; open an image first (File > Open)")
    if not isinstance(layer, Image):
        kind = type(layer).__name__.lower()
        raise ResShiftError(f"layer {layer.name!r} is a {kind} layer; ResShift upscales image layers only")
    data = layer.data[0] if layer.multiscale else layer.data
    spatial = data.shape[-3:-1] if layer.rgb else data.shape[-2:]
    if len(spatial) < 2 or min(spatial) < MIN_SIDE:
        size = "×".join(str(n) for n in spatial)
        raise ResShiftError(
            f"layer {layer.name!r} is only {size} pixels; ResShift needs at least {MIN_SIDE}×{MIN_SIDE}"
        )
    normalization.check_dtype(data.dtype)


def channel_axis_of(layer) -> int | None:
    """A stack axis labelled as channels (e.g. ``axis_labels=('c', 'y', 'x')``) is normalised per channel."""
    labels = [str(a).lower() for a in getattr(layer, "axis_labels", ())]
    stack = layer.ndim - 2
    for i, label in enumerate(labels[:stack]):
        if label in CHANNEL_LABELS:
            return i
    return None


def layer_state(layer) -> dict:
    """The layer properties an output carries over: placement and display."""
    state = {
        "scale": np.asarray(layer.scale, float),
        "translate": np.asarray(layer.translate, float),
        "rotate": np.asarray(layer.rotate, float),
        "shear": np.asarray(layer.shear, float),
        "affine": np.asarray(layer.affine.affine_matrix, float),
        "blending": layer.blending,
        "opacity": layer.opacity,
        "contrast_limits": list(layer.contrast_limits),
        "gamma": layer.gamma,
        "axis_labels": tuple(layer.axis_labels),
        "units": tuple(layer.units),
        "rgb": layer.rgb,
    }
    if not layer.rgb:
        state["colormap"] = layer.colormap
    return state


def make_job(layer, *, current_step=None, whole_stack: bool = True, **options) -> Job:
    """Snapshot ``layer`` (already checked) and the planes to do: all of them, or the one shown at ``current_step``."""
    data = layer.data[0] if layer.multiscale else layer.data
    stack_shape = data.shape[: layer.ndim - 2]
    if whole_stack or not stack_shape:
        planes = list(np.ndindex(*stack_shape))
    else:
        step = tuple(current_step or ())[-layer.ndim:]
        planes = [tuple(int(min(max(i, 0), n - 1)) for i, n in zip(step, stack_shape))]
    return Job(
        name=layer.name,
        data=data,
        rgb=layer.rgb,
        channel_axis=channel_axis_of(layer),
        planes=planes,
        whole_stack=whole_stack or not stack_shape,
        layer_state=layer_state(layer),
        **options,
    )


def job_record(job: Job, started: float) -> dict:
    """What the widget adds to the engine's record of a run: the layer, planes, samples, region, time and date."""
    return {
        "samples": job.samples,
        "input": job.name,
        "planes": "whole stack" if job.whole_stack else f"plane {job.planes[0]}",
        **({} if job.box is None else {"preview_box_lr": list(job.box)}),
        "time_s": round(time.perf_counter() - started, 3),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
