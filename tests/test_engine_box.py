"""``Upscaler.upscale(box=...)``: a region alone equals the same region of the whole result (the widget's preview)."""
import numpy as np
import pytest
import torch

from napari_resshift import normalization
from napari_resshift.engine import Upscaler
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture


@pytest.mark.parametrize("channels", [None, 4])
def test_a_box_equals_that_region_of_the_whole_image(channels):
    torch.manual_seed(0)
    upscaler = Upscaler(ResShiftModel(architecture("tiny")).eval(), device="cpu")
    shape = (30, 36) if channels is None else (30, 36, channels)
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    if channels:
        image[..., 3] = 255  # opaque alpha
    norm = normalization.fit(image, mode="range", channel_axis=None if channels is None else 2)
    whole = upscaler.upscale(image, tile=16, overlap=4, seed=2, norm=norm).image
    box = (8, 8, 56, 56)  # HR pixels, across the borders of 2 x 2 of the 3 x 3 tiles
    ticks = []
    part = upscaler.upscale(image, tile=16, overlap=4, seed=2, norm=norm, box=box,
                            on_tile=lambda d, n: ticks.append(n)).image
    np.testing.assert_array_equal(part, whole[box[0]:box[2], box[1]:box[3]])
    assert ticks[-1] == 4  # only the tiles that reach the box, not all 9
