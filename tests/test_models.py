"""The shipped models and the ConvDenoiser: presets, halo, per-step modulation, loading through the front-ends."""
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from napari_resshift import diffusion
from napari_resshift.engine import Upscaler
from napari_resshift.errors import ResShiftError
from napari_resshift.loading import build_model, load_model, load_project_model, make_card, save_model
from napari_resshift.model import ResShiftModel
from napari_resshift.nets import convnet
from napari_resshift.registry import PRESETS, SHIPPED, architecture
from pipelines import upscale_zarr

from conftest import check_ome_zarr


@pytest.fixture(scope="module")
def conv_model():
    torch.manual_seed(0)
    model = ResShiftModel(architecture("conv-tiny", mode="packed")).eval()
    for p in model.unet.parameters():  # zero-initialised parts (step embedding) made active
        torch.nn.init.normal_(p, std=0.2)
    return model


def zero_noise(model, lq):
    shape = model.latent_shape(model.pad(lq))
    return lambda k: torch.zeros(shape)


def test_halo_bounds_the_receptive_field_of_the_whole_chain(conv_model):
    lq = torch.rand(1, 3, 40, 40) * 2 - 1
    moved = lq.clone()
    moved[0, :, 20, 20] += 0.5
    with torch.no_grad():
        a = conv_model.super_resolve(lq, noise=zero_noise(conv_model, lq))
        b = conv_model.super_resolve(moved, noise=zero_noise(conv_model, moved))
    changed = (a - b).abs().amax(dim=(0, 1)) > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    reach = (conv_model.unet.halo + 2) * 4  # the packed bicubic conditioning reads 2 LR pixels either side
    assert changed.any()
    assert ys.min() >= 80 - reach and ys.max() < 84 + reach and xs.min() >= 80 - reach and xs.max() < 84 + reach
    assert ys.max() - ys.min() > 4 * 4  # the steps spread it beyond the first convolutions


def test_every_step_is_modulated_and_features_are_computed_once(conv_model):
    lq = torch.rand(2, 3, 12, 12) * 2 - 1
    calls = []
    encoder = conv_model.unet.encoder_head
    handle = encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        denoise = conv_model.denoiser(lq)
        x = torch.randn(2, 48, 12, 12)
        outs = [denoise(x, torch.full((2,), t)) for t in range(conv_model.schedule.steps)]
    finally:
        handle.remove()
    assert len(calls) == 1
    assert all(not torch.allclose(outs[0], o) for o in outs[1:])


def test_fused_cpu_inference_computes_the_same_network(conv_model):
    """No gradients in float32 on a CPU take oneDNN's fused kernels with the modulation folded into the weights."""
    net = conv_model.unet
    lq, x = torch.rand(2, 3, 12, 12) * 2 - 1, torch.randn(2, 48, 12, 12)
    same, mixed = torch.full((2,), 2), torch.tensor([1, 3])
    with torch.no_grad():
        assert convnet.fusable(x)
        fused = [net(x, t, net.condition(lq)) for t in (same, mixed)]
    plain = [net(x, t, net.condition(lq)).detach() for t in (same, mixed)]  # with gradients: the plain modules
    assert not torch.equal(fused[0], plain[0])  # another kernel: it did take the fused path
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert a.is_contiguous()


def test_an_unknown_denoiser_is_one_clear_error():
    config = architecture("conv-tiny", mode="packed")
    config["model"]["target"] = "models.unet.NoSuchNet"
    with pytest.raises(ResShiftError, match="unknown denoiser 'NoSuchNet'"):
        build_model(config, source="card.json")
    with pytest.raises(KeyError, match="packed mode only"):
        architecture("conv", mode="latent")


def test_conv_denoiser_trains_from_bicubic(conv_model):
    """Residual and zero-initialised at the output, a scratch model's first estimate is y_0, the bicubic upscale."""
    from training.finetune import build_model as build_for_training, resolve_options

    opts = resolve_options(["--data", ".", "--run", "r", "--init", "scratch", "--arch", "conv-tiny", "--mode",
                            "packed"])
    model, origin = build_for_training(opts)
    lq = torch.rand(1, 3, 8, 8) * 2 - 1
    z_y = model.condition(lq)
    t = torch.full((1,), model.schedule.steps - 1)
    with torch.no_grad():
        assert torch.equal(model.denoiser(lq)(diffusion.scale_input(model.schedule, z_y, t), t), z_y)
    assert origin == "scratch (conv-tiny)"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_load_by_name(name):
    model, card = load_model(name)
    assert card["name"] == name and card["scale"] == 4 and PRESETS[name].packaged
    up = Upscaler(name, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    out = up.upscale(image, seed=0)
    assert out.image.shape == (48, 40, 3) and out.image.dtype == np.uint8


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_are_where_training_starts(name):
    from training.finetune import build_model as build_for_training, resolve_options

    model, origin = build_for_training(resolve_options(["--data", ".", "--run", "r", "--init", name]))
    assert origin == f"{name} ({name})" and type(model.unet).__name__ == "ConvDenoiser"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_run_in_the_pipeline(name, tmp_path):
    src = tmp_path / "in.zarr"
    zarr.open_array(str(src), mode="w", shape=(20, 24), dtype="uint16")[:] = np.arange(480).reshape(20, 24)
    out = tmp_path / "out.ome.zarr"
    assert upscale_zarr.main([str(src), "-o", str(out), "--model", name, "--quiet", "--levels", "1"]) == 0
    check_ome_zarr(out)
    group = zarr.open_group(str(out), mode="r")
    assert group["0"].shape == (80, 96)
    params = group.attrs["resshift"]["params"]
    assert params["model"] == name and params["model_name"] == name and group.attrs["resshift"]["status"] == "complete"


def test_the_fast_preset_runs_two_blocks_per_step_and_reaches_less_far():
    fast, full = (ResShiftModel(architecture(name, mode="packed")).unet for name in ("conv-fast", "conv"))
    assert (len(fast.blocks), len(full.blocks)) == (2, 3)
    assert fast.halo < full.halo


def reshape_blocks(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "scripts"))
    from reshape_blocks import main

    return main


def test_dropping_blocks_keeps_the_rest_of_the_network(tmp_path, monkeypatch):
    """scripts/reshape_blocks.py: with the dropped blocks identities, the smaller model samples the same image."""
    drop_blocks = reshape_blocks(monkeypatch)

    config = architecture("conv-tiny", mode="packed")
    config["model"]["params"].update(step_blocks=3, encoder_blocks=3)
    torch.manual_seed(1)
    model = ResShiftModel(config).eval()
    for p in model.unet.parameters():
        torch.nn.init.normal_(p, std=0.2)
    for last in (model.unet.blocks[2].conv2, model.unet.encoder[2].conv2):
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    save_model(model, tmp_path / "three.safetensors", make_card(model, name="three"))
    drop_blocks([str(tmp_path / "three.safetensors"), str(tmp_path / "two.safetensors"), "--step-keep", "2",
                 "--encoder-keep", "2"])
    smaller, card = load_project_model(tmp_path / "two.safetensors")
    assert len(smaller.unet.blocks) == len(smaller.unet.encoder) == 2
    assert (card["provenance"]["kept_step_blocks"], card["provenance"]["kept_encoder_blocks"]) == (2, 2)
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a = model.super_resolve(lq, noise=zero_noise(model, lq))
        b = smaller.super_resolve(lq, noise=zero_noise(smaller, lq))
    assert torch.equal(a, b)
    assert smaller.unet.halo < model.unet.halo


def test_untied_steps_start_as_the_shared_network_and_then_differ_per_step(tmp_path, monkeypatch):
    """--untie-steps copies the shared step blocks to every step: the same samples (fused and autograd paths, a batch
    of mixed steps included); changing one step's copy changes that step's prediction only."""
    config = architecture("conv-tiny", mode="packed")
    torch.manual_seed(2)
    model = ResShiftModel(config).eval()
    for p in model.unet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_model(model, tmp_path / "shared.safetensors", make_card(model, name="shared"))
    reshape_blocks(monkeypatch)([str(tmp_path / "shared.safetensors"), str(tmp_path / "untied.safetensors"),
                                 "--untie-steps"])
    untied, card = load_project_model(tmp_path / "untied.safetensors")
    steps, per_step = untied.unet.step_embedding.num_embeddings, untied.unet.step_blocks
    assert card["provenance"]["untied_steps"] and len(untied.unet.blocks) == steps * per_step
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.super_resolve(lq, noise=zero_noise(model, lq)),
                           untied.super_resolve(lq, noise=zero_noise(untied, lq)))
    x, features = torch.randn(steps, 48, 8, 8), torch.randn(steps, model.unet.head.out_channels, 8, 8)
    t = torch.arange(steps).flip(0)
    with torch.enable_grad():
        shared_out, untied_out = model.unet(x, t, features), untied.unet(x, t, features)
    torch.testing.assert_close(untied_out, shared_out)
    with torch.no_grad():
        untied.unet.step_modules(1)[0].conv2.weight.add_(0.5)
    with torch.enable_grad():
        changed = untied.unet(x, t, features) != untied_out
    assert changed[t == 1].any() and not changed[t != 1].any()
