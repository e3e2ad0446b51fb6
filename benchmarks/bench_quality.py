"""x4 (or --scale 2) quality per domain: bicubic, Lanczos and a ResShift model on held-out HR images, PSNR / SSIM table.

LR = antialiased bicubic 1/4 of the HR, or (--lr) each domain's blind real-world mixture, its mild end or another
training degradation, seeded per image; RGB is scored on Y with a 4-pixel border cropped, every other channel alone
on the normalised intensities. Each table is per domain and, below it, per source (the folder below a domain's
folder, or the name before ``__`` of a file of the split by files). Usage:
  python benchmarks/bench_quality.py natural=runs/split/val/natural microscopy=runs/split/val/microscopy \
      satellite=runs/split/val/satellite --models clean default --lr bicubic blind mild
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
from napari_resshift.registry import OFFICIAL_SCALE
from training import metrics
from training.data import check_source, find_images, open_source
from training.degradations import DEGRADATIONS, DOMAIN_DEGRADATIONS

SCALE = OFFICIAL_SCALE  # the default; --scale 2 for x2 models
BORDER = 4


def lanczos(lr: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """[C, h, w] in [0, 1] -> [C, scale h, scale w], PIL's Lanczos per channel on float images."""
    out = [
        np.asarray(Image.fromarray(c.numpy().astype(np.float32), mode="F").resize(
            (c.shape[1] * scale, c.shape[0] * scale), Image.Resampling.LANCZOS))
        for c in lr
    ]
    return torch.from_numpy(np.stack(out)).clamp(0, 1)


def crops(path: Path, *, size: int, scale: int = SCALE):
    """(name, HR [C, H, W] in [0, 1], rgb) for the middle plane of each channel group, centre-cropped."""
    source = check_source(open_source(path), min_size=scale * 8, norm="auto")
    plane = source.planes // 2
    h = min(size, source.height) // scale * scale
    w = min(size, source.width) // scale * scale
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


def source_of(path: Path, folder: Path) -> str:
    """The source an image comes from: its first folder below ``folder``, else its name's part before ``__``."""
    rel = path.relative_to(folder)
    return rel.parts[0] if len(rel.parts) > 1 else path.name.partition("__")[0] if "__" in path.name else path.stem


def make_lr(hr: torch.Tensor, *, domain: str, lr_kind: str, generator: torch.Generator,
            scale: int = SCALE) -> torch.Tensor:
    """LR of an HR crop: ``blind`` is the domain's blind mixture, ``mild`` its mild end, ``own`` the domain's
    degradation alone, any other name a training degradation (``bicubic``: clean, antialiased)."""
    name = {"blind": f"blind-{domain}", "mild": f"mild-{domain}",
            "own": DOMAIN_DEGRADATIONS.get(domain)}.get(lr_kind, lr_kind)
    if name not in DEGRADATIONS:
        raise ResShiftError(f"--lr {lr_kind}: no such degradation for domain {domain!r}; name the domains "
                            f"{', '.join(DOMAIN_DEGRADATIONS)} or give a degradation ({', '.join(DEGRADATIONS)})")
    return DEGRADATIONS[name](hr, scale, generator).clamp(0, 1)


def evaluate(domain: str, folder: Path, upscalers: dict[str, Upscaler], *, size: int, tile: int | None = None,
             lr_kind: str = "bicubic", scale: int = SCALE) -> dict:
    """Mean PSNR / SSIM of bicubic, Lanczos and every model on one domain's images, all on the same LR; and the
    mean PSNR of each per source."""
    methods = ("bicubic", "lanczos", *upscalers)
    scores = {m: {"psnr": [], "ssim": []} for m in methods}
    seconds = {m: [] for m in upscalers}
    sources = []
    for i, path in enumerate(find_images(folder)):
        try:
            items = list(crops(path, size=size, scale=scale))
        except ResShiftError as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            continue
        generator = torch.Generator().manual_seed(i)  # seeded per image: the same LR for every method
        for name, hr, rgb in items:
            lr = make_lr(hr, domain=domain, lr_kind=lr_kind, generator=generator, scale=scale)
            results = {
                "bicubic": F.interpolate(lr[None], scale_factor=scale, mode="bicubic")[0].clamp(0, 1),
                "lanczos": lanczos(lr, scale),
            }
            for method, upscaler in upscalers.items():
                start = time.perf_counter()
                results[method] = super_resolve(upscaler, lr, rgb, tile).clamp(0, 1)
                seconds[method].append(time.perf_counter() - start)
            for method, out in results.items():
                scores[method]["psnr"].append(metrics.psnr(out[None], hr[None], rgb=rgb, border=BORDER).item())
                scores[method]["ssim"].append(metrics.ssim(out[None], hr[None], rgb=rgb, border=BORDER).item())
            sources.append(source_of(path, folder))
    table = {m: {k: statistics.fmean(v) for k, v in s.items()} for m, s in scores.items() if s["psnr"]}
    by_source = {
        source: {"images": sources.count(source),
                 **{m: statistics.fmean(p for p, s in zip(v["psnr"], sources) if s == source)
                    for m, v in scores.items()}}
        for source in sorted(set(sources))
    }
    return {"domain": domain, "images": len(scores["bicubic"]["psnr"]), "scores": table, "seconds": seconds,
            "sources": by_source}


LR_KINDS = {"bicubic": "clean antialiased-bicubic LR", "blind": "LR made by each domain's blind mixture",
            "mild": "LR made by the mild end of each domain's degradation",
            "own": "LR made by each domain's degradation alone"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="DOMAIN=FOLDER of HR images (domains: natural, microscopy, satellite)")
    p.add_argument("--models", nargs="*", default=["default"],
                   help="shipped model names or model paths, NAME=PATH to label one (default: default); none "
                        "given: the baselines alone")
    p.add_argument("--lr", nargs="+", default=["bicubic"], metavar="KIND",
                   help="how LR is made from HR, one table each: bicubic (clean), blind (the domain's blind mixture), "
                        "mild (its mild end), own (the domain's degradation alone) or a degradation name "
                        f"({', '.join(DEGRADATIONS)}); "
                        "seeded per image")
    p.add_argument("--kappa", nargs="+", type=float, default=[], help="also score each model sampled at these noise "
                   "scales (rows NAME@kappa=K)")
    p.add_argument("--size", type=int, default=512, help="HR centre crop per image (pixels)")
    p.add_argument("--scale", type=int, default=SCALE, help=f"the models' scale (default {SCALE})")
    p.add_argument("--tile", type=int, help="LR tile size (default: each model's)")
    p.add_argument("--json", help="also write the tables to this JSON file (scripts/ship_model.py reads it)")
    args = p.parse_args(argv)
    upscalers = {}
    for entry in args.models:  # NAME=PATH labels a model file
        name, _, spec = entry.rpartition("=")
        upscalers[name or spec] = Upscaler(spec, device="cpu")
        if upscalers[name or spec].scale != args.scale:
            p.error(f"{spec} is a x{upscalers[name or spec].scale} model; bench it with --scale "
                    f"{upscalers[name or spec].scale}")
        for kappa in args.kappa:
            upscalers[f"{name or spec}@kappa={kappa:g}"] = other = Upscaler(spec, device="cpu")
            other.model.set_kappa(kappa)
    summary = {"benchmark": f"benchmarks/bench_quality.py, x{args.scale}, HR centre crops <= {args.size} px",
               "tiling": {n: "tile %d, overlap %d" % u.tiling(tile=args.tile) for n, u in upscalers.items()},
               "tables": {}}
    for lr_kind in args.lr:
        rows = []
        for item in args.folders:
            domain, _, folder = item.partition("=")
            rows.append(evaluate(domain, Path(folder), upscalers, size=args.size, tile=args.tile, lr_kind=lr_kind,
                                 scale=args.scale))
        print(f"\nx{args.scale}, {LR_KINDS.get(lr_kind, lr_kind + '-degraded LR')}, HR centre crops <= {args.size} px, "
              f"{'; '.join(f'{n}: {t}' for n, t in summary['tiling'].items()) or 'no model'}")
        print("| domain | images | method | PSNR (dB) | SSIM | vs bicubic |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            base = row["scores"]["bicubic"]["psnr"]
            for method, sc in row["scores"].items():
                print(f"| {row['domain']} | {row['images']} | {method} | {sc['psnr']:.2f} | {sc['ssim']:.4f} | "
                      f"{sc['psnr'] - base:+.2f} |")
        print("\n| domain | source | images | " + " | ".join(f"{m} vs bicubic" for m in ("lanczos", *upscalers))
              + " |")
        print("|---|---|---|" + "---|" * (1 + len(upscalers)))
        for row in rows:
            for source, sc in row["sources"].items():
                print(f"| {row['domain']} | {source} | {sc['images']} | "
                      + " | ".join(f"{sc[m] - sc['bicubic']:+.2f}" for m in ("lanczos", *upscalers)) + " |")
        for method in upscalers:
            times = [t for row in rows for t in row["seconds"][method]]
            if times:
                print(f"{method}: model time per image (median) {statistics.median(times):.2f} s")
        summary["tables"][lr_kind] = {r["domain"]: {"images": r["images"], **r["scores"]} for r in rows}
        summary.setdefault("sources", {})[lr_kind] = {r["domain"]: r["sources"] for r in rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
