"""End-to-end speed of a model on this machine: an RGB uint8 image through ``Upscaler.upscale`` (normalise, tile,
sample, blend, convert back), median of several runs, for the model's own tiling and any others asked for.

Usage: python benchmarks/bench_speed.py [--model default] [--size 256] [--tiles 64,128] [--repeats 5]
"""
import argparse
import os
import statistics
import time

import numpy as np
import torch

from napari_resshift.engine import Upscaler


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model path or preset (default: the shipped model)")
    p.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    p.add_argument("--tiles", default="", help="extra tile sizes to time, comma-separated")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    up = Upscaler(args.model, device=args.device)
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    tiles = [None] + [int(t) for t in args.tiles.split(",") if t]
    s = args.size * up.scale
    print(f"# bench_speed  model: {args.model}  device: {up.device}  cores: {os.cpu_count()}  "
          f"torch threads: {torch.get_num_threads()}")
    print(f"{args.size}x{args.size} RGB uint8 -> {s}x{s}, {up.model.schedule.steps} steps, median of {args.repeats}")
    print(f"{'tile (overlap)':<22}{'median s':>10}{'min s':>8}{'out-Mpx/s':>11}")
    for tile in tiles:
        t, overlap = up.tiling(tile=tile)
        up.upscale(image, tile=t, overlap=overlap)  # warm-up: oneDNN primitives, window masks
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            up.upscale(image, tile=t, overlap=overlap)
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        label = f"{t} ({overlap})" + (" default" if tile is None else "")
        print(f"{label:<22}{med:>10.2f}{min(times):>8.2f}{s * s / 1e6 / med:>11.3f}")


if __name__ == "__main__":
    main()
