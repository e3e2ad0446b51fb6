"""x4 quality per domain: bicubic, Lanczos and a ResShift model on held-out HR images, PSNR / SSIM table.

LR = antialiased bicubic 1/4 of the HR (or, with --degradation, another training degradation seeded per image); RGB is
scored on Y with a 4-pixel border cropped, every other channel alone on the normalised intensities. Usage:
  python benchmarks/bench_quality.py natural=runs/split/val/natural microscopy=runs/split/val/microscopy [--model M]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from napari_resshift.engine import Upscaler
from napari_resshift.errors import ResShiftError
from training import metrics
from training.data import check_source, find_images, open_source
from training.degradations import DEGRADATIONS

SCALE = 4
BORDER = 4


def lanczos(lr: torch.Tensor) -> torch.Tensor:
    """[C, h, w] in [0, 1] -> [C, 4h, 4w], PIL's Lanczos per channel on float images."""
    out = [
        np.asarray(Image.fromarray(c.numpy().astype(np.float32), mode="F").resize(
            (c.shape[1] * SCALE, c.shape[0] * SCALE), Image.Resampling.LANCZOS))
        for c in lr
    ]
    return torch.from_numpy(np.stack(out)).clamp(0, 1)


def crops(path: Path, *, size: int):
    """(name, HR [C, H, W] in [0, 1], rgb) for the middle plane of each channel group, centre-cropped."""
    source = check_source(open_source(path), min_size=SCALE * 8, norm="auto")
    plane = source.planes // 2
    h = min(size, source.height) // SCALE * SCALE
    w = min(size, source.width) // SCALE * SCALE
    y, x = (source.height - h) // 2, (source.width - w) // 2
    for group in source.groups:
        hr = torch.from_numpy(source.normalised(plane, group, y, x, h, w)) * 0.5 + 0.5
        yield f"{path.name}[{group[0]}:{group[1]}]", hr, group[1] - group[0] == 3


def super_resolve(upscaler: Upscaler, lr: torch.Tensor, rgb: bool, tile: int | None = None) -> torch.Tensor:
    x = lr * 2 - 1
    if rgb:
        return upscaler.upscale_plane(x, seed=0, tile=tile) * 0.5 + 0.5
    out = [upscaler.upscale_plane(c[None].expand(3, -1, -1), seed=0, plane=i, tile=tile).mean(0)
           for i, c in enumerate(x)]
    return torch.stack(out) * 0.5 + 0.5


def evaluate(domain: str, folder: Path, upscaler: Upscaler | None, *, size: int, tile: int | None = None,
             degradation: str = "bicubic") -> dict:
    scores = {m: {"psnr": [], "ssim": []} for m in ("bicubic", "lanczos", "resshift")}
    seconds = []
    for i, path in enumerate(find_images(folder)):
        try:
            items = list(crops(path, size=size))
        except ResShiftError as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            continue
        generator = torch.Generator().manual_seed(i)  # the same LR for every model
        for name, hr, rgb in items:
            lr = DEGRADATIONS[degradation](hr, SCALE, generator).clamp(0, 1)
            results = {
                "bicubic": F.interpolate(lr[None], scale_factor=SCALE, mode="bicubic")[0].clamp(0, 1),
                "lanczos": lanczos(lr),
            }
            if upscaler is not None:
                start = time.perf_counter()
                results["resshift"] = super_resolve(upscaler, lr, rgb, tile).clamp(0, 1)
                seconds.append(time.perf_counter() - start)
            for method, out in results.items():
                scores[method]["psnr"].append(metrics.psnr(out[None], hr[None], rgb=rgb, border=BORDER).item())
                scores[method]["ssim"].append(metrics.ssim(out[None], hr[None], rgb=rgb, border=BORDER).item())
    table = {m: {k: statistics.fmean(v) for k, v in s.items()} for m, s in scores.items() if s["psnr"]}
    return {"domain": domain, "images": len(scores["bicubic"]["psnr"]), "scores": table, "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="DOMAIN=FOLDER of HR images")
    p.add_argument("--model", default="default", help="model path, or 'default' (the shipped model), or 'none'")
    p.add_argument("--size", type=int, default=512, help="HR centre crop per image (pixels)")
    p.add_argument("--tile", type=int, help="LR tile size (default: the model's)")
    p.add_argument("--degradation", default="bicubic", choices=tuple(DEGRADATIONS),
                   help="how LR is made from HR (default bicubic: clean, antialiased; the others seeded per image)")
    p.add_argument("--json", help="also write the table to this JSON file (scripts/ship_default.py reads it)")
    args = p.parse_args(argv)
    upscaler = None if args.model == "none" else Upscaler(args.model, device="cpu")
    rows = []
    for item in args.folders:
        domain, _, folder = item.partition("=")
        rows.append(evaluate(domain, Path(folder), upscaler, size=args.size, tile=args.tile,
                             degradation=args.degradation))
    tiling = "no model" if upscaler is None else "tile %d, overlap %d" % upscaler.tiling(tile=args.tile)
    lr_kind = "antialiased-bicubic LR" if args.degradation == "bicubic" else f"{args.degradation}-degraded LR"
    print(f"\nx4, {lr_kind}, HR centre crops <= {args.size}px, {tiling}, model: {args.model}")
    print(f"| domain | images | method | PSNR (dB) | SSIM | vs bicubic |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        base = row["scores"]["bicubic"]["psnr"]
        for method, s in row["scores"].items():
            print(f"| {row['domain']} | {row['images']} | {method} | {s['psnr']:.2f} | {s['ssim']:.4f} | "
                  f"{s['psnr'] - base:+.2f} |")
    times = [t for row in rows for t in row["seconds"]]
    if times:
        print(f"\nmodel time per image (median): {statistics.median(times):.2f} s")
    if args.json:
        summary = {"benchmark": f"benchmarks/bench_quality.py, x4 {lr_kind}, HR centre crops <= "
                                f"{args.size} px", "model": args.model, "tiling": tiling,
                   "domains": {r["domain"]: {"images": r["images"], **r["scores"]} for r in rows}}
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
