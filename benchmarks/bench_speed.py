"""End-to-end speed of models side by side: an RGB uint8 image through ``Upscaler.upscale`` (normalise, tile, sample,
blend, convert back), the models taking turns in every round so that a drifting machine affects them alike.

``previous-clean`` is the architecture of the clean model shipped before the ConvDenoiser (UNetModelSwin, packed,
32 channels) with random weights: the same computation, so the same time. Ratios are against the first row. With
several ``--precision`` values each model runs at each (``auto`` resolved as the package resolves it: bf16 only on a
CPU with native bf16 and a passing calibration tile), and every output is compared with its model's fp32 output (PSNR
on the 8-bit result). Usage: python benchmarks/bench_speed.py [--models previous-clean clean default] [--size 256]
[--repeats 5] [--precision fp32 auto]
"""
import argparse
import os
import statistics
import time

import numpy as np
import torch

from napari_resshift import precision as precisions
from napari_resshift.engine import PRECISIONS, Upscaler
from napari_resshift.loading import make_card
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture

PREVIOUS_CLEAN_TILE = 256  # the previous clean model's card


def upscaler(name: str, device: str, precision: str) -> Upscaler:
    if name != "previous-clean":
        return Upscaler(name, device=device, precision=precision)
    torch.manual_seed(0)
    model = ResShiftModel(architecture("fast", mode="packed"))
    return Upscaler(model, card=make_card(model, name=name, tile=PREVIOUS_CLEAN_TILE), device=device,
                    precision=precision)


def psnr_8bit(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["previous-clean", "clean", "default"],
                   help="shipped model names, model paths or previous-clean")
    p.add_argument("--precision", nargs="+", default=["auto"], choices=PRECISIONS,
                   help="each model at each of these (default: auto)")
    p.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    p.add_argument("--tile", type=int, help="tile size for every model (default: each model's own)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    ups = {(name, prec): upscaler(name, args.device, prec) for name in args.models for prec in args.precision}
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    s = args.size * 4
    device = next(iter(ups.values())).device
    print(f"# bench_speed  device: {device}  cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
          f"native bf16: {'yes' if precisions.native_bf16() else 'no (emulated: auto stays fp32)'}")
    print(f"{args.size}x{args.size} RGB uint8 -> {s}x{s}, median of {args.repeats} rounds (models take turns)")
    times = {key: [] for key in ups}
    outputs = {key: up.upscale(image, tile=args.tile).image for key, up in ups.items()}  # warm-up, and the outputs
    for _ in range(args.repeats):
        for key, up in ups.items():
            start = time.perf_counter()
            up.upscale(image, tile=args.tile)
            times[key].append(time.perf_counter() - start)
    first = statistics.median(times[next(iter(ups))])
    print("| model | precision | tile (overlap) | steps | median s | min s | out-Mpx/s | vs first | vs own fp32 |"
          " dB from fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, prec), up in ups.items():
        med = statistics.median(times[name, prec])
        tile, overlap = up.tiling(tile=args.tile)
        fp32 = next((k for k in ups if k[0] == name and ups[k].precision == "fp32"), None)
        speedup = f"{statistics.median(times[fp32]) / med:.2f}x" if fp32 else "-"
        db = f"{psnr_8bit(outputs[name, prec], outputs[fp32]):.1f}" if fp32 and fp32 != (name, prec) else "-"
        print(f"| {name} | {prec} = {up.precision} | {tile} ({overlap}) | {up.model.schedule.steps} | {med:.2f} | "
              f"{min(times[name, prec]):.2f} | {s * s / 1e6 / med:.3f} | {med / first:.2f}x | {speedup} | {db} |")
    for prec in args.precision:
        if {("clean", prec), ("default", prec)} <= set(times):
            ratio = statistics.median(times["default", prec]) / statistics.median(times["clean", prec])
            print(f"default / clean at {prec}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
