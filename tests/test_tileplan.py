"""Default tile, halo and batch per model and device: the reference's tiles for latent models, never more tiles than
its loop; the card's for packed models; bigger batches on a GPU; all of it recorded."""
import numpy as np
import pytest
import torch

from napari_resshift import tileplan
from napari_resshift.engine import Upscaler
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import PRESETS, architecture
from napari_resshift.tiling import plan_tiles


def reference_tiles(height: int, width: int, chop: int = 64, stride: int = 56) -> int:
    """The reference CLI's tile count, written from its description: starts every ``stride``, the last moved back
    so that the tile ends at the image's edge, repeats dropped."""
    def starts(n):
        return [0] if n <= chop else sorted({min(s, n - chop) for s in range(0, n, stride)})

    return len(starts(height)) * len(starts(width))


@pytest.fixture(scope="module")
def v3():
    torch.manual_seed(0)
    return Upscaler(ResShiftModel(PRESETS["v3"].config), card={"name": "v3"}, device="cpu")


def test_official_v3_tiles_as_the_reference_and_never_more(v3):
    assert v3.tiling() == (64, 8)  # chop 64, stride 56
    assert len(plan_tiles(1024, 1024, tile=64, overlap=8)) == reference_tiles(1024, 1024) == 361
    for size in [*range(1, 300, 7), 512, 1000, 1024, 2048]:
        for tile in (64, 128, 256):  # also when a user picks a bigger tile and keeps the default halo
            tile, overlap = v3.tiling(tile=tile)
            assert len(plan_tiles(size, size + 13, tile=tile, overlap=overlap)) <= reference_tiles(size, size + 13)


def test_latent_tiles_are_the_denoisers_multiple_at_least_the_reference_chop():
    tiny = Upscaler(ResShiftModel(architecture("tiny")), card={"name": "tiny"}, device="cpu")
    assert tiny.model.pad_multiple == 16 and tiny.tiling() == (64, 8)


def test_packed_models_keep_their_cards_tile_and_halo():
    default = Upscaler("default", device="cpu")
    assert default.tiling() == (default.card["tile"], default.card["overlap"]) == (256, 16)
    packed = ResShiftModel(architecture("fast", mode="packed"))
    crop = Upscaler(packed, card={"training": {"crop": 192}}, device="cpu")
    halo = packed.unet.halo // packed.latent_factor
    assert crop.tiling() == (48, min(halo, 48 // 4))  # the training crop, GroupNorm's statistics
    assert Upscaler(packed, card={}, device="cpu").default_tile == tileplan.PIXEL_TILE


def test_batches_fill_a_gpu_and_stay_small_on_a_cpu():
    for tile in (16, 32, 64, 128, 256, 512):
        cpu, cuda = tileplan.batch_for(tile, "cpu"), tileplan.batch_for(tile, "cuda")
        assert 1 <= cpu <= cuda and cpu * tile * tile <= max(tileplan.BATCH_PIXELS["cpu"], tile * tile)
    assert tileplan.batch_for(64, "cuda") > tileplan.batch_for(64, "cpu")


def test_the_choice_is_recorded(v3):
    tiny = Upscaler(ResShiftModel(architecture("tiny")), card={"name": "tiny"}, device="cpu")
    info = tiny.upscale(np.zeros((8, 8), np.uint8)).info
    assert (info["tile"], info["overlap"], info["batch"]) == (64, 8, tileplan.batch_for(64, "cpu"))


def test_the_pipeline_records_the_choice(tmp_path):
    import zarr

    from napari_resshift.loading import make_card, save_model
    from pipelines import ome, upscale_zarr

    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    path = save_model(model, tmp_path / "tiny.safetensors", make_card(model, name="tiny"))
    zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=(20, 20), dtype="uint8")[:] = 7
    assert upscale_zarr.main([str(tmp_path / "in.zarr"), "-o", str(tmp_path / "out.zarr"), "--model", str(path),
                              "--quiet"]) == 0
    params = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs.asdict()[ome.MARKER]["params"]
    assert (params["tile"], params["overlap"], params["batch"]) == (64, 8, tileplan.batch_for(64, "cpu"))
