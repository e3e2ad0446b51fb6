"""Core speed on the CPU for the real v3 configuration (random weights): 64x64 LQ -> 256x256, 4 steps.

Prints median times of the UNet forward, the encode, the decode and the full sample, with achieved GFLOP/s, for fp32
and bf16 autocast, and the bf16 output's PSNR against fp32. Usage: python benchmarks/bench_core.py [--repeats N]
"""
import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_resshift.engine import Upscaler
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import PRESETS


def timed(fn, repeats):
    fn()  # warm-up: oneDNN primitive creation, mask caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResShiftModel(PRESETS["v3"].config)
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    outputs = {}
    print(f"v3 configuration, random weights, 64x64 -> 256x256, 4 steps, CPU, {args.threads} threads")
    print(f"{'precision':<10}{'part':<14}{'median s':>10}{'GFLOP':>10}{'GFLOP/s':>10}")
    for precision in args.precisions.split(","):
        up = Upscaler(model, device="cpu", precision=precision)
        m = up.model
        x = lq.contiguous(memory_format=up.memory_format)
        z = torch.randn(1, 3, 64, 64).contiguous(memory_format=up.memory_format)
        t = torch.tensor([2])
        noise = lambda k: torch.randn(1, 3, 64, 64, generator=gen)  # noqa: E731
        parts = {
            "unet": lambda: m.unet(z, t, lq=x),
            "encode": lambda: m.condition(x),
            "decode": lambda: m.decode(z),
            "full sample": lambda: outputs.__setitem__(precision, up.super_resolve(lq, noise=noise)),
        }
        for name, fn in parts.items():
            with torch.inference_mode(), up.autocast():
                gen = torch.Generator().manual_seed(0)
                seconds = timed(fn, args.repeats)
                gen = torch.Generator().manual_seed(0)
                gflop = flops(fn) / 1e9
            print(f"{precision:<10}{name:<14}{seconds:>10.3f}{gflop:>10.1f}{gflop / seconds:>10.1f}")
    if "fp32" in outputs and "bf16" in outputs:
        mse = torch.mean((outputs["fp32"] - outputs["bf16"]) ** 2).item()
        psnr = 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-20))).item()
        print(f"bf16 vs fp32 output PSNR: {psnr:.1f} dB (range [-1, 1])")


if __name__ == "__main__":
    main()
