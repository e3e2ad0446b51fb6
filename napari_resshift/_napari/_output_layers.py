"""Where the widget's outputs sit and how they look: placement on the input (``placement.hr_offset``), the input's
display carried over, and layer tuples as vispy can draw them.
"""
from __future__ import annotations

import numpy as np

from .. import placement
from ._job import Job, Output


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
