"""Training speed of the denoiser stage: iterations/s for fp32 vs bf16 autocast, eager vs torch.compile.

Usage: python benchmarks/bench_train.py [--arch small] [--mode latent] [--batch 4] [--crop 256] [--iterations 5]
Generated images only; the first --warmup steps of each variant (compilation included) are not timed.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_resshift.engine import pick_device  # noqa: E402
from napari_resshift.model import ResShiftModel  # noqa: E402
from napari_resshift.registry import architecture  # noqa: E402
from training import data  # noqa: E402
from training.stages import DenoiserStage  # noqa: E402
from training.trainer import Settings, Trainer  # noqa: E402


def synthetic_sampler(folder: Path, *, crop: int, micro_batch: int) -> data.CropSampler:
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:crop * 2, 0:crop * 2]
    image = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + 0.05 * rng.standard_normal(xx.shape)
    tifffile.imwrite(folder / "bench.tif", (image.clip(0, 1) * 4000).astype(np.uint16))
    pairs = data.load_pairs([folder / "bench.tif"], crop=crop, scale=4, norm="auto")
    return data.CropSampler(pairs, crop=crop, scale=4, micro_batch=micro_batch, degradation="bicubic", seed=0)


def measure(config: dict, sampler, *, precision: str, compiled: bool, device, iterations: int, warmup: int):
    torch.manual_seed(0)
    stage = DenoiserStage(ResShiftModel(config))
    settings = Settings(iterations=warmup + iterations, batch=sampler.micro_batch, precision=precision,
                        compile=compiled, ema=0.999)
    trainer = Trainer(stage, settings, sampler=sampler, val_items=[], device=device, run_dir=Path("."))
    batches = (sampler[k] for k in itertools.count())
    started = time.perf_counter()
    for _ in range(warmup):
        trainer.step(batches)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(iterations):
        trainer.step(batches)
    return iterations / (time.perf_counter() - started), setup


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="small")
    p.add_argument("--mode", default="latent", help="latent, pixel or packed (conv architectures: packed)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256, help="HR crop side")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default="fp32,bf16,fp32+compile,bf16+compile")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    config = architecture(args.arch, mode=args.mode)
    print(f"arch {args.arch} ({args.mode}), batch {args.batch} x {args.crop}px HR crops, device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        sampler = synthetic_sampler(Path(tmp), crop=args.crop, micro_batch=args.batch)
        baseline = None
        for variant in args.variants.split(","):
            precision, _, flag = variant.partition("+")
            rate, setup = measure(config, sampler, precision=precision, compiled=flag == "compile", device=device,
                                  iterations=args.iterations, warmup=args.warmup)
            baseline = baseline or rate
            lr_pixels = rate * args.batch * (args.crop // 4) ** 2 / 1000
            print(f"{variant:14s} {rate:7.3f} it/s  {rate * args.batch:7.2f} images/s  {lr_pixels:6.1f}k LR px/s  "
                  f"x{rate / baseline:4.2f}  "
                  f"(warmup {setup:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
