"""The pipelined out-of-core loop (read ahead, write behind) gives the plain loop's bits, records chunks only once
written, and stops on a cancel."""
import threading

import numpy as np
import pytest
import torch
import zarr

from napari_resshift import outofcore
from napari_resshift.engine import Upscaler
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture


@pytest.fixture(scope="module")
def upscaler():
    torch.manual_seed(0)
    return Upscaler(ResShiftModel(architecture("tiny")).eval(), device="cpu")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 2 x 2 chunks, so that a small image has several and reads can run ahead."""
    blocks = outofcore.Layout.blocks
    monkeypatch.setattr(outofcore.Layout, "blocks", lambda self, side=2: blocks(self, side=side))


def setup(upscaler, tmp_path, name, shape=(40, 36)):
    image = (np.random.default_rng(4).random(shape) * 3000).astype(np.uint16)
    layout = outofcore.Layout("yx", image.shape, upscaler.scale, 16, 4, min_chunk=1)
    target = zarr.open_array(str(tmp_path / name), mode="w", shape=layout.target_shape, chunks=layout.target_chunks,
                             dtype="uint16")
    return image, layout, outofcore.fit_normalization(image, layout), target


def test_prefetch_equals_the_plain_loop_and_records_after_writing(upscaler, tmp_path):
    image, layout, norm, plain = setup(upscaler, tmp_path, "plain.zarr")
    assert len(layout.blocks()) == 4
    n = outofcore.upscale_into(upscaler, image, plain, layout, norm=norm, seed=2)
    _, _, _, piped = setup(upscaler, tmp_path, "piped.zarr")
    threads, unwritten = set(), []

    def record(key):
        threads.add(threading.current_thread().name)
        _, cy, cx = map(int, key.split("."))
        y0, x0, y1, x1 = layout.chunk_box(cy, cx)
        if not piped[y0:y1, x0:x1].any():  # every recorded chunk is already on disk
            unwritten.append(key)

    for prefetch in (1, 3):
        piped[:] = 0
        assert outofcore.upscale_into(upscaler, image, piped, layout, norm=norm, seed=2, prefetch=prefetch,
                                      on_chunk=record) == n
        np.testing.assert_array_equal(piped[:], plain[:])
    assert not unwritten and all(t.startswith("resshift-write") for t in threads)


def test_prefetch_cancel_stops_and_resume_finishes(upscaler, tmp_path):
    image, layout, norm, ref = setup(upscaler, tmp_path, "ref.zarr")
    total = outofcore.upscale_into(upscaler, image, ref, layout, norm=norm, seed=2)
    _, _, _, out = setup(upscaler, tmp_path, "out.zarr")
    seen = []

    def cancel_after_three(key):
        seen.append(key)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outofcore.upscale_into(upscaler, image, out, layout, norm=norm, seed=2, prefetch=1, on_chunk=cancel_after_three)
    assert 3 <= len(seen) < total  # stopped within the bounded queue, long before the end
    rest = outofcore.upscale_into(upscaler, image, out, layout, norm=norm, seed=2, prefetch=1, done=seen)
    assert rest == total - len(seen)
    np.testing.assert_array_equal(out[:], ref[:])
