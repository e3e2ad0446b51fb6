"""training.finetune end to end on generated images with the tiny architecture: learning, exact resume, export."""
import csv
import itertools
import json
import os
import signal
import subprocess
import tarfile
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_resshift import diffusion
from napari_resshift.engine import Upscaler
from napari_resshift.errors import ResShiftError
from napari_resshift.loading import load_model, make_card, read_state_dict, save_model
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture
from training import checkpoint, data, finetune
from training.stages import AutoencoderStage, DenoiserStage
from training.trainer import Settings, Trainer

ROOT = Path(__file__).resolve().parents[1]
N = 6  # iterations of the reference run; it is killed after the checkpoint at N // 2


def pattern(h, w, *, phase, dtype=np.uint8):
    yy, xx = np.mgrid[0:h, 0:w]
    wave = 0.5 + 0.4 * np.sin(xx / (2.5 + phase) + phase) * np.cos(yy / 4.0 - phase)
    top = np.iinfo(dtype).max * (0.3 if dtype == np.uint16 else 1)  # 16-bit data rarely fills its range
    return (wave * top).astype(dtype)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i in range(3):
        rgb = np.stack([pattern(96, 112, phase=i + c / 3) for c in range(3)], -1)
        Image.fromarray(rgb).save(folder / f"photo{i}.png")
    cells = np.stack([pattern(80, 80, phase=p, dtype=np.uint16) for p in (0.5, 1.5)])
    tifffile.imwrite(folder / "cells.tif", cells, metadata={"axes": "CYX"}, photometric="minisblack")
    return folder


def common(images, run) -> list[str]:
    return ["--data", str(images), "--run", str(run), "--crop", "64", "--batch", "2", "--val-fraction", "0.25",
            "--val-size", "64", "--val-images", "2", "--log-every", "1", "--seed", "5"]


@pytest.fixture(scope="module")
def autoencoder_run(images, tmp_path_factory):
    run = tmp_path_factory.mktemp("ae") / "run"
    outcome = finetune.train(common(images, run) + ["--stage", "autoencoder", "--arch", "tiny", "--iterations", "3",
                                                     "--val-every", "3", "--no-tensorboard"])
    return outcome


def denoiser_args(images, run, autoencoder_run) -> list[str]:
    return common(images, run) + [
        "--init", "scratch", "--arch", "tiny", "--autoencoder", str(autoencoder_run.path),
        "--iterations", str(N), "--micro-batch", "1", "--warmup", "2", "--lr", "1e-3", "--ema", "0.9",
        "--checkpoint-every", "3", "--val-every", "3", "--degradation", "realesrgan",
    ]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Bitwise resume equality needs the same thread count in every process; other test modules change it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def straight(images, autoencoder_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    args = denoiser_args(images, root / "run", autoencoder_run) + ["--export-official", str(root / "official")]
    return finetune.train(args)


def assert_same_state(a: dict, b: dict, where: str = ""):
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            assert_same_state(a[key], b[key], f"{where}.{key}")
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}.{key} differs"
        elif key not in ("elapsed_s", "metrics"):
            assert a[key] == b[key], f"{where}.{key} differs"


def weights_of(run: Path) -> dict:
    state = checkpoint.load(run / "checkpoint.pt")
    return {k: state[k] for k in ("iteration", "model", "ema", "optimizer", "scheduler", "scaler", "sampler")}


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(images):
    torch.manual_seed(0)
    pairs = data.load_pairs([images / "photo0.png", images / "cells.tif"], crop=64, scale=4, norm="auto")
    batch = data.CropSampler(pairs, crop=64, scale=4, micro_batch=2, degradation="bicubic", seed=0)[0]
    stages = (DenoiserStage, AutoencoderStage, lambda m: AutoencoderStage(m, quantize=False))
    for make_stage in stages:
        stage = make_stage(ResShiftModel(architecture("tiny")))
        settings = Settings(iterations=16, batch=2, lr=2e-3, warmup=1, ema=0)
        trainer = Trainer(stage, settings, sampler=None, val_items=[], device=torch.device("cpu"), run_dir=images)
        losses = [trainer.step(itertools.repeat(batch))[0] for _ in range(settings.iterations)]
        assert np.mean(losses[-3:]) < 0.75 * losses[0], (stage.name, losses)
    assert stage.model.config["autoencoder"]["quantize"] is False  # the continuous autoencoder decodes as trained


def test_bf16_autocast_step_runs_on_cpu(images):
    pairs = data.load_pairs([images / "photo1.png"], crop=64, scale=4, norm="auto")
    batch = data.CropSampler(pairs, crop=64, scale=4, micro_batch=1, degradation="bicubic", seed=0)[0]
    stage = DenoiserStage(ResShiftModel(architecture("tiny")))
    before = [p.detach().clone() for p in stage.module.parameters()]
    trainer = Trainer(stage, Settings(iterations=1, batch=1, precision="bf16", ema=0), sampler=None, val_items=[],
                      device=torch.device("cpu"), run_dir=images)
    loss, grad_norm = trainer.step(iter([batch]))
    assert np.isfinite(loss) and np.isfinite(grad_norm)
    assert any(not torch.equal(a, b) for a, b in zip(before, stage.module.parameters()))


def test_run_writes_logs_samples_card_and_keeps_the_autoencoder_frozen(straight, autoencoder_run):
    run = straight.path.parent
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows if r["loss"]] == list(range(1, N + 1))
    val = [r for r in rows if r["psnr"]]
    assert [int(r["iteration"]) for r in val] == [3, 6]
    assert all(float(r["psnr_bicubic"]) > 10 and 0 < float(r["ssim_bicubic"]) <= 1 for r in val)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["iter_0000003.png", "iter_0000006.png"]
    grid = np.asarray(Image.open(run / "samples" / "iter_0000006.png"))
    rows = len(straight.trainer.val_items)
    assert rows >= 1 and grid.shape == (64 * rows + 4 * (rows - 1), 64 * 4 + 3 * 4, 3)  # LR | bicubic | ResShift | HR
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    card = json.loads((run / "model.json").read_text())
    training = card["training"]
    assert training["iterations"] == N and training["degradation"] == "realesrgan" and training["wall_time_s"] > 0
    assert training["train_files"] == 3 and training["val_files"] == 1 and set(training["metrics"]) >= {"psnr"}
    assert card["normalization"]["mode"] == "auto" and "cores" in training["hardware"]
    ae_file = read_state_dict(autoencoder_run.path)
    for key, value in straight.model.autoencoder.state_dict().items():
        assert torch.equal(value, ae_file[f"autoencoder.{key}"]), key


def test_a_snapshot_carries_the_runs_training_record_and_ships_as_one_stage(straight, tmp_path, monkeypatch):
    """scripts/snapshot.py: the EMA weights and the card's training record of the run's own export (the metrics are
    the last validation before the checkpoint), so ship_model.py can follow the stages."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import ship_model
    import snapshot

    run = straight.path.parent
    snapshot.main([str(run), str(tmp_path / "snap.safetensors")])
    model, card = load_model(tmp_path / "snap.safetensors")
    exported = json.loads((run / "model.json").read_text())["training"]
    assert card["training"].pop("snapshot_of") == str(run) and card["training"].pop("metrics")
    assert card["training"] == {k: v for k, v in exported.items() if k != "metrics"}
    assert [(s["iterations"], s["lr"]) for s in ship_model.stages(card)] == [(N, exported["lr"])]
    exported_weights = read_state_dict(straight.path)
    assert all(torch.equal(v, exported_weights[k]) for k, v in read_state_dict(tmp_path / "snap.safetensors").items())


def test_killed_and_resumed_run_equals_the_straight_run(straight, images, autoencoder_run, tmp_path):
    run = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = denoiser_args(images, run, autoencoder_run) + ["--no-tensorboard"]
    proc = subprocess.Popen([sys.executable, "-m", "training.finetune", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith(f"checkpoint: iteration {N // 2}"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert N // 2 <= checkpoint.load(run / "checkpoint.pt")["iteration"] < N
    resumed = finetune.train(["--resume", str(run)])
    assert resumed.trainer.iteration == N
    assert_same_state(weights_of(straight.path.parent), weights_of(run))
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_stopped_runs_export_midway_and_resume_to_the_straight_run(straight, images, autoencoder_run, tmp_path):
    """--stop-at and --time-limit hold for one call: each stop exports, and a plain --resume goes on to the end."""
    run = tmp_path / "run"
    stopped = finetune.train(denoiser_args(images, run, autoencoder_run) + ["--no-tensorboard", "--stop-at", "2"])
    assert stopped.trainer.iteration == 2 and checkpoint.load(run / "checkpoint.pt")["iteration"] == 2
    assert json.loads((run / "model.json").read_text())["training"]["iterations"] == 2
    timed = finetune.train(["--resume", str(run), "--time-limit", "1e-9"])  # out of time after one more step
    assert timed.trainer.iteration == 3 and json.loads((run / "model.json").read_text())["training"]["iterations"] == 3
    resumed = finetune.train(["--resume", str(run)])
    assert resumed.trainer.iteration == N
    assert_same_state(weights_of(straight.path.parent), weights_of(run))


def test_export_loads_in_the_engine_with_the_same_output(straight):
    gray = pattern(40, 36, phase=0.3, dtype=np.uint16)
    rgb = np.stack([pattern(24, 28, phase=p) for p in (0.1, 0.2, 0.3)], -1)
    from_file = Upscaler(straight.path, device="cpu")
    in_memory = Upscaler(straight.model, card=straight.card, device="cpu")
    for image in (gray, rgb):
        a = from_file.upscale(image, seed=3, tile=32).image
        b = in_memory.upscale(image, seed=3, tile=32).image
        assert a.shape == (image.shape[0] * 4, image.shape[1] * 4, *image.shape[2:]) and a.dtype == image.dtype
        np.testing.assert_array_equal(a, b)


def test_official_export_loads_strictly(straight):
    official = straight.path.parents[1] / "official"
    model, _ = load_model(official)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_checkpoint_of_a_compiled_model_loads(images, autoencoder_run, tmp_path):
    """torch.compile wraps the network as _orig_mod; those keys load into an uncompiled model (and back)."""
    torch.manual_seed(1)
    model, _ = load_model(autoencoder_run.path)
    pairs = data.load_pairs([images / "photo2.png"], crop=64, scale=4, norm="auto")
    sampler = data.CropSampler(pairs, crop=64, scale=4, micro_batch=1, degradation="bicubic", seed=0)

    def trainer(compiled: bool):
        stage = DenoiserStage(ResShiftModel(model.config))
        return Trainer(stage, Settings(iterations=2, batch=1, compile=compiled), sampler=sampler, val_items=[],
                       device=torch.device("cpu"), run_dir=tmp_path)

    compiled = trainer(True)
    state = compiled.state_dict()
    assert any("_orig_mod." in k for k in state["model"])
    checkpoint.save(state, tmp_path / "checkpoint.pt")
    plain = trainer(False)
    plain.load_state_dict(checkpoint.load(tmp_path / "checkpoint.pt"))
    for key, value in plain.stage.model.state_dict().items():
        assert torch.equal(value, state["model"][key.replace("unet.", "unet._orig_mod.", 1)]), key


def test_a_crash_while_writing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save({"iteration": 1, "w": torch.ones(3)}, path)

    def crash(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save({"iteration": 2, "w": torch.zeros(3)}, path)
    state = checkpoint.load(path)
    assert state["iteration"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_rng_states_round_trip():
    import random

    state = checkpoint.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_worker_processes_deliver_the_same_batches(images):
    pairs = data.load_pairs([images / "photo0.png", images / "cells.tif"], crop=64, scale=4, norm="auto")
    sampler = data.CropSampler(pairs, crop=64, scale=4, micro_batch=2, degradation="satellite", seed=9)
    trainer = Trainer(DenoiserStage(ResShiftModel(architecture("tiny"))), Settings(batch=2, workers=2),
                      sampler=sampler, val_items=[], device=torch.device("cpu"), run_dir=images)
    for k, batch in enumerate(trainer.batches(4, 3), start=4):
        expected = sampler[k]
        assert batch["seed"] == expected["seed"] and batch["index"] == k
        assert torch.equal(batch["hr"], expected["hr"]) and torch.equal(batch["lq"], expected["lq"])


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "training" / "recipes").glob("*.args")))
def test_recipe_files_parse(recipe, tmp_path):
    opts = finetune.resolve_options([f"@{recipe}", "--data", str(tmp_path), "--run", str(tmp_path / "run")])
    assert opts.crop % 128 == 0 and opts.iterations > 0 and opts.lr > 0 and opts.run == str(tmp_path / "run")


def test_packed_model_trains_from_scratch_without_an_autoencoder_and_kappa_changes(images, tmp_path):
    outcome = finetune.train(["--data", str(images), "--run", str(tmp_path / "run"), "--init", "scratch",
                              "--arch", "tiny", "--mode", "packed", "--kappa", "0.3", "--crop", "64", "--batch", "2",
                              "--iterations", "2", "--val-fraction", "0", "--val-every", "0", "--no-tensorboard"])
    model, card = load_model(outcome.path)
    assert card["mode"] == "packed" and model.autoencoder is None and model.pack == 4
    assert card["config"]["diffusion"]["params"]["kappa"] == 0.3 and model.schedule.kappa == 0.3


def test_a_residual_model_from_scratch_starts_at_bicubic(tmp_path):
    """Packed models predict x_0 as y_0 + the UNet's output, which starts at zero: sampling returns bicubic."""
    opts = finetune.resolve_options(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--init", "scratch",
                                     "--arch", "tiny", "--mode", "packed"])
    model, _ = finetune.build_model(opts)
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = model.super_resolve(lq, generator=torch.Generator().manual_seed(0))
    bicubic = torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic").clamp(-1, 1)
    assert model.residual and torch.allclose(out, bicubic, atol=1e-6)


@pytest.mark.parametrize("arch", ["tiny", "conv-tiny"])
def test_an_x2_model_trains_from_scratch_and_exports_twice_the_size(images, tmp_path, arch):
    outcome = finetune.train(["--data", str(images), "--run", str(tmp_path / "run"), "--init", "scratch",
                              "--arch", arch, "--mode", "packed", "--scale", "2", "--crop", "64", "--batch", "2",
                              "--iterations", "2", "--val-fraction", "0", "--val-every", "0", "--no-tensorboard"])
    model, card = load_model(outcome.path)
    assert model.scale == model.pack == 2 and card["config"]["diffusion"]["params"]["sf"] == 2
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert model.super_resolve(lq, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 32, 32)


def test_a_packed_model_made_x2_keeps_its_other_weights_and_starts_at_bicubic(tmp_path):
    source = finetune.resolve_options(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--init", "scratch",
                                       "--arch", "conv-tiny", "--mode", "packed", "--seed", "3"])
    x4, _ = finetune.build_model(source)
    path = save_model(x4, tmp_path / "x4.safetensors", make_card(x4, name="x4"))
    opts = finetune.resolve_options(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--init", str(path),
                                     "--scale", "2"])
    x2, origin = finetune.build_model(opts)
    assert x2.scale == 2 and "made x2" in origin and "unet.head" in origin and "unet.out" in origin
    kept = {k: v for k, v in x2.state_dict().items() if not k.startswith(("unet.head.", "unet.out."))}
    assert kept and all(torch.equal(v, x4.state_dict()[k]) for k, v in kept.items())
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = x2.super_resolve(lq, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.nn.functional.interpolate(lq, scale_factor=2, mode="bicubic").clamp(-1, 1),
                          atol=1e-6)
    opts.scale = 3
    with pytest.raises(ResShiftError, match="unknown scale 3"):
        finetune.build_model(opts)


def test_rollout_builds_x_t_from_the_models_own_first_estimate(tmp_path):
    """With --rollout, marked samples start from the x_0 the model predicts at the last step, others from the truth."""
    opts = finetune.resolve_options(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--init", "scratch",
                                     "--arch", "tiny", "--mode", "packed"])
    model, _ = finetune.build_model(opts)
    torch.nn.init.normal_(model.unet.out[-1].weight, std=0.1)  # a model that is not yet plain bicubic
    g = torch.Generator().manual_seed(0)
    hr, lq = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    t = torch.tensor([0, 1])
    noise, prior = (torch.randn(model.latent_shape(lq), generator=g) for _ in range(2))
    sched = model.schedule
    with torch.no_grad():
        z_y, z0 = model.condition(lq), model.encode(hr)
        last = torch.full_like(t, sched.steps - 1)
        guess = model.denoiser(lq)(diffusion.scale_input(sched, diffusion.prior_sample(sched, z_y, prior), last), last)
        x_t = model.loss(hr, lq, t, noise, rollout=torch.tensor([True, False]), prior_noise=prior)[3]
    assert torch.allclose(x_t[:1], diffusion.q_sample(sched, guess, z_y, t, noise)[:1], atol=1e-6)
    assert torch.equal(x_t[1:], diffusion.q_sample(sched, z0, z_y, t, noise)[1:])
    assert not torch.allclose(guess[:1], z0[:1], atol=1e-2)
    with pytest.raises(SystemExit):
        finetune.resolve_options(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--rollout", "1.5"])


def test_l1_loss_is_the_mean_absolute_error_of_the_same_prediction(tmp_path):
    """--loss l1 scores the very prediction the MSE objective scores, by |x_0 - prediction| instead of its square."""
    opts = finetune.resolve_options(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--init", "scratch",
                                     "--arch", "tiny", "--mode", "packed"])
    model, _ = finetune.build_model(opts)
    torch.nn.init.normal_(model.unet.out[-1].weight, std=0.1)
    g = torch.Generator().manual_seed(1)
    hr, lq = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    t, noise = torch.tensor([0, 3]), torch.randn(model.latent_shape(lq), generator=g)
    with torch.no_grad():
        mse, squared, pred, _, z0 = model.loss(hr, lq, t, noise)
        l1, absolute, pred_l1, _, _ = model.loss(hr, lq, t, noise, l1=True)
    assert torch.equal(pred, pred_l1)
    assert torch.allclose(absolute, (z0 - pred).abs().mean((1, 2, 3))) and torch.isclose(l1, absolute.mean())
    assert torch.allclose(squared, ((z0 - pred) ** 2).mean((1, 2, 3))) and not torch.isclose(l1, mse)


def test_chain_loss_scores_what_the_sampler_returns_and_trains_through_every_step(tmp_path):
    """--loss chain: the L1 of the very result super_resolve samples from the same draws, and its gradient reaches
    back through the chain to x_T (so every step, not only the last, learns from the result)."""
    opts = finetune.resolve_options(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--init", "scratch",
                                     "--arch", "tiny", "--mode", "packed", "--kappa", "0.002"])
    model, _ = finetune.build_model(opts)
    torch.nn.init.normal_(model.unet.out[-1].weight, std=0.01)
    g = torch.Generator().manual_seed(2)
    hr, lq = torch.rand(2, 3, 64, 64, generator=g) - 0.5, torch.rand(2, 3, 16, 16, generator=g) - 0.5
    draws = [torch.randn(model.latent_shape(lq), generator=g) for _ in range(model.schedule.steps)]
    with torch.no_grad():
        sampled = model.super_resolve(lq, noise=diffusion.recorded_noise(draws))
    assert sampled.abs().max() < 1  # nothing clamped, so the two must agree
    prior = draws[0].clone().requires_grad_(True)
    loss = model.chain_loss(hr, lq, [prior, *draws[1:]])
    assert torch.isclose(loss, (hr - sampled).abs().mean(), atol=1e-6)
    loss.backward()
    assert prior.grad is not None and prior.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.unet.parameters() if p.requires_grad)


@pytest.mark.parametrize("loss", ["l1", "chain"])
def test_rollout_and_other_losses_train_and_are_recorded_on_the_card(images, tmp_path, loss):
    outcome = finetune.train(["--data", str(images), "--run", str(tmp_path / "run"), "--init", "scratch",
                              "--arch", "tiny", "--mode", "packed", "--rollout", "1", "--crop", "64", "--batch", "4",
                              "--iterations", "2", "--val-fraction", "0", "--val-every", "0", "--no-tensorboard",
                              "--loss", loss])
    training = load_model(outcome.path)[1]["training"]
    assert training["rollout"] == 1.0 and training["loss"] == loss


def test_packing_cuts_large_planes_to_their_centre_and_keeps_the_rest_exact(tmp_path):
    """scripts/pack_training_data.py --max-side: TIFF and PNG planes cut to their centre, pixel for pixel; small
    files and JPEGs travel whole; files under --min-side stay behind."""
    src = tmp_path / "train" / "micro"
    src.mkdir(parents=True)
    stack = (np.arange(2 * 300 * 200) % 4093).astype(np.uint16).reshape(2, 300, 200)
    tifffile.imwrite(src / "stack.tif", stack, metadata={"axes": "ZYX"})
    photo = pattern(150, 260, phase=1)
    Image.fromarray(np.stack([photo] * 3, -1)).save(src / "photo.png")
    Image.fromarray(photo).save(src / "photo.jpg")
    Image.fromarray(photo[:40, :40]).save(src / "tiny.png")
    out = tmp_path / "packed.tar.gz"
    subprocess.run([sys.executable, "scripts/pack_training_data.py", str(tmp_path / "train"), str(out),
                    "--min-side", "64", "--max-side", "128"], cwd=ROOT, check=True, capture_output=True)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="data")
    got = unpacked / "train" / "micro"
    assert sorted(p.name for p in got.iterdir()) == ["photo.jpg", "photo.png", "stack.tif"]
    assert np.array_equal(tifffile.imread(got / "stack.tif"), stack[:, 86:214, 36:164])
    assert np.array_equal(np.asarray(Image.open(got / "photo.png"))[..., 0], photo[11:139, 66:194])
    assert (got / "photo.jpg").read_bytes() == (src / "photo.jpg").read_bytes()
