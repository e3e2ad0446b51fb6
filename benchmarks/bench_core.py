"""Core speed on the CPU for the real v3 configuration (random weights): 64x64 LQ -> 256x256, 4 steps.

Prints median times of the UNet forward, the encode, the decode and the full sample, with achieved GFLOP/s, for fp32
and bf16 autocast, and the bf16 output's PSNR against fp32. Usage: python benchmarks/bench_core.py [--repeats N]
``--profile``: one fp32 full sample under torch.profiler instead, the operators that take the time (by self CPU
time) and the share spent in operators that do no counted FLOPs (copies, layout changes, elementwise, norms).
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


# operators whose FLOPs torch's counter counts: the rest is overhead around them
COUNTED = ("conv", "mm", "matmul", "linear", "addmm", "bmm", "baddbmm", "scaled_dot_product")


def profile(up: Upscaler, lq: torch.Tensor, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    gen = torch.Generator().manual_seed(0)
    noise = lambda k: torch.randn(1, 3, 64, 64, generator=gen)  # noqa: E731
    up.super_resolve(lq, noise=noise)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        up.super_resolve(lq, noise=noise)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{'operator':<36}{'calls':>8}{'self ms':>10}{'share':>8}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]:
        print(f"{e.key[:35]:<36}{e.count:>8}{e.self_cpu_time_total / 1e3:>10.1f}{e.self_cpu_time_total / total:>8.1%}")
    overhead = sum(e.self_cpu_time_total for e in events if not any(k in e.key for k in COUNTED))
    print(f"operators without counted FLOPs: {overhead / total:.1%} of {total / 1e6:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResShiftModel(PRESETS["v3"].config)
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    if args.profile:
        print(f"v3 configuration, random weights, 64x64 -> 256x256, 4 steps, fp32, CPU, {args.threads} threads")
        profile(Upscaler(model, device="cpu", precision="fp32"), lq)
        return
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
