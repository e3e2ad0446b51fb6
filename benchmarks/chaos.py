"""Kill -9 the pipeline and the trainer at random points and check that every resume equals the uninterrupted run.

``python benchmarks/chaos.py --trials 10`` (the default model, a 256x256 uint16 input, tile 64) prints one row per
trial: where the kill landed (start-up, tiles, the pyramid, or a resume killed again), what the resume did, and
whether every pyramid level and the exported training weights are bit-identical. Then a batch (a folder of three
inputs) killed at a random moment, and a TIFF output killed while its final file is written, each resumed with
--resume and compared with its uninterrupted run (``--batch-trials``, ``--tiff-trials``, 5 each). ``--model tiny
--size 48 --tile 16 --trials 1 --train-trials 1 --batch-trials 1 --tiff-trials 1`` is a quick check (a random tiny
model, about a minute).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHASES = ("start-up", "tiles", "pyramid", "tiles, resume killed too")


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def start(module: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(module: str, *args) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env(), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{module} {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# -- the pipeline ---------------------------------------------------------------------------------------------------
def tiny_model(folder: Path) -> str:
    import torch

    from napari_resshift.loading import make_card, save_model
    from napari_resshift.model import ResShiftModel
    from napari_resshift.registry import architecture

    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    return str(save_model(model, folder / "tiny.safetensors", make_card(model, name="tiny")))


def make_input(path: Path, size: int) -> Path:
    import zarr

    yy, xx = np.mgrid[0:size, 0:size]
    data = (20000 + 15000 * np.sin(xx / 7.0) * np.cos(yy / 5.0)
            + np.random.default_rng(0).normal(0, 800, (size, size))).clip(0, 65535).astype(np.uint16)
    zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(64, 64), dtype="uint16")[:] = data
    return path


def state_of(out: Path) -> tuple[str, int]:
    """(status, finished chunks) of a pipeline output as a kill left it."""
    import zarr

    from pipelines import execute, ome

    if not out.exists():
        return "no output", 0
    done = out / execute.DONE_DIR
    count = len(list(done.iterdir())) if done.is_dir() else 0
    try:
        status = ome.run_status(zarr.open_group(str(out), mode="r").attrs.asdict()) or "no marker"
    except Exception:  # noqa: BLE001 - killed while the group itself was being created
        status = "no group"
    return status, count


def kill_pipeline(args: list, out: Path, *, phase: str, total: int, startup: float, rng: random.Random) -> str:
    """Start a run and SIGKILL it at a random point of ``phase``; returns where it landed."""
    from pipelines import execute

    first = state_of(out)[1] + 1  # a resume starts from the chunks already finished
    proc = start("pipelines.upscale_zarr", *args)
    began = time.monotonic()
    target = rng.randint(min(first, total - 1), max(1, total - 1))
    delay = rng.uniform(0.2, 1.1) * startup
    done = out / execute.DONE_DIR
    while proc.poll() is None:
        count = len(list(done.iterdir())) if done.is_dir() else 0
        if phase == "start-up" and time.monotonic() - began >= delay:
            break
        if phase == "pyramid" and count >= total:
            break
        if phase.startswith("tiles") and count >= target:
            break
        time.sleep(0.002)
    kill(proc)
    status, count = state_of(out)
    if status == "complete":
        return "after completion"
    return f"{status}, {count}/{total} chunks" + (" (pyramid)" if count == total else "")


def same_output(a: Path, b: Path) -> bool:
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    pa, pb = (g.attrs["resshift"]["params"] for g in (ga, gb))
    if pa["normalization"] != pb["normalization"] or pa["levels"] != pb["levels"]:
        return False
    return all(np.array_equal(ga[str(k)][:], gb[str(k)][:]) for k in range(pa["levels"]))


def pipeline_trials(work: Path, opts, rng: random.Random) -> list[dict]:
    import zarr

    src = make_input(work / "in.zarr", opts.size)
    flags = pipeline_flags(work, opts)
    reference = work / "reference.ome.zarr"
    proc, began = start("pipelines.upscale_zarr", src, "-o", reference, *flags), time.monotonic()
    while proc.poll() is None and not reference.exists():
        time.sleep(0.002)
    startup = time.monotonic() - began  # to the output's creation: what a start-up kill samples
    if proc.wait() != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{proc.stdout.read()}")
    params = zarr.open_group(str(reference), mode="r").attrs["resshift"]["params"]
    from napari_resshift.outofcore import Layout

    layout = Layout(params["axes"], tuple(params["input_shape"]), params["scale"], params["tile"],
                    params["overlap"], min_chunk=1)
    total = layout.grid[0] * layout.grid[1]
    rows = []
    for trial in range(opts.trials):
        phase = PHASES[trial % len(PHASES)]
        out = work / f"trial{trial}.ome.zarr"
        run = [src, "-o", out, *flags]
        landed = kill_pipeline(run, out, phase=phase, total=total, startup=startup, rng=rng)
        if phase.endswith("killed too") and landed != "after completion":
            landed += "; resume: " + kill_pipeline(run + ["--resume"], out, phase="tiles", total=total,
                                                   startup=startup, rng=rng)
        said = finish("pipelines.upscale_zarr", *run, "--resume").strip() or "finished the run"
        rows.append({"trial": trial + 1, "aimed at": phase, "killed at": landed, "resume": said[:40],
                     "identical": same_output(out, reference)})
        shutil.rmtree(out)
    return rows


def pipeline_flags(work: Path, opts) -> list:
    made = work / "tiny.safetensors"
    model = (str(made) if made.exists() else tiny_model(work)) if opts.model == "tiny" else opts.model
    return ["--model", model, "--chunk", "1", "--quiet", "--seed", "1"] + (["--tile", opts.tile] if opts.tile else [])


# -- a batch --------------------------------------------------------------------------------------------------------
BATCH = ("scan0.tif", "scan1.tif", "scan2.tif")


def batch_trials(work: Path, opts, rng: random.Random, flags: list) -> list[dict]:
    """A folder of three inputs killed at a random moment of its batch, then ``--resume``: every output must equal
    the uninterrupted batch's."""
    import tifffile

    folder = work / "batch-in"
    folder.mkdir()
    side = max(16, opts.size // 2)
    for k, name in enumerate(BATCH):
        yy, xx = np.mgrid[0:side, 0:side]
        data = 20000 + 15000 * np.sin(xx / (5.0 + k)) * np.cos(yy / 4.0)
        tifffile.imwrite(folder / name, (data + np.random.default_rng(k).normal(0, 800, data.shape)).astype(np.uint16))
    reference = work / "batch-reference"
    began = time.monotonic()
    finish("pipelines.upscale_zarr", folder, "-o", reference, *flags)
    took = time.monotonic() - began
    outputs = [n.replace(".tif", "_x4.ome.zarr") for n in BATCH]
    rows = []
    for trial in range(opts.batch_trials):
        out = work / f"batch{trial}"
        proc = start("pipelines.upscale_zarr", folder, "-o", out, *flags)
        time.sleep(rng.uniform(0.15, 0.95) * took)
        kill(proc)
        states = [state_of(out / name) for name in outputs]
        landed = ", ".join("done" if s == "complete" else "-" if s == "no output" else f"{n} chunks"
                           for s, n in states)
        said = finish("pipelines.upscale_zarr", folder, "-o", out, *flags, "--resume").strip()
        said = f"{said.count('already complete')} complete, {len(outputs) - said.count('already complete')} run"
        same = all(same_output(out / name, reference / name) for name in outputs)
        rows.append({"trial": trial + 1, "aimed at": "anywhere in the batch", "killed at": f"outputs: {landed}",
                     "resume": said, "identical": same})
        shutil.rmtree(out)
    return rows


# -- a TIFF output --------------------------------------------------------------------------------------------------
def same_tiff(a: Path, b: Path) -> bool:
    """Every level's pixels and the recorded run settings (normalisation included) equal."""
    import tifffile

    from pipelines import tiff_output

    with tifffile.TiffFile(a) as ta, tifffile.TiffFile(b) as tb:
        la, lb = ta.series[0].levels, tb.series[0].levels
        pixels = len(la) == len(lb) and all(np.array_equal(x.asarray(), y.asarray()) for x, y in zip(la, lb))
    return pixels and tiff_output.read_marker(a) == tiff_output.read_marker(b)


def tiff_trials(work: Path, opts, rng: random.Random, src: Path, flags: list) -> list[dict]:
    """A TIFF output killed while its final file is written (its ``.partial`` on disk), then ``--resume``."""
    from pipelines import batch, tiff_output

    reference = work / "reference.tif"
    proc = start("pipelines.upscale_zarr", src, "-o", reference, *flags)
    seen = None
    while proc.poll() is None:
        if seen is None and tiff_output.partial_path(reference).exists():
            seen = time.monotonic()
        time.sleep(0.0005)
    if proc.wait() != 0:
        raise SystemExit(f"the uninterrupted TIFF run failed:\n{proc.stdout.read()}")
    writing = time.monotonic() - seen if seen else 0.0  # how long the final write lasts
    rows = []
    for trial in range(opts.tiff_trials):
        out = work / f"trial{trial}.tif"
        partial = tiff_output.partial_path(out)
        proc = start("pipelines.upscale_zarr", src, "-o", out, *flags)
        while proc.poll() is None and not partial.exists():
            time.sleep(0.0002)
        time.sleep(rng.uniform(0, 0.8) * writing)
        kill(proc)
        landed = ("in the final write" if partial.exists() else "after completion" if out.exists()
                  else "before the final write")
        said = finish("pipelines.upscale_zarr", src, "-o", out, *flags, "--resume").strip() or "wrote the TIFF"
        left = partial.exists() or batch.staging_path(out).exists()
        rows.append({"trial": trial + 1, "aimed at": "the TIFF's final write", "killed at": landed,
                     "resume": said[:40] + (", left files" if left else ""),
                     "identical": same_tiff(out, reference) and not left})
        out.unlink()
    return rows


# -- the trainer ----------------------------------------------------------------------------------------------------
def training_images(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(3):
        yy, xx = np.mgrid[0:96, 0:96]
        rgb = np.stack([128 + 100 * np.sin(xx / (3 + i + c) + yy / 5.0) for c in range(3)], -1)
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


def train_args(images: Path, run: Path, iterations: int) -> list:
    return ["--data", images, "--run", run, "--init", "scratch", "--arch", "tiny", "--mode", "packed", "--crop", "64",
            "--batch", "2", "--iterations", iterations, "--checkpoint-every", "1", "--val-every", "0",
            "--val-fraction", "0", "--log-every", "1", "--no-tensorboard", "--seed", "1"]


def weights(run: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(run / "model.safetensors"))


def training_trials(work: Path, opts, rng: random.Random) -> list[dict]:
    images = training_images(work / "images")
    reference = work / "train-reference"
    finish("training.finetune", *train_args(images, reference, opts.iterations))
    expected = weights(reference)
    rows = []
    for trial in range(opts.train_trials):
        run = work / f"train{trial}"
        args = train_args(images, run, opts.iterations)
        target = rng.randint(0, opts.iterations - 1)  # 0: before the first checkpoint
        proc = start("training.finetune", *args)
        for line in proc.stdout:
            if target == 0 and line.startswith("data:") or line.startswith(f"checkpoint: iteration {target}"):
                time.sleep(rng.uniform(0, 0.5))  # somewhere in the next step
                break
        kill(proc)
        from training import checkpoint

        saved = run / "checkpoint.pt"
        at = checkpoint.load(saved)["iteration"] if saved.exists() else None
        if at is None:  # what the refusal of --resume says to do
            finish("training.finetune", *args)
            how = "no checkpoint yet: started again"
        else:
            finish("training.finetune", "--resume", run)
            how = f"--resume from iteration {at}"
        got = weights(run)
        same = got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)
        rows.append({"trial": trial + 1, "aimed at": f"after checkpoint {target}", "killed at": how,
                     "resume": "exported", "identical": same})
    return rows


def table(title: str, rows: list[dict]) -> list[dict]:
    print(f"\n{title}: {sum(r['identical'] for r in rows)}/{len(rows)} identical", flush=True)
    if not rows:
        return rows
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r[k]).ljust(widths[k]) for k in keys), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10, help="pipeline kills (default 10)")
    p.add_argument("--train-trials", type=int, default=3, help="trainer kills (default 3)")
    p.add_argument("--batch-trials", type=int, default=5, help="kills of a batch of three inputs (default 5)")
    p.add_argument("--tiff-trials", type=int, default=5, help="kills in a TIFF output's final write (default 5)")
    p.add_argument("--model", default="default", help="a model for the pipeline, or tiny: a random tiny one")
    p.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    p.add_argument("--tile", type=int, default=64, help="tile side (default 64: many chunks to kill between)")
    p.add_argument("--iterations", type=int, default=4, help="training iterations (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    opts = p.parse_args(argv)
    rng = random.Random(opts.seed)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        work = Path(tmp)
        # each table as soon as its trials are done: a long run shows what it has so far
        pipe = table("pipeline (kill -9, then --resume)", pipeline_trials(work, opts, rng))
        flags = pipeline_flags(work, opts)
        several = table("batch of three inputs (kill -9, then --resume)", batch_trials(work, opts, rng, flags))
        tiff = table("TIFF output, killed in its final write (kill -9, then --resume)",
                     tiff_trials(work, opts, rng, work / "in.zarr", flags))
        train = table("training (kill -9, then --resume)", training_trials(work, opts, rng))
    return 0 if all(r["identical"] for r in pipe + several + tiff + train) else 1


if __name__ == "__main__":
    sys.exit(main())
