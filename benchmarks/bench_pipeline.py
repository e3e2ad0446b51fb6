"""Benchmark of the out-of-core pipeline: throughput against a naive per-tile loop, peak RSS by image size, tile
invariance. ``python benchmarks/bench_pipeline.py [--model PATH]`` prints one table. ``--cli-size 4096 --precision
fp32 auto`` adds whole CLI runs on a uint16 mosaic at each precision: output megapixels per second and the share of
the wall time spent in the model (the rest: reading, normalising, noise, blending, writing, the pyramid).

``--model default`` measures the shipped model; without ``--model`` it uses a random model of
``architecture("small")``: speed and memory are those of that architecture, the pixel values mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_resshift import diffusion, outofcore, precision as precisions  # noqa: E402
from napari_resshift.engine import Upscaler  # noqa: E402
from napari_resshift.loading import make_card, save_model  # noqa: E402
from napari_resshift.model import ResShiftModel  # noqa: E402
from napari_resshift.registry import architecture  # noqa: E402

NAIVE_CHOP, NAIVE_STRIDE = 64, 56  # what the reference command line does: batch 1, plain averaging


def test_image(size: int, seed: int = 0) -> np.ndarray:
    from pipelines.example import mosaic

    return mosaic(size, size, seed=seed)


def naive_loop(upscaler: Upscaler, lr: torch.Tensor) -> torch.Tensor:
    """Every 64x64 patch at stride 56 through the model alone, outputs averaged where they overlap."""
    s = upscaler.scale
    _, h, w = lr.shape
    acc = torch.zeros(3, h * s, w * s)
    count = torch.zeros(1, h * s, w * s)
    g = torch.Generator().manual_seed(0)
    for y in outofcore_starts(h):
        for x in outofcore_starts(w):
            patch = lr[None, :, y:y + NAIVE_CHOP, x:x + NAIVE_CHOP]
            shape = upscaler.model.latent_shape(upscaler.model.pad(patch))
            out = upscaler.super_resolve(patch, noise=diffusion.generator_noise(shape, generator=g))[0]
            acc[:, y * s:(y + NAIVE_CHOP) * s, x * s:(x + NAIVE_CHOP) * s] += out
            count[:, y * s:(y + NAIVE_CHOP) * s, x * s:(x + NAIVE_CHOP) * s] += 1
    return acc / count


def outofcore_starts(n: int) -> list[int]:
    from napari_resshift.tiling import tile_starts

    return tile_starts(n, NAIVE_CHOP, NAIVE_STRIDE)


def pipeline_run(upscaler: Upscaler, image: np.ndarray, *, tile: int) -> np.ndarray:
    layout = outofcore.Layout("yx", image.shape, upscaler.scale, tile, upscaler.default_overlap(tile))
    norm = outofcore.fit_normalization(image, layout)
    out = np.zeros(layout.target_shape, image.dtype)
    outofcore.upscale_into(upscaler, image, out, layout, norm=norm, seed=0)
    return out


def throughput(upscaler: Upscaler, size: int) -> tuple[list[tuple[str, float, float]], float]:
    """Rows (method, seconds, out-Mpx/s) and the tile invariance: max |tile 128 - tile 256| in output units."""
    image = test_image(size)
    mpx = (size * upscaler.scale) ** 2 / 1e6
    lr = torch.from_numpy(image.astype(np.float32) / 32768 - 1)[None].expand(3, -1, -1)
    rows, outputs = [], []
    t = time.perf_counter()
    naive_loop(upscaler, lr)
    naive = time.perf_counter() - t
    rows.append(("naive loop (chop 64, stride 56)", naive, mpx / naive))
    for tile in dict.fromkeys((upscaler.default_tile, 64, 128, 256)):
        t = time.perf_counter()
        out = pipeline_run(upscaler, image, tile=tile).astype(np.float64)
        dt = time.perf_counter() - t
        if tile in (128, 256):
            outputs.append(out)
        auto = " = the model's default" if tile == upscaler.default_tile else ""
        rows.append((f"pipeline tile {tile} (overlap {upscaler.default_overlap(tile)}){auto}", dt, mpx / dt))
    return rows, float(np.abs(outputs[0] - outputs[1]).max())


def rss_child(model: str, src: str, out: str, side: int) -> None:
    """One CLI run on a full-size input of which only the top-left ``side`` x ``side`` output chunks are computed: the
    rest are marked finished (the resume path), so reading, normalisation, writing and the pyramid span the image."""
    import zarr

    from napari_resshift.outofcore import block_keys, chunk_key
    from pipelines import execute, upscale_zarr

    up = outofcore.cached_upscaler(model, device="cpu")
    layout = outofcore.Layout("yx", zarr.open_array(src, mode="r").shape, up.scale, *up.tiling())  # the CLI's tiling
    computed = {chunk_key(0, cy, cx) for cy in range(side) for cx in range(side)}
    skipped = {k for b in layout.blocks() for k in block_keys(b)} - computed
    original = execute.finished_keys
    execute.finished_keys = lambda output: original(output) | skipped
    code = upscale_zarr.main([src, "-o", out, "--model", model, "--quiet", "--levels", "3"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"code": code, "peak_mb": peak}))


def cli_child(model: str, src: str, out: str, precision: str) -> None:
    """One whole CLI run, timing the model's calls inside it (the local scheduler runs tasks in this process)."""
    from pipelines import upscale_zarr

    spent, used = [0.0], set()
    original = Upscaler.super_resolve

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start
            used.add(self.precision)

    Upscaler.super_resolve = timed
    start = time.perf_counter()
    code = upscale_zarr.main([src, "-o", out, "--model", model, "--quiet", "--precision", precision])
    print(json.dumps({"code": code, "wall": time.perf_counter() - start, "model": spent[0], "used": sorted(used)}))


def cli_runs(model: str, size: int, precisions: list[str], workdir: Path) -> list[dict]:
    src = workdir / f"cli{size}.zarr"
    write_input(src, size)
    rows = []
    for precision in precisions:
        proc = subprocess.run(
            [sys.executable, __file__, "--cli-child", model, str(src), str(workdir / f"cli_{precision}.ome.zarr"),
             precision], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        rows.append({"asked": precision, **json.loads(proc.stdout.strip().splitlines()[-1])})
    return rows


def write_input(path: Path, size: int) -> None:
    """The input written in bands, so that the parent never holds a big image either."""
    import zarr

    band = min(512, size)
    z = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(band, band), dtype="uint16")
    for y in range(0, size, band):
        z[y:y + band] = np.tile(test_image(band, seed=y), (1, size // band))


def peak_rss(model: str, sizes: list[int], chunks: int, workdir: Path) -> list[tuple[int, float, float]]:
    rows = []
    for size in sizes:
        src, out = workdir / f"in{size}.zarr", workdir / f"out{size}.zarr"
        write_input(src, size)
        t = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1))
        proc = subprocess.run(
            [sys.executable, __file__, "--rss-child", model, str(src), str(out), str(chunks)],
            capture_output=True, text=True, env=env, cwd=ROOT,
        )
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((size, result["peak_mb"], time.perf_counter() - t))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model file (default: a random model of architecture('small'))")
    p.add_argument("--size", type=int, default=256, help="throughput image side in input pixels (default 256)")
    p.add_argument("--rss-sizes", default="1024,4096,8192", help="input sides for the peak-RSS runs")
    p.add_argument("--rss-chunks", type=int, default=2, help="side of the square of output chunks computed per RSS run")
    p.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--cli-size", type=int, help="also time whole CLI runs on a mosaic of this side (e.g. 4096)")
    p.add_argument("--precision", nargs="+", default=["fp32", "auto"], help="precisions of the CLI runs")
    p.add_argument("--cli-only", action="store_true", help="only the CLI runs")
    p.add_argument("--cli-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        model, src, out, chunks = args.rss_child
        rss_child(model, src, out, int(chunks))
        return
    if args.cli_child:
        cli_child(*args.cli_child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        note = ""
        model = args.model
        if model is None:
            torch.manual_seed(0)
            m = ResShiftModel(architecture("small")).eval()
            model = str(save_model(m, tmp / "small.safetensors", make_card(m, name="small-random")))
            note = "model: random weights of architecture('small')"
        upscaler = Upscaler(model, device="cpu")
        print(f"# bench_pipeline  cpu cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  "
              f"native bf16: {'yes' if precisions.native_bf16() else 'no'}  {note}")
        if args.cli_size:
            size = args.cli_size * upscaler.scale
            print(f"\n## whole CLI runs, {args.cli_size}x{args.cli_size} uint16 -> {size}x{size}")
            print("| precision asked = used | wall s | out-Mpx/s | model s | model share |")
            print("|---|---|---|---|---|")
            for row in cli_runs(model, args.cli_size, args.precision, tmp):
                wall, spent = row["wall"], row["model"]
                print(f"| {row['asked']} = {'/'.join(row['used'])} | {wall:.1f} | {size * size / 1e6 / wall:.3f} | "
                      f"{spent:.1f} | {spent / wall:.0%} |")
        if args.cli_only:
            return
        print(f"\n## throughput, {args.size}x{args.size} uint16 -> x{upscaler.scale} (output megapixels / s)")
        print(f"{'method':44s} {'seconds':>8s} {'out-Mpx/s':>10s} {'vs naive':>9s}")
        rows, invariance = throughput(upscaler, args.size)
        for name, seconds, rate in rows:
            print(f"{name:44s} {seconds:8.1f} {rate:10.4f} {rate / rows[0][2]:8.2f}x")
        side = args.rss_chunks
        print(f"\n## peak RSS (full CLI run; top-left {side}x{side} output chunks computed, the rest resumed)")
        print(f"{'input':>12s} {'peak RSS MB':>12s} {'seconds':>8s}")
        sizes = [int(s) for s in args.rss_sizes.split(",")]
        rss = peak_rss(model, sizes, args.rss_chunks, tmp)
        for size, mb, seconds in rss:
            print(f"{f'{size}x{size}':>12s} {mb:12.0f} {seconds:8.1f}")
        peaks = [mb for _, mb, _ in rss]
        print(f"max/min = {max(peaks) / min(peaks):.2f} (target <= 1.3)")
        print(f"\ntile invariance: max |tile 128 - tile 256| = {invariance:.0f} uint16 output units "
              f"(of {np.iinfo(np.uint16).max}; same image)")


if __name__ == "__main__":
    main()
