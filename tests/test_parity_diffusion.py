"""Parity of the diffusion maths and of whole runs (sampling, training loss, chopped inference) with a kit."""
import json

import numpy as np
import pytest
import torch

from napari_resshift import diffusion
from napari_resshift.loading import load_model
from napari_resshift.model import bicubic_up
from napari_resshift.tiling import blend_tiles, plan_tiles

SCHEDULE_ARRAYS = [
    "sqrt_etas", "etas", "etas_prev", "alpha", "posterior_variance", "posterior_variance_clipped",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "weight_loss_mse",
]


def t_(a):
    return torch.from_numpy(np.asarray(a))


def assert_close(actual, expected, atol, what):
    actual = actual.detach().float().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    err = float(np.abs(actual - np.asarray(expected)).max())
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"


@pytest.fixture(scope="module")
def model(kit):
    torch.manual_seed(0)
    m, _ = load_model(kit.path)
    return m


@pytest.fixture(scope="module")
def schedule(kit):
    return diffusion.Schedule.from_config(kit.config["diffusion"]["params"])


def test_parity_schedules(kit):
    params = json.loads((kit.path / "schedule_params.json").read_text())
    golden = kit.npz("schedules")
    assert params, "schedule_params.json lists no schedule"
    for name, p in params.items():
        sched = diffusion.Schedule.from_config(p)
        for array in SCHEDULE_ARRAYS:
            want = golden[f"f64_{name}__{array}"]
            got = getattr(sched, array)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=f"{name}.{array}")
        np.testing.assert_array_equal(sched.timestep_map, golden[f"{name}__timestep_map"])


def test_parity_forward_process(kit, schedule):
    d = kit.npz("diffusion_ops")
    t = t_(d["t"])
    xt = diffusion.q_sample(schedule, t_(d["z_start"]), t_(d["z_y"]), t, t_(d["noise"]))
    assert_close(xt, d["q_sample"], 1e-6, "q_sample")
    assert_close(diffusion.scale_input(schedule, t_(d["q_sample"]), t), d["scale_input"], 1e-6, "scale_input")
    assert_close(diffusion.prior_sample(schedule, t_(d["z_y"]), t_(d["prior_noise"])), d["prior_sample"], 1e-6, "prior")


def test_parity_posterior(kit, schedule):
    d = kit.npz("diffusion_ops")
    t = t_(d["t"])
    mean, var, logvar = diffusion.p_mean_variance(schedule, t_(d["q_sample"]), t, t_(d["pmv_model_output"]))
    assert_close(mean, d["pmv_mean"], 1e-6, "posterior mean")
    assert_close(var, d["pmv_variance"], 1e-6, "posterior variance")
    assert_close(logvar, d["pmv_log_variance"], 1e-6, "posterior log variance")
    clip_mean, _, _ = diffusion.p_mean_variance(
        schedule, t_(d["q_sample"]), t, t_(d["pmv_model_output"]).clamp(-1, 1)
    )
    assert_close(clip_mean, d["pmv_clip_mean"], 1e-6, "clipped posterior mean")


def test_parity_reverse_step(kit, schedule):
    d = kit.npz("diffusion_ops")
    t = t_(d["t"])
    _, _, logvar = diffusion.p_mean_variance(schedule, t_(d["q_sample"]), t, t_(d["pmv_model_output"]))
    out = diffusion.p_sample(t_(d["pmv_mean"]), logvar, t, t_(d["p_sample_noise"]))
    assert_close(out, d["p_sample_out"], 1e-6, "p_sample")


def test_parity_network_ops(kit, model, schedule):
    d = kit.npz("diffusion_ops")
    t = t_(d["t"])
    with torch.no_grad():
        assert_close(model.encode(t_(d["hr"])), d["z_start"], 1e-4, "encode(hr)")
        assert_close(model.condition(t_(d["lq"])), d["z_y"], 1e-4, "encode(bicubic(lq))")
        pred = model.denoiser(t_(d["lq"]))(t_(d["scale_input"]), t)
    assert_close(pred, d["pmv_model_output"], 1e-4, "model output")


@pytest.mark.parametrize("case", ["case0", "case1"])
def test_parity_full_sampling(kit, model, case):
    d = {k[len(case) + 1:]: v for k, v in kit.npz("sample_full").items() if k.startswith(case + "_")}
    y0 = t_(d["y0"])
    draws = [t_(d["noise_prior"])] + [t_(n) for n in d["noise_steps"]]
    steps = []
    with torch.no_grad():
        padded = model.pad(y0)
        assert_close(padded, d["y0_padded"], 1e-6, "padded input")
        assert_close(bicubic_up(padded, model.scale), d["y0_up"], 1e-5, "bicubic input")
        assert_close(model.condition(padded), d["z_y"], 1e-4, "z_y")
        out = model.super_resolve(y0, noise=diffusion.recorded_noise(draws), callback=steps.append)
    assert len(steps) == len(d["z_samples"])
    for k, step in enumerate(steps):
        assert_close(step["pred_x0"], d["pred_xstart"][k], 2e-4, f"pred_x0 step {k}")
        assert_close(step["mean"], d["post_mean"][k], 2e-4, f"posterior mean step {k}")
        assert_close(step["x"], d["z_samples"][k], 2e-4, f"latent step {k}")
    with torch.no_grad():
        z_q, idx = model.autoencoder.quantize_latent(t_(d["z_final"]))
        confident = d["code_margin"] >= 1e-4
        np.testing.assert_array_equal(idx.numpy()[confident], d["code_idx"][confident])
        decoded = model.decode(t_(d["z_final"]))
    assert_close(decoded, d["decoded"], 1e-4, "decoded")
    assert_close(out, d["out"], 5e-4, "output image")
    assert out.shape == d["out"].shape


def test_parity_training_loss(kit, model, schedule):
    d = kit.npz("training_losses")
    model.train()
    model.unet.zero_grad()
    loss, mse, pred, z_t, z_start = model.loss(t_(d["x0"]), t_(d["y"]), t_(d["t"]), t_(d["noise"]))
    loss.backward()
    model.eval()
    np.testing.assert_allclose(mse.detach().numpy(), d["mse"], rtol=1e-4)
    np.testing.assert_allclose(loss.item(), float(d["loss"]), rtol=1e-4)
    assert_close(z_start, d["z_start"], 1e-4, "z_start")
    assert_close(z_t, d["z_t"], 1e-4, "z_t")
    assert_close(pred, d["pred_zstart"], 1e-4, "pred_zstart")
    grads = {k[len("grad__"):]: v for k, v in d.items() if k.startswith("grad__")}
    params = dict(model.unet.named_parameters())
    assert grads
    for name, want in grads.items():
        got = params[name].grad.numpy()
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max(), f"gradient of {name}"
    with torch.no_grad():
        assert_close(model.decode(pred.detach()), d["x0_pred_decoded"], 1e-4, "decoded prediction")


def test_parity_chopped_inference(kit, model):
    d = kit.npz("chopped")
    chop = kit.meta["chop"]
    size, stride = chop["chop_size"], chop["chop_stride"]
    y0 = t_(d["y0"])
    tiles = plan_tiles(*y0.shape[-2:], tile=size, overlap=size - stride)
    np.testing.assert_array_equal([(t.y0, t.x0) for t in tiles], d["patch_starts_lq"])
    order = {(t.y0, t.x0): i for i, t in enumerate(tiles)}

    def run(patches, batch):
        (tile,) = batch
        i = order[(tile.y0, tile.x0)]
        draws = [t_(d["noise_prior"][i:i + 1])] + [t_(n[i:i + 1]) for n in d["noise_steps"]]
        with torch.no_grad():
            out = model.super_resolve(patches, noise=diffusion.recorded_noise(draws))
        assert_close(out[0], d["patch_out"][i], 5e-4, f"tile {i}")
        return out

    out = blend_tiles(run, y0[0], scale=model.scale, tile=size, overlap=size - stride, feather=False, batch=1)
    assert_close(out, d["bs1_out"][0], 5e-4, "chopped output (batch 1)")
    assert_close(out, d["bs4_out"][0], 5e-4, "chopped output (batch 4)")
