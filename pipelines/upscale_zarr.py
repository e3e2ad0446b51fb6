"""Command line: upscale a huge zarr / OME-Zarr / TIFF / PNG mosaic out of core into an OME-Zarr pyramid, resumably.

``python -m pipelines.upscale_zarr big.zarr`` (see --help). Errors print one ``error:`` line and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from napari_resshift import noise
from napari_resshift.engine import PRECISIONS
from napari_resshift.errors import ResShiftError, run_cli
from napari_resshift.outofcore import MIN_CHUNK, Layout, cached_upscaler, fit_normalization
from napari_resshift.normalization import Normalization

from . import execute, ome, readers
from .example import write_example

RESUME_KEYS = ("input_shape", "axes", "rgb", "model", "scale", "seed", "tile", "overlap", "dtype", "levels", "format",
               "noise")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.upscale_zarr",
        description="Upscale the Y and X axes of a large image out of core with ResShift, into an OME-Zarr pyramid. "
        "Single-channel planes (every c, z, t) go through the model alone, replicated to RGB, the output being the "
        "mean of the three; a YXC image with 3 channels, or 4 whose 4th is transparency, (or --rgb) goes through as "
        "RGB(A); a 4th band that is not transparency (e.g. near infrared) makes every channel go alone.",
    )
    p.add_argument("input", nargs="?", help="zarr array, OME-Zarr image (0.4/0.5), TIFF/OME-TIFF, PNG or JPEG")
    p.add_argument("-o", "--output", help="output OME-Zarr (default: INPUT_x4.ome.zarr next to the input)")
    p.add_argument("--model", default="default", help="a shipped model (default: real images with noise, blur or "
                   "JPEG; clean: clean, bicubic-like images) or a model file/folder (default: default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: fp32, or bf16/fp16 autocast on a CUDA GPU where its output on a calibration tile "
                        "stays at 40 dB PSNR or more from fp32's (default: auto)")
    p.add_argument("--tile", type=int, help="tile side in input pixels (default: the size the model was trained on)")
    p.add_argument("--chunk", type=int, default=MIN_CHUNK,
                   help=f"output chunk side in output pixels, rounded up to whole tile steps (default {MIN_CHUNK})")
    p.add_argument("--overlap", type=int, help="halo between tiles in input pixels (default: from the model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norm", default="auto", choices=("auto", "range", "percentile", "minmax"),
                   help="intensity normalisation: auto = full range for 8-bit, per-channel 0.01-99.99 percentiles else")
    p.add_argument("--dtype", help="output pixel type (default: the input's; values are clipped), e.g. float32")
    p.add_argument("--format", default="0.5", choices=tuple(ome.FORMATS), help="OME-Zarr version (default 0.5)")
    p.add_argument("--levels", type=int, default=3, help="pyramid levels, each 2x smaller (default 3)")
    p.add_argument("--axes", help="axis letters from 'tczyx' when the input has no metadata, e.g. zyx or yxc")
    p.add_argument("--rgb", action=argparse.BooleanOptionalAction, default=None,
                   help="treat the c axis as RGB(A) samples (default: yes for YXC inputs with 3 channels, or 4 whose 4th "
                        "is mostly fully clear or opaque)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run, computing only unfinished tiles")
    p.add_argument("--threads", type=int, default=1, help="threads of dask's local scheduler (default 1)")
    p.add_argument("--workers", type=int, help="start a dask LocalCluster of N worker processes")
    p.add_argument("--scheduler", help="run on an existing dask.distributed cluster, e.g. tcp://host:8786")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--example", metavar="PATH", help="write a small example mosaic (OME-Zarr) to PATH and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda _: run(args), argv, interrupted="interrupted; rerun with --resume to finish")


def run(args) -> int:
    if args.example:
        path = write_example(args.example, overwrite=args.overwrite)
        print(f"wrote {path}; now run: python -m pipelines.upscale_zarr {path}")
        return 0
    if not args.input:
        raise ResShiftError("no input given; pass a zarr, TIFF or PNG path (or --example PATH to make one)")
    if args.workers is not None and args.workers < 1 or args.threads < 1:
        raise ResShiftError("--workers and --threads must be at least 1")
    image = readers.open_input(args.input, axes=args.axes, rgb=args.rgb)
    output = Path(args.output) if args.output else default_output(Path(args.input))
    check_output_path(Path(args.input), output, overwrite=args.overwrite, resume=args.resume)
    upscaler = cached_upscaler(args.model, device=args.device, precision=args.precision)
    tile, overlap = upscaler.tiling(tile=args.tile, overlap=args.overlap)
    layout = Layout(
        image.axes, tuple(image.array.shape), upscaler.scale, tile, overlap, rgb=image.rgb,
        out_axes="".join(a for a in ome.OME_ORDER if a in image.axes), min_chunk=args.chunk, batch=upscaler.batch(tile),
    )
    fmt = ome.pick_format(args.format)
    params = run_params(args, image, layout, upscaler, fmt)
    if args.resume and output.exists():
        group, stored = reopen(output, params)
        if group is None:
            print(f"{output}: already complete; nothing to do")
            return 0
    else:
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        params["normalization"] = fit_normalization(image.array, layout, mode=args.norm).to_dict()
        report_nonfinite(image.array)
        check_disk(output, layout, params)
        # torch's thread count changes float rounding: a resume keeps the first run's, so its bits match
        cores = os.cpu_count() or 1
        params["torch_threads"] = 0 if args.scheduler else max(1, cores // (args.workers or args.threads))
        group = create_output(output, layout, params, fmt)
        stored = params
    # a resume keeps the first run's batch (it groups the tiles) and automatic precision (older outputs lack them)
    kept = ("normalization", "torch_threads", "batch") + (("precision",) if args.precision == "auto" else ())
    params |= {k: stored[k] for k in kept if k in stored}
    layout = dataclasses.replace(layout, batch=params["batch"])
    norm = Normalization.from_dict(params["normalization"])
    job = execute.Job(
        image.spec, str(output), layout, norm, args.seed, params["dtype"], args.model, args.device, params["precision"],
        threads=params["torch_threads"],
    )
    blocks = layout.blocks()
    done = execute.finished_keys(output)
    total = len(layout.planes()) * layout.grid[0] * layout.grid[1]
    from tqdm import tqdm

    with tqdm(total=total, initial=len(done), unit="tile", disable=args.quiet, dynamic_ncols=True) as bar:
        if args.workers or args.scheduler:
            execute.run_distributed(job, blocks, done, scheduler=args.scheduler, workers=args.workers or 1, bar=bar)
        else:
            execute.run_local(job, blocks, done, threads=args.threads, bar=bar)
    execute.build_pyramid(output, params["levels"])
    ms = ome.multiscales(
        layout.target_axes, levels=params["levels"], scale=params["output_scale"],
        translation=params["output_translation"], units=image.units, name=Path(args.input).name,
    )
    ome.mark_complete(group, fmt, ms, params)
    shutil.rmtree(output / execute.DONE_DIR, ignore_errors=True)
    if not args.quiet:
        shape = " x ".join(map(str, layout.target_shape))
        print(f"wrote {output} ({shape} {params['dtype']}, {params['levels']} levels)")
    return 0


def default_output(path: Path) -> Path:
    stem = path.name
    for suffix in (".zarr", ".ome", ".tiff", ".tif", ".btf", ".png", ".jpeg", ".jpg"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    return path.parent / f"{stem}_x4.ome.zarr"


def check_output_path(source: Path, output: Path, *, overwrite: bool, resume: bool) -> None:
    src, out = source.resolve(), output.resolve()
    if out == src or src in out.parents:
        raise ResShiftError(f"{output}: the output may not be the input or lie inside it; choose another path")
    if out in src.parents:
        raise ResShiftError(f"{output}: the output would contain the input; choose another path")
    if output.exists() and not (overwrite or resume):
        raise ResShiftError(f"{output}: already exists; add --overwrite to replace it or --resume to finish it")


def run_params(args, image, layout: Layout, upscaler, fmt) -> dict:
    """Everything needed to reproduce the run (stored in the output) and to check that a resume matches it."""
    import dask
    import torch
    import zarr

    import napari_resshift

    s = upscaler.scale
    in_scale = {a: float(image.scale.get(a, 1.0)) for a in layout.target_axes}
    in_translation = {a: float(image.translation.get(a, 0.0)) for a in layout.target_axes}
    out_scale = {a: in_scale[a] / s if a in "yx" else in_scale[a] for a in layout.target_axes}
    out_translation = {
        a: in_translation[a] - in_scale[a] * (s - 1) / (2 * s) if a in "yx" else in_translation[a]
        for a in layout.target_axes
    }
    hr_min = min(layout.height, layout.width) * s
    return {
        "input": str(Path(args.input).resolve()),
        "input_shape": list(layout.shape),
        "axes": layout.axes,
        "rgb": layout.rgb,
        "model": args.model,
        "model_name": upscaler.card.get("name", "custom"),
        "scale": s,
        "steps": upscaler.model.schedule.steps,
        "seed": args.seed,
        "tile": layout.tile,
        "overlap": layout.overlap,
        "batch": layout.batch,
        "noise": noise.GENERATOR,
        "dtype": np.dtype(args.dtype or image.array.dtype).name,
        "levels": max(1, min(args.levels, int(math.log2(hr_min)) + 1)),
        "format": fmt.version,
        "device": str(upscaler.device),
        "precision": upscaler.precision,
        "output_scale": out_scale,
        "output_translation": out_translation,
        "versions": {"napari_resshift": napari_resshift.__version__, "torch": torch.__version__,
                     "zarr": zarr.__version__, "dask": dask.__version__, "numpy": np.__version__},
    }


def reopen(output: Path, params: dict):
    """The group of an interrupted run and its stored parameters; (None, None) when it is already complete."""
    import zarr

    try:
        group = zarr.open_group(str(output), mode="r+")
        attrs = group.attrs.asdict()
    except Exception:  # noqa: BLE001 - whatever is there, it is not a run of ours
        raise ResShiftError(f"{output}: not an output of this pipeline; cannot resume it (use --overwrite)") from None
    status = ome.run_status(attrs)
    if status is None:
        raise ResShiftError(f"{output}: not an output of this pipeline; cannot resume it (use --overwrite)")
    if status == "complete":
        return None, None
    stored = attrs[ome.MARKER]["params"]
    changed = [k for k in RESUME_KEYS if stored.get(k) != params[k]]
    if changed:
        raise ResShiftError(
            f"{output}: was started with other settings ({', '.join(changed)}); rerun with them or use --overwrite"
        )
    return group, stored


def report_nonfinite(array) -> None:
    if np.dtype(array.dtype).kind != "f":
        return
    import dask.array as da

    lazy = da.from_array(array, chunks=getattr(array, "chunks", "auto"))
    count = int((~da.isfinite(lazy)).sum().compute())
    if count:
        print(f"warning: {count} NaN/Inf input values are set to the middle of the intensity range "
              "(0 in model units; +Inf/-Inf to its top/bottom)", file=sys.stderr)


def level_shapes(layout: Layout, levels: int) -> list[tuple[int, ...]]:
    shapes = [layout.target_shape]
    for _ in range(1, levels):
        shapes.append(tuple(n // 2 if a in "yx" else n for a, n in zip(layout.target_axes, shapes[-1])))
    return shapes


def check_disk(output: Path, layout: Layout, params: dict) -> None:
    """Refuse before starting when the uncompressed output cannot fit: compression only ever helps."""
    need = sum(math.prod(s) for s in level_shapes(layout, params["levels"])) * np.dtype(params["dtype"]).itemsize
    parent = output.resolve().parent
    if not parent.is_dir():
        raise ResShiftError(f"{parent}: the output's folder does not exist; create it first")
    free = shutil.disk_usage(parent).free
    if need > free:
        raise ResShiftError(
            f"{output}: needs up to {need / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free there; free space or "
            "choose another disk"
        )


def create_output(output: Path, layout: Layout, params: dict, fmt):
    import zarr

    group = zarr.open_group(str(output), mode="w", zarr_format=fmt.zarr_format)
    extra = {"dimension_names": list(layout.target_axes)} if fmt.zarr_format == 3 else {}
    for k, shape in enumerate(level_shapes(layout, params["levels"])):
        chunks = tuple(min(c, n) for c, n in zip(layout.target_chunks, shape))
        group.create_array(str(k), shape=shape, chunks=chunks, dtype=params["dtype"], fill_value=0, **extra)
    ome.mark_running(group, params)
    (output / execute.DONE_DIR).mkdir()
    return group


if __name__ == "__main__":
    sys.exit(main())
