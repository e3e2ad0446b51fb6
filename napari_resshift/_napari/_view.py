"""The preview's region: which LR pixels of a layer's plane the canvas shows at the current camera.

Qt-free (napari's viewer model only), so the geometry is tested without drawing.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ResShiftError


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def field_of_view(viewer) -> np.ndarray:
    """World corners [4, ndim] of the 2-D view: camera centre ± half the canvas size over the zoom."""
    displayed = list(viewer.dims.displayed)
    height, width = np.asarray(viewer.canvas.viewbox_size(viewer.layers), float)
    view = camera(viewer)
    half = np.array([height, width]) / (2 * view.zoom)
    centre = np.asarray(view.center[-2:], float)
    corners = np.tile(np.asarray(viewer.dims.point, float), (4, 1))
    for k, (dy, dx) in enumerate([(-1, -1), (-1, 1), (1, -1), (1, 1)]):
        corners[k, displayed] = centre + half * (dy, dx)
    return corners


def visible_box(viewer, layer) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1): the LR pixels of ``layer``'s plane that the view reaches (a pixel i spans i ± 0.5 in data
    coordinates); None when the view is 3-D or shows the whole plane, where a preview would be the whole run.
    A rotated layer gets the bounding box of the view's corners."""
    if viewer.dims.ndisplay != 2:
        return None
    world = field_of_view(viewer)[:, -layer.ndim:]
    data = np.array([layer.world_to_data(point) for point in world])[:, -2:]
    low, high = data.min(0), data.max(0)
    height, width = (layer.data[0] if layer.multiscale else layer.data).shape[layer.ndim - 2:layer.ndim]
    y0, x0 = (max(0, math.floor(v + 0.5)) for v in low)
    y1, x1 = min(height, math.ceil(high[0] + 0.5)), min(width, math.ceil(high[1] + 0.5))
    if y1 <= y0 or x1 <= x0:
        raise ResShiftError(f"the view shows no pixel of layer {layer.name!r}; pan to it or reset the view (Home)")
    if (y0, x0, y1, x1) == (0, 0, height, width):
        return None
    return y0, x0, y1, x1
