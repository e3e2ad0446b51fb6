"""Out-of-core upscaling: a lazy array (dask, zarr, numpy) upscaled plane by plane, chunk by chunk, into a writable one.

Output chunks follow the tile grid and each blends only the tiles that touch it, with absolute tile positions, so any
chunk can be computed alone (resume, workers, napari) and equals the same pixels of a whole-image run.
"""
from __future__ import annotations

import itertools
import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from . import normalization
from .engine import Upscaler
from .errors import ResShiftError
from .normalization import Normalization
from .tiling import Tile, TilePlan, blend_tiles, plan_plane, plan_tiles, tiles_for_region  # noqa: F401 - plan_tiles: tests

AXES = "tczyx"  # the axis names understood; only y and x are upscaled
BLOCK_CHUNKS = 8  # chunks per block side: a block computes each tile once, tiles on its border are shared with the next
MIN_CHUNK = 512  # HR pixels: a chunk of a few hundred kB, as zarr and dask like them
ALPHA_HALO = 2  # LR pixels that bicubic interpolation reads beyond a region on each side


@dataclass(frozen=True)
class Block:
    """A unit of work: a rectangle of output chunks of one plane (``index`` holds the plane axes' positions)."""

    plane: int
    index: tuple[tuple[str, int], ...]
    rows: range
    cols: range


@dataclass(frozen=True)
class Layout:
    """Axes of the source and the target, the tile grid and the output chunks that follow it.

    ``rgb``: the ``c`` axis holds RGB(A) samples that go through the model together; otherwise every channel
    (and every t, z) is a plane that goes through alone, replicated to RGB, the output being the mean of the three.
    ``batch``: tiles per forward pass (default: the upscaler's); part of the layout because it groups the tiles.
    """

    axes: str
    shape: tuple[int, ...]
    scale: int
    tile: int
    overlap: int
    rgb: bool = False
    out_axes: str | None = None
    min_chunk: int = MIN_CHUNK
    batch: int | None = None

    def __post_init__(self):
        if len(self.axes) != len(self.shape):
            raise ResShiftError(f"axes {self.axes!r} do not match the {len(self.shape)} dimensions of {self.shape}")
        unknown = sorted(set(self.axes) - set(AXES))
        if unknown or len(set(self.axes)) != len(self.axes) or not {"y", "x"} <= set(self.axes):
            raise ResShiftError(
                f"axes {self.axes!r} are not understood; name each axis once with letters of {AXES!r}, y and x included"
            )
        if self.out_axes is not None and sorted(self.out_axes) != sorted(self.axes):
            raise ResShiftError(f"output axes {self.out_axes!r} are not a reordering of {self.axes!r}")
        if 0 in self.shape:
            raise ResShiftError(f"the array is empty (shape {self.shape}); nothing to upscale")
        if self.rgb and self.size("c") not in (3, 4):
            raise ResShiftError(f"RGB needs 3 or 4 channels on the c axis, found {self.size('c')}")
        if self.tile <= self.overlap:
            raise ResShiftError(f"tile ({self.tile}) must be larger than overlap ({self.overlap})")

    def size(self, axis: str) -> int:
        return self.shape[self.axes.index(axis)] if axis in self.axes else 1

    @property
    def height(self) -> int:
        return self.size("y")

    @property
    def width(self) -> int:
        return self.size("x")

    @property
    def target_axes(self) -> str:
        return self.out_axes or self.axes

    @property
    def chunk(self) -> int:
        """Output chunk side in HR pixels: whole tile steps, so chunk edges sit on tile starts, and at least
        ``min_chunk``, so that small tiles do not make millions of tiny chunks and tasks."""
        step = (self.tile - self.overlap) * self.scale
        return step * math.ceil(self.min_chunk / step)

    @property
    def plane_axes(self) -> str:
        return "".join(a for a in self.axes if a not in "yx" and not (self.rgb and a == "c"))

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.size(a) * (self.scale if a in "yx" else 1) for a in self.target_axes)

    @property
    def target_chunks(self) -> tuple[int, ...]:
        def side(a):
            if a in "yx":
                return min(self.chunk, self.size(a) * self.scale)
            return self.size(a) if a == "c" and self.rgb else 1

        return tuple(side(a) for a in self.target_axes)

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.height * self.scale / self.chunk), math.ceil(self.width * self.scale / self.chunk)

    def planes(self) -> list[tuple[tuple[str, int], ...]]:
        """Positions on the plane axes, in the source's row-major order: the list index is the noise's plane."""
        ranges = [range(self.size(a)) for a in self.plane_axes]
        return [tuple(zip(self.plane_axes, pos)) for pos in itertools.product(*ranges)]

    def chunk_box(self, cy: int, cx: int) -> tuple[int, int, int, int]:
        c = self.chunk
        return cy * c, cx * c, min((cy + 1) * c, self.height * self.scale), min((cx + 1) * c, self.width * self.scale)

    def blocks(self, *, side: int = BLOCK_CHUNKS) -> list[Block]:
        ny, nx = self.grid
        row_groups = [range(r[0], r[-1] + 1) for r in np.array_split(np.arange(ny), math.ceil(ny / side))]
        col_groups = [range(c[0], c[-1] + 1) for c in np.array_split(np.arange(nx), math.ceil(nx / side))]
        return [
            Block(p, index, rows, cols)
            for p, index in enumerate(self.planes())
            for rows in row_groups
            for cols in col_groups
        ]


def chunk_key(plane: int, cy: int, cx: int) -> str:
    """Name of one output chunk in the set of finished chunks a caller persists for resuming."""
    return f"{plane}.{cy}.{cx}"


def block_keys(block: Block) -> list[str]:
    return [chunk_key(block.plane, cy, cx) for cy in block.rows for cx in block.cols]


class _WindowView:
    """A [C, H, W] plane of which only a window is loaded: ``blend_tiles`` slices it with absolute tile positions."""

    def __init__(self, window: torch.Tensor, origin: tuple[int, int], height: int, width: int):
        self.window = window
        self.origin = origin
        self.shape = (window.shape[0], height, width)

    def __getitem__(self, key):
        _, ys, xs = key
        y0, x0 = self.origin
        h, w = self.window.shape[1:]
        if ys.start < y0 or xs.start < x0 or ys.stop > y0 + h or xs.stop > x0 + w:
            raise IndexError(f"rows {ys} / columns {xs} lie outside the loaded window at {self.origin}")
        return self.window[:, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


def fit_normalization(
    source, layout: Layout, *, mode: str = "auto", percentiles: tuple[float, float] = normalization.DEFAULT_PERCENTILES
) -> Normalization:
    """One normalisation for the whole array, one (low, high) per channel of the ``c`` axis (one if none)."""
    channel_axis = layout.axes.index("c") if "c" in layout.axes else None
    return normalization.fit(_lazy(source), mode=mode, channel_axis=channel_axis, percentiles=percentiles)


def _lazy(source):
    """Slicing a zarr array reads it at once; dask keeps a channel slice lazy until the subsample is taken."""
    if isinstance(source, np.ndarray) or hasattr(source, "dask"):
        return source
    import dask.array as da

    return da.from_array(source, chunks=getattr(source, "chunks", "auto"))


def _plane_norm(norm: Normalization, layout: Layout, index: dict) -> Normalization:
    if layout.rgb:
        return norm
    i = index.get("c", 0)
    return Normalization(norm.mode, (norm.low[i],), (norm.high[i],))


def _read_window(source, layout: Layout, index: dict, box, norm: Normalization) -> torch.Tensor:
    """LR window (y0, x0, y1, x1) of one plane, normalised to [-1, 1] as [C, h, w] float32 (C = 1, 3 or 4)."""
    y0, x0, y1, x1 = box
    spans = {"y": slice(y0, y1), "x": slice(x0, x1)} | ({"c": slice(None)} if layout.rgb else {})
    sel = tuple(spans[a] if a in spans else index[a] for a in layout.axes)
    data = np.asarray(source[sel])
    kept = "".join(a for a in layout.axes if a in spans)
    data = np.moveaxis(data, [kept.index(a) for a in "cyx" if a in kept], range(len(kept)))
    if not layout.rgb:
        data = data[None]
    x = norm.forward(data, channel_axis=0)
    return torch.from_numpy(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0))


def _alpha(window: torch.Tensor, origin, box, scale: int) -> torch.Tensor:
    """Alpha is not image content: bicubic from a window with a halo, cropped, equals a whole-image interpolation."""
    by0, bx0, by1, bx1 = box
    oy, ox = origin
    ly0, lx0 = max(oy, by0 // scale - ALPHA_HALO), max(ox, bx0 // scale - ALPHA_HALO)
    ly1 = min(oy + window.shape[1], -(-by1 // scale) + ALPHA_HALO)
    lx1 = min(ox + window.shape[2], -(-bx1 // scale) + ALPHA_HALO)
    region = window[3:, ly0 - oy:ly1 - oy, lx0 - ox:lx1 - ox]
    up = torch.nn.functional.interpolate(region[None], scale_factor=scale, mode="bicubic")[0]
    return up[:, by0 - ly0 * scale:by1 - ly0 * scale, bx0 - lx0 * scale:bx1 - lx0 * scale].clamp(-1, 1)


def _write(target, layout: Layout, index: dict, box, data: np.ndarray) -> None:
    """``data`` [C, h, w] into the target's HR ``box`` of one plane, in the target's axis order."""
    y0, x0, y1, x1 = box
    spans = {"y": slice(y0, y1), "x": slice(x0, x1)}
    if layout.rgb:
        spans["c"] = slice(None)
    else:
        data = data[0]
    sel = tuple(spans[a] if a in spans else index[a] for a in layout.target_axes)
    kept = [a for a in "cyx" if a in spans]
    order = [a for a in layout.target_axes if a in spans]
    target[sel] = np.moveaxis(data, [kept.index(a) for a in order], range(len(order)))


@dataclass
class PreparedBlock:
    """A block's unfinished chunks, its tile plan and its LR window, read and normalised: all a compute needs."""

    block: Block
    todo: list[tuple[int, int]]
    plan: TilePlan  # made once here; the compute and every chunk's blend use it
    window: torch.Tensor  # [C, h, w] in [-1, 1]
    origin: tuple[int, int]
    norm: Normalization
    dtype: np.dtype


def prepare_block(
    source, layout: Layout, block: Block, *, norm: Normalization, batch: int, dtype=None, done: Iterable[str] = ()
) -> PreparedBlock | None:
    """Read and normalise the LR window that ``block``'s unfinished chunks need (None when all are done)."""
    done = set(done)
    todo = [(cy, cx) for cy in block.rows for cx in block.cols if chunk_key(block.plane, cy, cx) not in done]
    if not todo:
        return None
    dtype = np.dtype(dtype) if dtype is not None else normalization.check_dtype(np.dtype(source.dtype))
    plan = plan_plane(layout.height, layout.width, tile=layout.tile, overlap=layout.overlap, batch=batch)
    tiles = plan.tiles
    needed = {i for c in todo for i in tiles_for_region(tiles, layout.chunk_box(*c), layout.scale)}
    used = [tiles[i] for g in plan.groups if needed & set(g) for i in g]  # whole batches
    y0 = max(0, min(t.y0 for t in used) - ALPHA_HALO)
    x0 = max(0, min(t.x0 for t in used) - ALPHA_HALO)
    y1 = min(layout.height, max(t.y0 + t.h for t in used) + ALPHA_HALO)
    x1 = min(layout.width, max(t.x0 + t.w for t in used) + ALPHA_HALO)
    plane_norm = _plane_norm(norm, layout, dict(block.index))
    window = _read_window(source, layout, dict(block.index), (y0, x0, y1, x1), plane_norm)
    return PreparedBlock(block, todo, plan, window, (y0, x0), plane_norm, dtype)


def compute_block(
    upscaler: Upscaler,
    prepared: PreparedBlock,
    layout: Layout,
    *,
    seed: int = 0,
    write: Callable[[tuple[int, int], np.ndarray], None],
) -> int:
    """Upscale the prepared chunks, each tile once, handing each finished chunk to ``write(chunk, data)``."""
    scale, height, width = layout.scale, layout.height, layout.width
    block, window, origin, plan = prepared.block, prepared.window, prepared.origin, prepared.plan
    tiles, groups, group_of = plan.tiles, plan.groups, plan.group_of  # groups: the batches blend_tiles computes
    boxes = {c: layout.chunk_box(*c) for c in prepared.todo}
    needs = {c: {group_of[i] for i in tiles_for_region(tiles, box, scale)} for c, box in boxes.items()}
    uses = Counter(g for gs in needs.values() for g in gs)  # a batch stays cached while a chunk still needs it
    rgb = window[:3] if layout.rgb else window.expand(3, -1, -1)
    view = _WindowView(rgb, origin, height, width)
    cache: dict[Tile, torch.Tensor] = {}

    def run(patches: torch.Tensor, group: list[Tile]) -> torch.Tensor:
        if not all(t in cache for t in group):
            cache.update(zip(group, upscaler.upscale_tiles(patches, group, seed=seed, plane=block.plane)))
        return torch.stack([cache[t] for t in group])

    for c in prepared.todo:
        hr = blend_tiles(run, view, scale=scale, tile=layout.tile, overlap=layout.overlap, box=boxes[c],
                         batch=plan.batch, plan=plan)
        if not layout.rgb:
            hr = hr.mean(0, keepdim=True)
        elif window.shape[0] == 4:
            hr = torch.cat([hr, _alpha(window, origin, boxes[c], scale)], 0)
        write(c, prepared.norm.inverse(hr.numpy(), prepared.dtype, channel_axis=0))
        for g in needs[c]:
            uses[g] -= 1
            if uses[g] == 0:
                for i in groups[g]:
                    cache.pop(tiles[i], None)
    return len(prepared.todo)


def _writer(target, layout: Layout, block: Block, on_chunk: Callable[[str], None] | None):
    """``write(chunk, data)``: the chunk into the target, then ``on_chunk(key)`` (a chunk is recorded once written)."""
    index = dict(block.index)

    def write(c: tuple[int, int], data: np.ndarray) -> None:
        _write(target, layout, index, layout.chunk_box(*c), data)
        if on_chunk is not None:
            on_chunk(chunk_key(block.plane, *c))

    return write


def upscale_block(
    upscaler: Upscaler,
    source,
    target,
    layout: Layout,
    block: Block,
    *,
    norm: Normalization,
    seed: int = 0,
    dtype=None,
    done: Iterable[str] = (),
    on_chunk: Callable[[str], None] | None = None,
) -> int:
    """Compute and write the unfinished chunks of ``block``; each tile is computed once per block.

    ``on_chunk(key)`` is called after each chunk is written (persist the key to resume; raise to cancel).
    Returns the number of chunks written.
    """
    batch = layout.batch or upscaler.batch(layout.tile)
    prepared = prepare_block(source, layout, block, norm=norm, batch=batch, dtype=dtype, done=done)
    if prepared is None:
        return 0
    return compute_block(upscaler, prepared, layout, seed=seed, write=_writer(target, layout, block, on_chunk))


def upscale_into(
    upscaler: Upscaler,
    source,
    target,
    layout: Layout,
    *,
    norm: Normalization,
    seed: int = 0,
    dtype=None,
    done: Iterable[str] = (),
    on_chunk: Callable[[str], None] | None = None,
    blocks: list[Block] | None = None,
    prefetch: int = 0,
) -> int:
    """Upscale all of ``source`` (or its ``blocks``) into ``target`` (shape ``layout.target_shape``) block by block.

    With ``prefetch`` > 0, a reader thread reads and normalises up to that many blocks ahead and a writer thread
    writes (and records) finished chunks, at most that many blocks behind, while this thread computes: the device
    never waits for the disk. The result is the same either way.
    """
    done = set(done)
    blocks = layout.blocks() if blocks is None else blocks
    if prefetch <= 0:
        return sum(
            upscale_block(upscaler, source, target, layout, b, norm=norm, seed=seed, dtype=dtype, done=done,
                          on_chunk=on_chunk)
            for b in blocks
        )
    return _pipelined(upscaler, source, target, layout, blocks, norm=norm, seed=seed, dtype=dtype, done=done,
                      on_chunk=on_chunk, prefetch=prefetch)


def _pipelined(upscaler, source, target, layout, blocks, *, norm, seed, dtype, done, on_chunk, prefetch) -> int:
    batch = layout.batch or upscaler.batch(layout.tile)
    limit = prefetch * BLOCK_CHUNKS**2  # chunks waiting to be written
    written = 0
    behind: list = []
    with ThreadPoolExecutor(1, "resshift-read") as reader, ThreadPoolExecutor(1, "resshift-write") as writer:
        def read(b: Block):
            return reader.submit(prepare_block, source, layout, b, norm=norm, batch=batch, dtype=dtype, done=done)

        def settle(wait_all: bool = False) -> None:
            """Collect finished writes, waiting while too many are queued; re-raises a write's or on_chunk's error
            (a cancel) as soon as it has happened."""
            while behind and (wait_all or len(behind) > limit or behind[0].done()):
                behind.pop(0).result()

        ahead = [read(b) for b in blocks[:prefetch]]
        try:
            for k, block in enumerate(blocks):
                prepared = ahead.pop(0).result()
                if k + prefetch < len(blocks):
                    ahead.append(read(blocks[k + prefetch]))
                if prepared is None:
                    continue
                write = _writer(target, layout, block, on_chunk)

                def queue(c, data, write=write):
                    behind.append(writer.submit(write, c, data))
                    settle()

                written += compute_block(upscaler, prepared, layout, seed=seed, write=queue)
            settle(wait_all=True)
        except BaseException:
            for future in behind + ahead:
                future.cancel()  # nothing more is written after a cancel or an error
            raise
    return written


_LOADED: dict[tuple, Upscaler] = {}
_LOADING = threading.Lock()


def cached_upscaler(spec: str, *, device: str = "auto", precision: str = "auto", steps: int | None = None) -> Upscaler:
    """One loaded model per process, spec, device, precision and steps, so that tasks carry a path, not the weights;
    ``auto`` precision is measured once and the model then also serves its outcome."""
    with _LOADING:  # dask's threads ask at once: load once
        if (spec, device, precision, steps) not in _LOADED:
            if len(_LOADED) >= 4:
                _LOADED.clear()
            up = Upscaler(spec, device=device, precision=precision, steps=steps)
            _LOADED[(spec, device, precision, steps)] = _LOADED[(spec, device, up.precision, steps)] = up
        return _LOADED[(spec, device, precision, steps)]


def set_threads(threads: int) -> None:
    """Torch threads of this process (cores / workers on a shared machine), set only when it changes."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
