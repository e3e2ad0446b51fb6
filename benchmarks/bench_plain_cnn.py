"""The yardstick of the clean model: a plain CNN trained here for minutes, scored like the models by bench_quality.

A 48-channel, 8-layer CNN at the LR size, pixel-shuffle x4 on a bicubic skip, L1 loss, Adam with a cosine, 16 crops
of 96 px of clean bicubic LR (the recipe of the issue that set the clean model's targets). Usage:
  python benchmarks/bench_plain_cnn.py --data runs/split192/train/natural --iterations 28700 \
      natural=runs/split/val/natural microscopy=runs/split/val/microscopy satellite=runs/split/val/satellite
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import SCALE, evaluate  # noqa: E402
from training.data import CropSampler, find_images, load_pairs  # noqa: E402


class PlainCNN(nn.Module):
    def __init__(self, channels: int = 48, layers: int = 8):
        super().__init__()
        widths = [3] + [channels] * (layers - 1)
        body = []
        for a, b in zip(widths, widths[1:]):
            body += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body, nn.Conv2d(channels, 3 * SCALE**2, 3, padding=1))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(lq, scale_factor=SCALE, mode="bicubic")
        return skip + F.pixel_shuffle(self.body(lq), SCALE)


class AsUpscaler:
    """What bench_quality's evaluation calls of a model: ``upscale_plane`` on [3, h, w] in [-1, 1]."""

    def __init__(self, net: nn.Module):
        self.net = net.eval()

    @torch.no_grad()
    def upscale_plane(self, x: torch.Tensor, **_) -> torch.Tensor:
        return self.net(x[None])[0]


def train(folders: list[Path], *, iterations: int, batch: int, crop: int, lr: float, seed: int) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    files = [f for folder in folders for f in find_images(folder)]
    pairs = load_pairs(files, crop=crop, scale=SCALE, norm="auto")
    sampler = CropSampler(pairs, crop=crop, scale=SCALE, micro_batch=batch, degradation="bicubic", seed=seed)
    net = PlainCNN()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    for k in range(iterations):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / iterations))
        b = sampler[k]
        loss = F.l1_loss(net(b["lq"]), b["hr"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k % 2000 == 0:
            print(f"iteration {k}: L1 {loss.item():.4f}, {time.perf_counter() - start:.0f} s", flush=True)
    return net, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="DOMAIN=FOLDER of held-out HR images")
    p.add_argument("--data", nargs="+", type=Path, required=True, help="training folders")
    p.add_argument("--iterations", type=int, default=28700)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=512, help="HR centre crop per held-out image (pixels)")
    args = p.parse_args(argv)
    net, seconds = train(args.data, iterations=args.iterations, batch=args.batch, crop=args.crop, lr=args.lr, seed=0)
    print(f"\nplain CNN: {args.iterations} iterations of {args.batch}x{args.crop} px in {seconds / 60:.1f} min "
          f"({args.iterations / seconds:.1f} it/s, {torch.get_num_threads()} threads)")
    print("| domain | images | bicubic | Lanczos | plain CNN | vs bicubic |")
    print("|---|---|---|---|---|---|")
    for item in args.folders:
        domain, _, folder = item.partition("=")
        row = evaluate(domain, Path(folder), {"cnn": AsUpscaler(net)}, size=args.size)
        s = row["scores"]
        print(f"| {domain} | {row['images']} | {s['bicubic']['psnr']:.2f} | {s['lanczos']['psnr']:.2f} | "
              f"{s['cnn']['psnr']:.2f} | {s['cnn']['psnr'] - s['bicubic']['psnr']:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
