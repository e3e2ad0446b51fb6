"""The default model and the official v3 architecture (seeded random weights) on one GPU, through the pipeline's loop.

Per model and input side (1k to 8k by default; uint16 gray, read from and written to zarr on disk, prefetch on as in
the CLI): output Mpx/s, device busy fraction (the model calls' time between CUDA events, over the wall time: what is
left is the device waiting for the host), CPU seconds per tile (the whole process's CPU time over the tiles), peak GPU
memory, the tile/overlap/batch and precision chosen, and the half-precision PSNR against fp32 that ``auto`` decides
on (``precision.half_psnr``). For v3 it also times the reference's naive loop (chop 64, stride 56, batch 1, fp32) on
the same GPU at the smallest size.
Usage: python benchmarks/bench_gpu.py [--sizes 1024,2048,4096,8192] [--models default,v3]
       python benchmarks/bench_gpu.py --quick   (small inputs on whatever device there is: checks the script)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_pipeline import naive_loop, test_image  # noqa: E402

from napari_resshift import outofcore, precision  # noqa: E402
from napari_resshift.engine import Upscaler  # noqa: E402
from napari_resshift.model import ResShiftModel  # noqa: E402
from napari_resshift.registry import PRESETS  # noqa: E402
from napari_resshift.tiling import plan_tiles  # noqa: E402


def load(name: str, device: str, precision_: str = "auto") -> Upscaler:
    if name == "v3":
        torch.manual_seed(0)
        return Upscaler(ResShiftModel(PRESETS["v3"].config), card={"name": "v3-random"}, device=device,
                        precision=precision_)
    return Upscaler(name, device=device, precision=precision_)


class BusyClock:
    """Wraps ``upscaler.super_resolve`` to add up the time its calls keep the device busy (CUDA events) or take
    (elsewhere: there the host is the device)."""

    def __init__(self, upscaler: Upscaler):
        self.seconds = 0.0
        self.calls = 0
        inner = upscaler.super_resolve
        cuda = upscaler.device.type == "cuda"

        def timed(*args, **kwargs):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = inner(*args, **kwargs)  # ends with a copy to the CPU: synchronised
                end.record()
                end.synchronize()
                self.seconds += start.elapsed_time(end) / 1000
            else:
                t = time.perf_counter()
                out = inner(*args, **kwargs)
                self.seconds += time.perf_counter() - t
            self.calls += 1
            return out

        upscaler.super_resolve = timed


def write_input(path: Path, size: int) -> None:
    import zarr

    z = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(512, 512), dtype="uint16")
    band = min(size, 512)
    for y in range(0, size, band):
        z[y:y + band] = np.tile(test_image(band, seed=y), (1, size // band))


def pipeline_run(up: Upscaler, src: Path, out: Path) -> dict:
    import zarr

    source = zarr.open_array(str(src), mode="r")
    tile, overlap = up.tiling()
    layout = outofcore.Layout("yx", source.shape, up.scale, tile, overlap, batch=up.batch(tile))
    norm = outofcore.fit_normalization(source, layout)
    target = zarr.open_array(str(out), mode="w", shape=layout.target_shape, chunks=layout.target_chunks,
                             dtype="uint16")
    clock = BusyClock(up)
    if up.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    outofcore.upscale_into(up, source, target, layout, norm=norm, prefetch=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del up.super_resolve  # back to the method
    tiles = len(plan_tiles(*source.shape, tile=tile, overlap=overlap))
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if up.device.type == "cuda" else float("nan")
    return {"wall": wall, "busy": clock.seconds / wall, "cpu_per_tile": cpu / tiles, "tiles": tiles,
            "mpx": (source.shape[0] * up.scale) * (source.shape[1] * up.scale) / 1e6, "gpu_mb": gpu_mb,
            "tiling": f"{tile} ({overlap}) x {layout.batch}"}


def naive_rate(device: str, size: int) -> float:
    """Output Mpx/s of the reference's loop for v3 in fp32 on ``device``."""
    up = load("v3", device, "fp32")
    lr = torch.from_numpy(test_image(size).astype(np.float32) / 32768 - 1)[None].expand(3, -1, -1)
    if up.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    naive_loop(up, lr)
    return (size * up.scale) ** 2 / 1e6 / (time.perf_counter() - t)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024,2048,4096,8192", help="input sides in pixels")
    p.add_argument("--models", default="default,v3")
    p.add_argument("--quick", action="store_true", help="128x128 (v3: 64x64) on any device, to check the script")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA GPU: nothing to measure here" + ("; --quick runs on the CPU to check the script" if args.quick
                                                      else "; run it on a GPU machine, or with --quick to check it"))
        if not args.quick:
            return
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    print(f"# bench_gpu  device: {name}  torch {torch.__version__}")
    print("| model | input | tiles | tile (overlap) x batch | precision | half PSNR dB | wall s | out-Mpx/s "
          "| device busy | CPU s/tile | peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rates = {}
        for model in models:
            up = load(model, device)
            psnr = "- (CPU: fp32)"
            if cuda:
                scores = precision.half_psnr(up.model, up.device, size=up.default_tile)
                psnr = ", ".join(f"{k} {v:.1f}" for k, v in scores.items())
            sizes = [64 if model == "v3" else 128] if args.quick else [int(s) for s in args.sizes.split(",")]
            for size in sizes:
                src = tmp / f"in{size}.zarr"
                if not src.exists():
                    write_input(src, size)
                r = pipeline_run(up, src, tmp / f"out_{model}_{size}.zarr")
                rates[(model, size)] = r["mpx"] / r["wall"]
                print(f"| {model} | {size}x{size} | {r['tiles']} | {r['tiling']} | {up.precision} | {psnr} | "
                      f"{r['wall']:.1f} | {rates[(model, size)]:.2f} | {r['busy']:.0%} | {r['cpu_per_tile']:.3f} | "
                      f"{r['gpu_mb']:.0f} |")
            del up
        if "v3" in models:
            size = 64 if args.quick else min(int(s) for s in args.sizes.split(","))
            naive = naive_rate(device, size)
            print(f"\nv3 naive loop (chop 64, stride 56, batch 1, fp32) at {size}x{size}: {naive:.4g} out-Mpx/s; "
                  f"the pipeline: {rates[('v3', size)]:.4g} ({rates[('v3', size)] / naive:.2f}x)")


if __name__ == "__main__":
    main()
