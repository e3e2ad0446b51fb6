"""The out-of-core core: chunk-by-chunk upscaling equals the in-memory engine, whatever the blocks, and resumes."""
from collections import Counter

import numpy as np
import pytest
import torch
import zarr

from napari_resshift import outofcore
from napari_resshift.engine import Upscaler
from napari_resshift.errors import ResShiftError
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture

TILE, OVERLAP = 16, 4


@pytest.fixture(scope="module")
def upscaler():
    torch.manual_seed(0)
    return Upscaler(ResShiftModel(architecture("tiny")).eval(), device="cpu")


def _run(upscaler, image, axes, *, rgb=False, out_axes=None, seed=5, **kw):
    layout = outofcore.Layout(axes, image.shape, upscaler.scale, TILE, OVERLAP, rgb=rgb, out_axes=out_axes, min_chunk=1)
    norm = outofcore.fit_normalization(image, layout)
    target = np.zeros(layout.target_shape, kw.pop("dtype", image.dtype))
    outofcore.upscale_into(upscaler, image, target, layout, norm=norm, seed=seed, dtype=target.dtype, **kw)
    return layout, norm, target


@pytest.mark.parametrize(
    "shape, axes, rgb",
    [((21, 30), "yx", False), ((2, 18, 20), "cyx", False), ((20, 19, 4), "yxc", True), ((7, 9), "yx", False)],
)
def test_equals_in_memory_engine(upscaler, shape, axes, rgb):
    rng = np.random.default_rng(1)
    image = (rng.random(shape) * (255 if rgb else 4000)).astype(np.uint8 if rgb else np.uint16)
    _, norm, out = _run(upscaler, image, axes, rgb=rgb)
    ref = upscaler.upscale(
        image, channel_axis=axes.index("c") if "c" in axes else None, rgb=rgb, seed=5, tile=TILE, overlap=OVERLAP,
        norm=norm,
    ).image
    np.testing.assert_array_equal(out, ref)


def test_blocks_and_inputs_do_not_change_the_result(upscaler, tmp_path):
    """Dask or zarr input, zarr output, any block size: bit-identical (noise and blending are positional)."""
    import dask.array as da

    image = (np.random.default_rng(2).random((30, 40)) * 1000).astype(np.float32)
    _, norm, ref = _run(upscaler, image, "yx")
    layout = outofcore.Layout("yx", image.shape, 4, TILE, OVERLAP, min_chunk=1)
    assert len(layout.blocks(side=1)) == layout.grid[0] * layout.grid[1] > 1
    target = zarr.open_array(str(tmp_path / "o.zarr"), mode="w", shape=layout.target_shape,
                             chunks=layout.target_chunks, dtype="float32")
    for block in layout.blocks(side=1):
        outofcore.upscale_block(upscaler, da.from_array(image, chunks=7), target, layout, block, norm=norm, seed=5)
    np.testing.assert_array_equal(target[:], ref)


def test_each_tile_is_computed_once_per_block(upscaler, monkeypatch):
    """Chunks share the batches on their borders: a batch stays cached until the last chunk that needs it is done."""
    computed = []
    run = upscaler.upscale_tiles
    monkeypatch.setattr(upscaler, "upscale_tiles", lambda p, tiles, **kw: computed.extend(tiles) or run(p, tiles, **kw))
    image = (np.random.default_rng(3).random((60, 70)) * 1000).astype(np.float32)
    layout, _, _ = _run(upscaler, image, "yx")
    assert layout.grid[0] * layout.grid[1] > 4 and len(layout.blocks()) == 1
    assert Counter(computed) == Counter(outofcore.plan_tiles(60, 70, tile=TILE, overlap=OVERLAP))


def test_resume_skips_done_chunks_and_cancel_stops(upscaler):
    image = (np.random.default_rng(3).random((26, 26)) * 1000).astype(np.uint16)
    layout, norm, ref = _run(upscaler, image, "yx")
    total = layout.grid[0] * layout.grid[1]
    seen = []

    def cancel_after_two(key):
        seen.append(key)
        if len(seen) == 2:
            raise KeyboardInterrupt

    partial = np.zeros_like(ref)
    with pytest.raises(KeyboardInterrupt):
        outofcore.upscale_into(upscaler, image, partial, layout, norm=norm, seed=5, on_chunk=cancel_after_two)
    rest = []
    n = outofcore.upscale_into(upscaler, image, partial, layout, norm=norm, seed=5, done=seen, on_chunk=rest.append)
    assert n == total - 2 and not set(rest) & set(seen)
    np.testing.assert_array_equal(partial, ref)


def test_multi_axis_planes_and_reordered_output(upscaler):
    """ZYX-like planes carried through; YXC RGB written as CYX: the same pixels, moved."""
    rng = np.random.default_rng(4)
    stack = (rng.random((2, 2, 17, 18)) * 3000).astype(np.int16)
    layout, norm, out = _run(upscaler, stack, "czyx")
    assert out.shape == (2, 2, 68, 72)
    plane = 1 * 2 + 0  # c=1, z=0 in row-major order of the plane axes
    single = outofcore.Normalization(norm.mode, (norm.low[1],), (norm.high[1],))
    ref = upscaler.upscale(stack[1, 0], seed=5, tile=TILE, overlap=OVERLAP, norm=single, plane_offset=plane).image
    np.testing.assert_array_equal(out[1, 0], ref)
    rgb = (rng.random((18, 20, 3)) * 255).astype(np.uint8)
    _, _, yxc = _run(upscaler, rgb, "yxc", rgb=True)
    _, _, cyx = _run(upscaler, rgb, "yxc", rgb=True, out_axes="cyx")
    np.testing.assert_array_equal(np.moveaxis(yxc, -1, 0), cyx)


@pytest.mark.parametrize(
    "axes, shape, rgb",
    [("yq", (4, 4), False), ("yx", (0, 5), False), ("yyx", (2, 3, 3), False), ("cyx", (2, 5, 5), True)],
)
def test_bad_layouts_are_one_line_errors(axes, shape, rgb):
    with pytest.raises(ResShiftError) as err:
        outofcore.Layout(axes, shape, 4, TILE, OVERLAP, rgb=rgb)
    assert "\n" not in str(err.value)


def test_model_is_cached_per_spec(tmp_path):
    from napari_resshift.loading import make_card, save_model

    model = ResShiftModel(architecture("tiny")).eval()
    path = save_model(model, tmp_path / "tiny.safetensors", make_card(model, name="tiny"))
    a = outofcore.cached_upscaler(str(path), device="cpu")
    assert outofcore.cached_upscaler(str(path), device="cpu") is a


@pytest.mark.parametrize("prefetch", [0, 2])
def test_tile_plan_is_built_once_per_block(upscaler, monkeypatch, prefetch):
    """Reading a block's window, computing its batches and blending each of its chunks share one tile plan; the
    result is the whole-image engine's, bit for bit."""
    from napari_resshift import tiling

    planned = []
    original = tiling.plan_tiles

    def counting(*args, **kwargs):
        planned.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiling, "plan_tiles", counting)
    monkeypatch.setattr(outofcore, "plan_tiles", counting)
    image = (np.random.default_rng(4).random((30, 40)) * 1000).astype(np.float32)
    layout = outofcore.Layout("yx", image.shape, upscaler.scale, TILE, OVERLAP, min_chunk=1)
    blocks = layout.blocks(side=2)
    assert len(blocks) > 1 and all(len(b.rows) * len(b.cols) > 1 for b in blocks)  # several chunks per block
    norm = outofcore.fit_normalization(image, layout)
    target = np.zeros(layout.target_shape, np.float32)
    outofcore.upscale_into(upscaler, image, target, layout, norm=norm, seed=5, dtype="float32", blocks=blocks,
                           prefetch=prefetch)
    assert len(planned) == len(blocks)
    monkeypatch.undo()
    ref = upscaler.upscale(image, seed=5, tile=TILE, overlap=OVERLAP, norm=norm).image
    np.testing.assert_array_equal(target, ref)
