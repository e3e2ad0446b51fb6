"""The official v3 architecture through the CLI against the reference's procedure, side by side.

The v3 configuration (VQ-f4 autoencoder, UNetModelSwin, 4 steps) with seeded random weights is exported in the
official layout (``unet.pth``, ``autoencoder.pth``, ``config.yaml``) and then, per input size and round, run in a
fresh process each way:

- ``cli``: ``python -m pipelines.upscale_zarr`` with its defaults (tile, halo, batch, precision), OME-Zarr out;
- ``naive``: the reference CLI's procedure, written here from its description: 64 x 64 patches at stride 56, batch 1,
  fp32, outputs averaged where they overlap, this project's sampler per patch (``bench_pipeline.naive_loop``).

Both processes load the checkpoint, read and normalise the input; times are whole-process wall times, peak RSS is the
process's. Prints medians of ``--repeats`` rounds (the two take turns), the CLI/naive ratio, then each round's seconds.
Usage: python benchmarks/bench_official.py [--sizes 256,512] [--repeats 3] [--device auto]; --quick: 64x64, 1 round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_pipeline import NAIVE_CHOP, NAIVE_STRIDE, naive_loop, test_image  # noqa: E402

from napari_resshift.loading import save_official  # noqa: E402
from napari_resshift.model import ResShiftModel  # noqa: E402
from napari_resshift.registry import PRESETS, architecture  # noqa: E402
from napari_resshift.tiling import plan_tiles  # noqa: E402


def export_model(arch: str, directory: Path) -> Path:
    """Seeded random weights of ``arch`` (v3, or a size preset for a smoke test) in the official layout."""
    torch.manual_seed(0)
    config = PRESETS[arch].config if arch in PRESETS else architecture(arch)
    return save_official(ResShiftModel(config).eval(), directory)


def write_input(path: Path, size: int) -> None:
    import zarr

    zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(256, 256), dtype="uint16")[:] = test_image(size)


def naive_child(model: str, src: str, device: str) -> None:
    """The reference's procedure in this process; prints its tile count."""
    import zarr

    from napari_resshift.engine import Upscaler
    from napari_resshift.normalization import fit

    torch.set_num_threads(os.cpu_count() or 1)  # what the CLI sets for its one thread
    up = Upscaler(model, device=device, precision="fp32")
    image = zarr.open_array(src, mode="r")[:]
    norm = fit(image, mode="auto")
    lr = torch.from_numpy(norm.forward(image[None], channel_axis=0)[0]).float()[None].expand(3, -1, -1)
    out = naive_loop(up, lr).mean(0, keepdim=True)
    norm.inverse(out.numpy(), np.dtype("uint16"), channel_axis=0)
    print(json.dumps({"tiles": len(plan_tiles(*image.shape, tile=NAIVE_CHOP, overlap=NAIVE_CHOP - NAIVE_STRIDE))}))


def timed_process(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of one child process, reaped with os.wait4 for its own peak RSS."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=err,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{' '.join(args[:3])} failed:\n{err.read()}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def cli_tiles(output: Path, size: int) -> tuple[int, dict]:
    import zarr

    params = zarr.open_group(str(output), mode="r").attrs.asdict()["resshift"]["params"]
    return len(plan_tiles(size, size, tile=params["tile"], overlap=params["overlap"])), params


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,512", help="input sides in pixels (default 256,512)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="v3", help="v3 (default), or a size preset such as tiny for a smoke test")
    p.add_argument("--quick", action="store_true", help="64x64 input, 1 round")
    p.add_argument("--naive-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.naive_child:
        naive_child(*args.naive_child)
        return
    sizes = [64] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = export_model(args.arch, tmp / "official")
        print(f"# bench_official  arch: {args.arch} (seeded random weights, official layout)  device: {args.device}  "
              f"cores: {os.cpu_count()}  rounds: {repeats}")
        print("| input | procedure | tiles | tile (overlap) x batch | precision | median s | out-Mpx/s | peak RSS MB "
              "| vs naive |")
        print("|---|---|---|---|---|---|---|---|---|")
        rounds = []
        for size in sizes:
            src = tmp / f"in{size}.zarr"
            write_input(src, size)
            runs = {"naive": [], "cli": []}
            for r in range(repeats):
                runs["naive"].append(timed_process([__file__, "--naive-child", str(model), str(src), args.device]))
                out = tmp / f"out{size}_{r}.ome.zarr"
                runs["cli"].append(timed_process(["-m", "pipelines.upscale_zarr", str(src), "-o", str(out), "--model",
                                                  str(model), "--device", args.device, "--quiet", "--overwrite"]))
            naive_tiles = json.loads(runs["naive"][0][2].strip().splitlines()[-1])["tiles"]
            tiles, params = cli_tiles(out, size)
            mpx = (size * 4) ** 2 / 1e6
            naive_s = statistics.median(t for t, _, _ in runs["naive"])
            naive_tiling = f"{NAIVE_CHOP} ({NAIVE_CHOP - NAIVE_STRIDE}) x 1"
            rows = [("naive (chop 64, stride 56, batch 1)", naive_tiles, naive_tiling, "fp32", runs["naive"]),
                    ("cli (defaults)", tiles, f"{params['tile']} ({params['overlap']}) x {params['batch']}",
                     params["precision"], runs["cli"])]
            for name, n, tiling, precision, measured in rows:
                seconds = statistics.median(t for t, _, _ in measured)
                peak = max(m for _, m, _ in measured)
                print(f"| {size}x{size} | {name} | {n} | {tiling} | {precision} | {seconds:.1f} | {mpx / seconds:.4f} "
                      f"| {peak:.0f} | {naive_s / seconds:.2f}x |")
            rounds.append(f"{size}x{size} rounds, s: naive {[round(t, 1) for t, _, _ in runs['naive']]}, "
                          f"cli {[round(t, 1) for t, _, _ in runs['cli']]}")
        print("\n".join(rounds))


if __name__ == "__main__":
    main()
