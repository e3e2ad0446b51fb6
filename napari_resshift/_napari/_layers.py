"""What the widget upscales and adds back: layer checks, plane selection, output geometry and style, the run itself.

Qt-free, so it is tested without a viewer; ``_widget`` snapshots a layer into a ``Job``, runs it in a worker.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from .. import normalization, placement
from ..engine import Upscaler
from ..errors import ResShiftError
from ..tiling import plan_tiles, tiles_for_region

MIN_SIDE = 2  # LR pixels: a single row or column carries no neighbourhood for the model to work from
CHANNEL_LABELS = ("c", "ch", "channel", "channels")
ROWS_PER_CHUNK = 256  # numpy work in the worker goes in slices so the GUI thread gets the GIL between them


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


def resolve_tiling(upscaler: Upscaler, *, tile: int | None, overlap: int | None) -> tuple[int, int]:
    return upscaler.tiling(tile=tile, overlap=overlap)


def geometry(state: dict, *, scale: int, stack_ndim: int, plane: tuple[int, ...] | None, box=None) -> dict:
    """Output placement: pixel centres of each HR block average to their LR pixel's centre in world coordinates.

    The output's translate is t + L·(S·``placement.hr_offset(s)``) on the spatial axes, with L the layer's
    rotate·shear (identity: t − S·(s−1)/(2s)).
    A single plane of a stack is placed at that plane's own position on the stack axes, a preview ``box`` (LR pixels)
    at its top-left LR pixel.
    """
    from napari.utils.transforms import CompositeAffine

    in_scale = state["scale"]
    ndim = len(in_scale)
    offset = np.zeros(ndim)
    offset[stack_ndim:] = placement.hr_offset(scale)
    if plane is not None:
        offset[:stack_ndim] = plane
    if box is not None:
        offset[stack_ndim:] += box[:2]
    linear = CompositeAffine(
        scale=in_scale, translate=np.zeros(ndim), rotate=state["rotate"], shear=state["shear"], ndim=ndim
    ).linear_matrix
    out_scale = in_scale.copy()
    out_scale[stack_ndim:] /= scale
    return {
        "scale": out_scale,
        "translate": state["translate"] + linear @ offset,
        "rotate": state["rotate"],
        "shear": state["shear"],
        "affine": state["affine"],
    }


def input_geometry(state: dict, *, stack_ndim: int, plane: tuple[int, ...] | None, box=None) -> dict:
    """Placement of an LR-sized result (the consistency map): the input's own, shifted to ``plane`` / ``box``."""
    return geometry(state, scale=1, stack_ndim=stack_ndim, plane=plane, box=box)


def plane_norms(job: Job) -> normalization.Normalization:
    """One normalisation for the whole layer, so every plane of a stack keeps the same intensity scale."""
    axis = job.data.ndim - 1 if job.rgb else job.channel_axis
    return normalization.fit(job.data, mode=job.norm, channel_axis=axis, percentiles=job.percentiles)


def norm_for_plane(norm: normalization.Normalization, job: Job, plane: tuple[int, ...]):
    if job.rgb or job.channel_axis is None:
        return norm
    c = plane[job.channel_axis]
    return normalization.Normalization(norm.mode, (norm.low[c],), (norm.high[c],))


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


def output_layers(job: Job, output: Output, *, scale: int) -> list[tuple]:
    """Layer-data tuples (data, kwargs, 'image') for the result and, if asked, its uncertainty and consistency."""
    state = job.layer_state
    plane = None if job.whole_stack else job.planes[0]
    hr_place = geometry(state, scale=scale, stack_ndim=job.stack_ndim, plane=plane, box=job.box)
    lr_place = input_geometry(state, stack_ndim=job.stack_ndim, plane=plane, box=job.box)
    base = f"{job.name} ×{scale} ResShift" + ("" if job.box is None else " preview")
    common = {"axis_labels": state["axis_labels"], "units": state["units"], "metadata": {"resshift": output.info}}
    look = {"blending": state["blending"], "opacity": state["opacity"], "rgb": state["rgb"]}
    if not state["rgb"]:
        look |= {"colormap": state["colormap"], "contrast_limits": state["contrast_limits"], "gamma": state["gamma"]}
    elif output.image.dtype == job.data.dtype:
        look["contrast_limits"] = state["contrast_limits"]
    name = base if output.std is None else f"{base} mean"
    layers = [(output.image, {"name": name, **hr_place, **common, **look}, "image")]
    extra = {"blending": "additive"}
    if output.std is not None:
        std = output.std[..., :3].mean(-1) if state["rgb"] else output.std
        layers.append((std, {"name": f"{base} std", "colormap": "inferno", **hr_place, **common, **extra}, "image"))
    if output.consistency is not None:
        layers.append(
            (
                output.consistency,
                {"name": f"{base} consistency", "colormap": "magma", **lr_place, **common, **extra},
                "image",
            )
        )
    return layers


def estimate_bytes(job: Job, *, scale: int) -> int:
    """Memory the in-memory path needs for its outputs (the input is read a plane at a time)."""
    per_plane = math.prod(job.region_shape) * scale * scale * (job.data.shape[-1] if job.rgb else 1)
    item = job.data.dtype.itemsize if job.samples == 1 else 4 * 2
    return per_plane * item * len(job.planes)


def displayable(layers: list[tuple]) -> list[tuple]:
    """Layer tuples as vispy can draw them: in-memory arrays C-contiguous in native byte order, contrast limits
    finite and increasing (else napari computes them), so no texture upload depends on an odd stride or range."""
    out = []
    for data, kwargs, kind in layers:
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
        limits = kwargs.get("contrast_limits")
        if limits is not None and not (np.all(np.isfinite(limits)) and limits[0] < limits[1]):
            kwargs = {k: v for k, v in kwargs.items() if k != "contrast_limits"}
        out.append((data, kwargs, kind))
    return out
