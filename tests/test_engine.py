"""The upscaling engine: dtypes and layouts, determinism, tiling invariance, normalisation, devices, errors."""
import platform
import resource

import numpy as np
import pytest
import torch

from napari_resshift import allocator, diffusion, normalization
from napari_resshift.engine import Upscaler, pick_device
from napari_resshift.errors import ResShiftError
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture, diffusion_params
from napari_resshift.tiling import Tile, blend_weight, plan_tiles, tile_starts


@pytest.fixture(scope="module")
def upscaler():
    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny"))
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return Upscaler(model, card={"name": "tiny"}, device="cpu")


def blobs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    img = np.sin(y / 3.0) * np.cos(x / 5.0) + 0.3 * rng.standard_normal(shape[:2])
    img = (img - img.min()) / (img.max() - img.min())
    if len(shape) == 3:
        img = np.stack([np.roll(img, 3 * c, axis=1) for c in range(shape[2])], -1)
    if np.dtype(dtype).kind == "f":
        return img.astype(dtype)
    return (img * np.iinfo(dtype).max * 0.8).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_gray_dtypes_keep_dtype_and_scale(upscaler, dtype):
    img = blobs((20, 12), dtype)
    before = img.copy()
    res = upscaler.upscale(img, seed=1)
    assert res.image.shape == (80, 48) and res.image.dtype == img.dtype
    np.testing.assert_array_equal(img, before)  # input never modified
    assert res.info["scale"] == 4 and res.info["normalization"]["mode"] in ("range", "percentile")
    out32 = upscaler.upscale(img, seed=1, dtype=np.float32).image
    assert out32.dtype == np.float32


def test_rgb_rgba_and_multichannel(upscaler):
    rgb = blobs((16, 16, 3), np.uint8)
    assert upscaler.upscale(rgb).image.shape == (64, 64, 3)
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 200, np.uint8)], -1)
    out = upscaler.upscale(rgba).image
    assert out.shape == (64, 64, 4)
    assert np.abs(out[..., 3].astype(int) - 200).max() <= 1  # alpha is interpolated, not invented
    multi = np.stack([blobs((16, 20), np.uint16, s) for s in range(5)])
    res = upscaler.upscale(multi, channel_axis=0)
    assert res.image.shape == (5, 64, 80)
    # each channel goes through alone: channel 2 equals a run on that channel with the same plane index
    alone = upscaler.upscale(multi[2], plane_offset=2, norm=normalization.fit(multi[2:3], channel_axis=0)).image
    np.testing.assert_array_equal(res.image[2], alone)


def test_same_seed_same_output_other_seed_differs(upscaler):
    img = blobs((16, 16), np.float32)
    a = upscaler.upscale(img, seed=5).image
    b = upscaler.upscale(img, seed=5).image
    c = upscaler.upscale(img, seed=6).image
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_region_equals_whole_image_bitwise(upscaler):
    lr = torch.from_numpy(blobs((40, 36, 3), np.float32)).permute(2, 0, 1) * 2 - 1
    whole = upscaler.upscale_plane(lr, seed=2, tile=16, overlap=4)
    box = (24, 40, 104, 120)
    part = upscaler.upscale_plane(lr, seed=2, tile=16, overlap=4, box=box)
    assert torch.equal(part, whole[:, 24:104, 40:120])


def test_tiled_result_close_to_untiled(upscaler):
    lr = torch.from_numpy(blobs((32, 32, 3), np.float32)).permute(2, 0, 1) * 2 - 1
    one = upscaler.upscale_plane(lr, seed=0, tile=32, overlap=0)
    tiled = upscaler.upscale_plane(lr, seed=0, tile=16, overlap=8)
    # the noise is keyed by position, so tiles agree away from their borders; random weights make this loose
    assert (tiled - one).abs().mean() < 0.5 * (one - one.mean()).abs().mean() + 0.05


def test_progress_and_cancel(upscaler):
    calls = []
    upscaler.upscale(blobs((40, 40), np.uint8), tile=16, overlap=4, on_tile=lambda d, n: calls.append((d, n)))
    assert calls[-1][0] == calls[-1][1] == len(calls) == len(plan_tiles(40, 40, tile=16, overlap=4))

    class Stop(Exception):
        pass

    def cancel(done, total):
        raise Stop

    with pytest.raises(Stop):
        upscaler.upscale(blobs((40, 40), np.uint8), tile=16, overlap=4, on_tile=cancel)


def test_tiny_and_odd_sizes(upscaler):
    for shape in [(1, 1), (1, 7), (5, 3), (17, 33)]:
        out = upscaler.upscale(blobs(shape, np.uint8) if min(shape) > 1 else np.full(shape, 9, np.uint8)).image
        assert out.shape == (shape[0] * 4, shape[1] * 4)


@pytest.mark.parametrize("mode", ["pixel", "packed"])
def test_pixel_mode_engine(mode):
    model = ResShiftModel(architecture("tiny", mode=mode))
    up = Upscaler(model, device="cpu")
    assert up.upscale(blobs((12, 20), np.uint8)).image.shape == (48, 80)


def test_bad_inputs(upscaler):
    with pytest.raises(ResShiftError, match="2-D image"):
        upscaler.upscale(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ResShiftError, match="empty"):
        upscaler.upscale(np.zeros((0, 5), np.uint8))
    with pytest.raises(ResShiftError, match="not supported"):
        upscaler.upscale(np.zeros((4, 4), np.complex64))
    with pytest.raises(ResShiftError, match="fp16"):
        Upscaler(upscaler.model, device="cpu", precision="fp16")
    with pytest.raises(ResShiftError, match="precision"):
        Upscaler(upscaler.model, device="cpu", precision="int4")
    if not torch.cuda.is_available():
        with pytest.raises(ResShiftError, match="no CUDA"):
            pick_device("cuda")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")


def test_nan_input_is_zeroed_not_propagated(upscaler):
    img = blobs((16, 16), np.float32)
    img[3, 4] = np.nan
    out = upscaler.upscale(img, norm="minmax").image
    assert np.isfinite(out).all()


def test_normalization_round_trip():
    x = blobs((30, 30, 2), np.uint16)
    norm = normalization.fit(x, mode="percentile", channel_axis=2)
    back = norm.inverse(norm.forward(x, channel_axis=2), np.uint16, channel_axis=2)
    assert np.abs(back.astype(int) - x.astype(int)).max() <= 1
    assert normalization.fit(x[..., 0], mode="auto").mode == "percentile"
    assert normalization.fit(x.astype(np.uint8), mode="auto").mode == "range"
    restored = normalization.Normalization.from_dict(norm.to_dict())
    assert restored == norm
    const = normalization.fit(np.full((8, 8), 7.0, np.float32), mode="minmax")
    assert const.high[0] > const.low[0]


def test_tile_layout_and_weights():
    assert tile_starts(72, 32, 24) == [0, 24, 40]
    assert tile_starts(10, 32, 24) == [0]
    tiles = plan_tiles(40, 30, tile=16, overlap=4)
    covered = np.zeros((40, 30), bool)
    for t in tiles:
        covered[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] = True
    assert covered.all()
    w = blend_weight(Tile(0, 12, 16, 16), 40, 30, scale=4, overlap=4)
    assert w.min() > 0 and w[:, -1].max() < 0.05 and w[0, 32] == 1.0


def test_the_noiseless_last_step_draws_none():
    sched = diffusion.Schedule.from_config(diffusion_params(steps=4, min_noise_level=0.2, kappa=0.5))
    y = torch.rand(1, 3, 8, 8)
    asked = []
    draws = [torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(k)) for k in range(5)]
    out = diffusion.sample(lambda x, t: y * 0.9, y, sched, noise=lambda k: asked.append(k) or draws[k])
    assert asked == [0, 1, 2, 3]
    draws[4] = torch.full_like(y, float("nan"))  # a final draw would be multiplied by zero, never used
    assert torch.equal(diffusion.sample(lambda x, t: y * 0.9, y, sched, noise=lambda k: draws[k]), out)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_freed_tensor_memory_is_reused_without_page_faults():
    def denoiser_pass():  # six 20 MB activations alive together, then freed (glibc's defaults trim them away)
        activations = [torch.ones(5 << 20) for _ in range(6)]
        del activations

    assert allocator.keep_freed_memory()
    denoiser_pass()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        denoiser_pass()
    fresh_pages = 3 * 6 * (20 << 20) // resource.getpagesize()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < fresh_pages // 4  # glibc defaults: ~all
