"""End-to-end speed of models side by side: an RGB uint8 image through ``Upscaler.upscale`` (normalise, tile, sample,
blend, convert back), the models taking turns in every round so that a drifting machine affects them alike.

``previous-clean`` is the architecture of the clean model shipped before the ConvDenoiser (UNetModelSwin, packed,
32 channels) with random weights: the same computation, so the same time. Ratios are against the first model.
Usage: python benchmarks/bench_speed.py [--models previous-clean clean default] [--size 256] [--repeats 5]
"""
import argparse
import os
import statistics
import time

import numpy as np
import torch

from napari_resshift.engine import Upscaler
from napari_resshift.loading import make_card
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture

PREVIOUS_CLEAN_TILE = 256  # the previous clean model's card


def upscaler(name: str, device: str) -> Upscaler:
    if name != "previous-clean":
        return Upscaler(name, device=device)
    torch.manual_seed(0)
    model = ResShiftModel(architecture("fast", mode="packed"))
    return Upscaler(model, card=make_card(model, name=name, tile=PREVIOUS_CLEAN_TILE), device=device)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["previous-clean", "clean", "default"],
                   help="shipped model names, model paths or previous-clean")
    p.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    p.add_argument("--tile", type=int, help="tile size for every model (default: each model's own)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    ups = {name: upscaler(name, args.device) for name in args.models}
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    s = args.size * 4
    device = next(iter(ups.values())).device
    print(f"# bench_speed  device: {device}  cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}")
    print(f"{args.size}x{args.size} RGB uint8 -> {s}x{s}, median of {args.repeats} rounds (models take turns)")
    times = {name: [] for name in ups}
    for up in ups.values():
        up.upscale(image, tile=args.tile)  # warm-up: oneDNN primitives, window masks
    for _ in range(args.repeats):
        for name, up in ups.items():
            start = time.perf_counter()
            up.upscale(image, tile=args.tile)
            times[name].append(time.perf_counter() - start)
    first = statistics.median(times[args.models[0]])
    print(f"| model | tile (overlap) | steps | median s | min s | out-Mpx/s | vs {args.models[0]} |")
    print("|---|---|---|---|---|---|---|")
    for name, up in ups.items():
        med = statistics.median(times[name])
        tile, overlap = up.tiling(tile=args.tile)
        print(f"| {name} | {tile} ({overlap}) | {up.model.schedule.steps} | {med:.2f} | {min(times[name]):.2f} | "
              f"{s * s / 1e6 / med:.3f} | {med / first:.2f}x |")
    if {"clean", "default"} <= set(times):
        ratio = statistics.median(times["default"]) / statistics.median(times["clean"])
        print(f"default / clean: {ratio:.2f}x")


if __name__ == "__main__":
    main()
