"""What each step of the sampling chain adds: PSNR of every step's x_0 estimate against the HR, per domain.

The first step's estimate is what a one-step model of the same network would give; the last is the sampler's output.
Usage: python benchmarks/bench_chain.py natural=runs/split/val/natural ... [--models clean default] [--lr bicubic]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from bench_quality import BORDER, crops, make_lr
from napari_resshift import diffusion
from napari_resshift.engine import Upscaler
from training import metrics
from training.data import find_images


@torch.inference_mode()
def step_scores(up: Upscaler, lr: torch.Tensor, hr: torch.Tensor, rgb: bool) -> list[float]:
    """PSNR of the x_0 estimate after each step, for one crop (gray crops go through as RGB, scored on the mean)."""
    model = up.model
    x = (lr if rgb else lr.mean(0, keepdim=True).expand(3, -1, -1))[None] * 2 - 1
    padded = model.pad(x)
    noise = diffusion.generator_noise(model.latent_shape(padded), generator=torch.Generator().manual_seed(0))
    estimates = []
    model.super_resolve(x, noise=noise, callback=lambda d: estimates.append(d["pred_x0"]))
    scores = []
    for z in estimates:
        out = (model.decode(z)[..., : hr.shape[-2], : hr.shape[-1]].clamp(-1, 1) + 1) / 2
        out = out if rgb else out.mean(1, keepdim=True)
        scores.append(metrics.psnr(out, hr[None], rgb=rgb, border=BORDER).item())
    return scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="DOMAIN=FOLDER of HR images")
    p.add_argument("--models", nargs="+", default=["default"])
    p.add_argument("--lr", default="bicubic", help="bicubic, blind, own or a degradation name (see bench_quality)")
    p.add_argument("--size", type=int, default=256, help="HR centre crop per image (pixels), one tile")
    args = p.parse_args(argv)
    print(f"x4, {args.lr} LR, HR centre crops <= {args.size} px: mean PSNR (dB) of each step's x_0 estimate")
    for name in args.models:
        up = Upscaler(name, device="cpu")
        for item in args.folders:
            domain, _, folder = item.partition("=")
            rows = []
            for i, path in enumerate(find_images(Path(folder))):
                for _, hr, rgb in crops(path, size=args.size):
                    channels = [hr] if rgb else [c[None] for c in hr]
                    for c in channels:
                        lr = make_lr(c, domain=domain, lr_kind=args.lr, generator=torch.Generator().manual_seed(i))
                        rows.append(step_scores(up, lr, c, rgb))
            means = [statistics.fmean(r[k] for r in rows) for k in range(len(rows[0]))]
            steps = " | ".join(f"{m:.2f}" for m in means)
            print(f"| {name} | {domain} | {len(rows)} | {steps} | last - first {means[-1] - means[0]:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
