"""The one tiler: tile layout, blend weights and the tiled upscaling of a plane.

With position-keyed noise (``noise.py``) a tile's result depends only on (seed, plane, its LR footprint), so any
region of the output can be computed alone (dask chunks, napari, resume) and equals the same region of a
whole-image run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from .tileplan import batch_for


@dataclass(frozen=True)
class Tile:
    """A tile's footprint in LR pixels."""

    y0: int
    x0: int
    h: int
    w: int

    def hr_box(self, scale: int) -> tuple[int, int, int, int]:
        return self.y0 * scale, self.x0 * scale, (self.y0 + self.h) * scale, (self.x0 + self.w) * scale


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Starts along one axis: every ``stride``, the last one moved back so that the tile ends at ``length``."""
    if length <= tile:
        return [0]
    starts = []
    for s in range(0, length, stride):
        s = min(s, length - tile)
        if s not in starts:
            starts.append(s)
    return starts


def plan_tiles(height: int, width: int, *, tile: int, overlap: int) -> list[Tile]:
    """Row-major tiles of at most ``tile`` LR pixels, neighbours overlapping by at least ``overlap``."""
    if tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    stride = tile - overlap
    return [
        Tile(y, x, min(tile, height), min(tile, width))
        for y in tile_starts(height, tile, stride)
        for x in tile_starts(width, tile, stride)
    ]


def _ramp(n: int, ramp: int, low_edge: bool, high_edge: bool) -> np.ndarray:
    """1-D weight: rises over ``ramp`` pixels from each side that has a neighbour, 1 elsewhere."""
    w = np.ones(n, dtype=np.float64)
    if ramp > 0:
        r = (np.arange(ramp) + 0.5) / ramp  # strictly positive, so every pixel keeps some weight
        r = r * r * (3 - 2 * r)  # smoothstep: no kink where the ramp meets the plateau
        if not low_edge:
            w[:ramp] = np.minimum(w[:ramp], r)
        if not high_edge:
            w[n - ramp:] = np.minimum(w[n - ramp:], r[::-1])
    return w


def blend_weight(tile: Tile, height: int, width: int, *, scale: int, overlap: int, feather: bool = True) -> np.ndarray:
    """HR weight of a tile: smooth ramps across the overlap with its neighbours (uniform if ``feather`` is off)."""
    ramp = overlap * scale if feather else 0
    ramp_h = min(ramp, tile.h * scale // 2)
    ramp_w = min(ramp, tile.w * scale // 2)
    wy = _ramp(tile.h * scale, ramp_h, tile.y0 == 0, tile.y0 + tile.h >= height)
    wx = _ramp(tile.w * scale, ramp_w, tile.x0 == 0, tile.x0 + tile.w >= width)
    return np.outer(wy, wx).astype(np.float32)


TileRunner = Callable[[torch.Tensor, list[Tile]], torch.Tensor]


def tile_groups(tiles: list[Tile], *, batch: int) -> list[list[int]]:
    """Consecutive tiles of one tile row and one shape, at most ``batch`` each: a fixed function of the layout,
    so a tile is always computed in the same batch and its result never depends on which region asked for it."""
    groups: list[list[int]] = []
    for i, t in enumerate(tiles):
        first = tiles[groups[-1][0]] if groups else None
        if first is None or len(groups[-1]) == batch or (first.y0, first.h, first.w) != (t.y0, t.h, t.w):
            groups.append([])
        groups[-1].append(i)
    return groups


@dataclass(frozen=True)
class TilePlan:
    """A plane's tiles and the batches they are computed in, built once (per plane or per out-of-core block) and
    passed to whatever needs them: reading a block's window, caching its batches, blending its chunks."""

    height: int
    width: int
    tile: int
    overlap: int
    batch: int
    tiles: list[Tile] = field(compare=False)
    groups: list[list[int]] = field(compare=False)  # tile indices of each batch, from :func:`tile_groups`
    group_of: list[int] = field(compare=False)  # each tile's batch, as an index into ``groups``


def plan_plane(height: int, width: int, *, tile: int, overlap: int, batch: int) -> TilePlan:
    """The tiles of a ``height`` x ``width`` LR plane and their batches of at most ``batch``."""
    tiles = plan_tiles(height, width, tile=tile, overlap=overlap)
    groups = tile_groups(tiles, batch=batch)
    group_of = [0] * len(tiles)
    for g, members in enumerate(groups):
        for i in members:
            group_of[i] = g
    return TilePlan(height, width, tile, overlap, batch, tiles, groups, group_of)


def tiles_for_region(tiles: Iterable[Tile], box: tuple[int, int, int, int], scale: int) -> list[int]:
    """Indices of tiles whose HR footprint intersects ``box`` = (y0, x0, y1, x1) in HR pixels."""
    y0, x0, y1, x1 = box
    out = []
    for i, t in enumerate(tiles):
        ty0, tx0, ty1, tx1 = t.hr_box(scale)
        if ty0 < y1 and ty1 > y0 and tx0 < x1 and tx1 > x0:
            out.append(i)
    return out


def blend_tiles(
    run: TileRunner,
    lr: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    box: tuple[int, int, int, int] | None = None,
    feather: bool = True,
    batch: int | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    plan: TilePlan | None = None,
) -> torch.Tensor:
    """Upscale ``lr`` [C, H, W] tile by tile and blend into HR ``box``; ``run(lr_tiles [B, C, h, w], tiles)`` gives
    the HR tiles of one batch of :func:`tile_groups` (``batch`` tiles, by default :func:`batch_for` the tile size).
    ``plan``: the plane's :func:`plan_plane` when the caller has it (it must be of this plane, tile, overlap and
    batch); else it is made here.

    Tiles are visited in the same global order and batched in the same groups, so a region's pixels are
    bit-identical to the same pixels of the whole-image result. ``on_tile(done, total)`` reports progress and may
    raise to cancel.
    """
    c, height, width = lr.shape
    if box is None:
        box = (0, 0, height * scale, width * scale)
    by0, bx0, by1, bx1 = box
    batch = batch_for(tile) if batch is None else batch
    if plan is None:
        plan = plan_plane(height, width, tile=tile, overlap=overlap, batch=batch)
    elif (plan.height, plan.width, plan.tile, plan.overlap, plan.batch) != (height, width, tile, overlap, batch):
        raise ValueError(f"the tile plan {plan} is not this plane's ({height} x {width}, tile {tile}, overlap "
                         f"{overlap}, batch {batch})")
    tiles = plan.tiles
    todo = tiles_for_region(tiles, box, scale)
    ready: dict[int, torch.Tensor] = {}
    acc = None
    weight_sum = torch.zeros(by1 - by0, bx1 - bx0, dtype=torch.float32)
    for done, i in enumerate(todo):
        if i not in ready:
            group = plan.groups[plan.group_of[i]]
            patches = torch.stack([lr[:, t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] for t in (tiles[j] for j in group)])
            ready.update(zip(group, run(patches, [tiles[j] for j in group]).float().cpu()))
        t, out = tiles[i], ready.pop(i)
        if acc is None:
            acc = torch.zeros(out.shape[0], by1 - by0, bx1 - bx0, dtype=torch.float32)
        weight = torch.from_numpy(blend_weight(t, height, width, scale=scale, overlap=overlap, feather=feather))
        ty0, tx0, ty1, tx1 = t.hr_box(scale)
        sy0, sx0, sy1, sx1 = max(ty0, by0), max(tx0, bx0), min(ty1, by1), min(tx1, bx1)
        w = weight[sy0 - ty0:sy1 - ty0, sx0 - tx0:sx1 - tx0]
        acc[:, sy0 - by0:sy1 - by0, sx0 - bx0:sx1 - bx0] += out[:, sy0 - ty0:sy1 - ty0, sx0 - tx0:sx1 - tx0] * w
        weight_sum[sy0 - by0:sy1 - by0, sx0 - bx0:sx1 - bx0] += w
        if on_tile is not None:
            on_tile(done + 1, len(todo))
    return acc / weight_sum
