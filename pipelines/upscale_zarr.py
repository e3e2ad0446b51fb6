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

from napari_resshift import noise, placement
from napari_resshift.engine import DEVICE_WORDS, PRECISIONS
from napari_resshift.errors import ArgumentParser, ResShiftError, reported, run_cli
from napari_resshift.loading import check_spec, model_names
from napari_resshift.outofcore import MIN_CHUNK, Layout, cached_upscaler, fit_normalization
from napari_resshift.normalization import NORM_MODES, Normalization

from . import batch, checks, execute, geotiff, ome, readers, storage, tiff_output
from .example import write_example

IMAGE_SUFFIXES = (".zarr", ".ome", ".tiff", ".tif", ".btf", ".png", ".jpeg", ".jpg")  # stripped from output names


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m pipelines.upscale_zarr",
        description="Upscale the Y and X axes of a large image out of core with ResShift, into an OME-Zarr pyramid. "
        "Single-channel planes (every c, z, t) go through the model alone, replicated to RGB, the output being the "
        "mean of the three; a YXC image with 3 channels, or 4 whose 4th is transparency, (or --rgb) goes through as "
        "RGB(A); a 4th band that is not transparency (e.g. near infrared) makes every channel go alone.",
    )
    p.add_argument("input", nargs="?", help="zarr array, OME-Zarr image (0.4/0.5), TIFF/OME-TIFF/GeoTIFF, PNG or JPEG; "
                   "or a folder or quoted glob of them, each upscaled on its own")
    p.add_argument("-o", "--output", help="output: an OME-Zarr (.ome.zarr), or a tiled BigTIFF (.tif), georeferenced "
                   "like a GeoTIFF input; a folder for a folder or glob of inputs (default: INPUT_x4.ome.zarr next "
                   "to each input)")
    p.add_argument("--model", default="default", help=f"a model name, {model_names()}; or a model file or folder: "
                   "a .safetensors of training.finetune, or a folder holding an official model's published .pth "
                   "files (default: default, for real images with noise, blur or JPEG; clean: for clean images)")
    p.add_argument("--device", default="auto", help=f"{DEVICE_WORDS} (default: auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: fp32, or bf16/fp16 autocast on a CUDA GPU (bf16 for a latent model on a CPU with "
                        "native bf16) where its output on a calibration tile stays at 40 dB PSNR or more from "
                        "fp32's (default: auto)")
    p.add_argument("--tile", type=int, help="tile side in input pixels (default: the size the model was trained on)")
    p.add_argument("--chunk", type=int, default=MIN_CHUNK,
                   help=f"output chunk side in output pixels, rounded up to whole tile steps (default {MIN_CHUNK})")
    p.add_argument("--overlap", type=int, help="halo between tiles in input pixels (default: from the model)")
    p.add_argument("--steps", type=int, help="diffusion sampling steps (default: the model's own; the shipped models "
                   "take only their 4, official models 2 or more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norm", default="auto", choices=NORM_MODES,
                   help="intensity normalisation: auto = full range for 8-bit, per-channel 0.01-99.99 percentiles else")
    p.add_argument("--dtype", help="output pixel type (default: the input's; values are clipped), e.g. float32")
    p.add_argument("--format", choices=tuple(ome.FORMATS),
                   help=f"OME-Zarr version of an OME-Zarr output (default {ome.DEFAULT_FORMAT})")
    p.add_argument("--levels", type=int, default=3, help="pyramid levels, each 2x smaller (default 3)")
    p.add_argument("--axes", help="axis letters from 'tczyx' when the input has no metadata, e.g. zyx or yxc")
    p.add_argument("--rgb", action=argparse.BooleanOptionalAction, default=None,
                   help="treat the c axis as RGB(A) samples (default: yes for YXC inputs with 3 channels, or 4 whose 4th "
                        "is mostly fully clear or opaque)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output of this pipeline (only those)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run, computing only unfinished tiles")
    p.add_argument("--threads", type=int, default=1, help="tasks at once in dask's local scheduler (default 1)")
    p.add_argument("--workers", type=int, help="start a dask LocalCluster of N worker processes")
    p.add_argument("--torch-threads", type=int, help="torch threads per task, recorded in the output: the result "
                   "depends on it and on nothing of --threads, --workers, --chunk or --scheduler (default: the "
                   "machine's cores; with --threads or --workers N, cores / N avoids oversubscription)")
    p.add_argument("--missing-chunks", choices=("refuse", "fill"), default="refuse",
                   help="a zarr input's chunks that are not stored: refuse (default) or read them as the fill value")
    p.add_argument("--scheduler", help="run on an existing dask.distributed cluster, e.g. tcp://host:8786")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec options of s3:// gs:// az:// http(s):// inputs "
                   "and outputs beyond the standard environment and profiles, e.g. '{\"anon\": true}' (one object "
                   "for all, or one per scheme: '{\"s3\": {...}, \"https\": {...}}')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--example", metavar="PATH", help="write a small example mosaic (OME-Zarr) to PATH and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda _: guarded(args), argv, interrupted="interrupted; rerun with --resume to finish")


def guarded(args) -> int:
    """``dispatch``, with a failure of object storage said in its own words and never a credential in a message."""
    try:
        args.storage = storage.parse_options(getattr(args, "storage_options", None))
        return dispatch(args)
    except Exception as exc:  # noqa: BLE001 - only rewords; anything else is raised as it was
        said = storage.one_line(exc, next((p for p in (args.output, args.input) if storage.is_url(p)), None))
        if said is exc:
            raise
        raise said from None


def where(args, value):
    """A path or URL argument as a location (``storage.RemotePath`` with the run's --storage-options for a URL)."""
    return storage.path(value, getattr(args, "storage", None) or storage.Options())


def dispatch(args) -> int:
    """A folder or glob of inputs one file at a time, each resumable; a TIFF output through a staging OME-Zarr."""
    if args.example or not args.input or not batch.is_batch(args.input):
        return run_to(args, args.input, where(args, args.output) if args.output else None)
    checks.check_arguments(args)  # once for all inputs, before any is read
    sources = batch.batch_inputs(where(args, args.input))
    folder = batch.output_folder(where(args, args.output) if args.output else None)
    check_spec(args.model)
    scale = load(args).scale  # a model that cannot load fails once, before any input
    targets = batch.unique_outputs(sources, [default_output(s, scale=scale) for s in sources], folder)
    failed = []
    for k, (source, target) in enumerate(zip(sources, targets), 1):
        if not args.quiet:
            print(f"[{k}/{len(sources)}] {source}")
        try:
            run_to(args, source if storage.is_url(source) else str(source), target)
        except (ResShiftError, OSError) as exc:  # one input's problem: the others are still upscaled
            failed.append((source, exc))
    batch.check_failed(failed, len(sources))
    return 0


def run_to(args, source, output: Path | None) -> int:
    """``run`` for one input into an OME-Zarr, or into a TIFF written from the finished OME-Zarr."""
    one = argparse.Namespace(**vars(args) | {"input": source, "output": output})
    if output is None or args.example or batch.output_kind(output) == "zarr":
        return run(one)
    if storage.is_url(output):
        raise ResShiftError(f"{output}: a TIFF cannot be written into object storage (it is written whole at the end); "
                            "name the output .ome.zarr, or write the TIFF to a local disk")
    checks.check_arguments(one)
    check_output_path(where(args, source), output, overwrite=args.overwrite, resume=args.resume)
    if output.exists() and args.resume:
        checks.check_own(output, action="resume")  # it is replaced once its intermediate is finished
    staging = batch.staging_path(output)
    if staging.exists() and not (args.resume or args.overwrite):
        raise ResShiftError(f"{output}: an interrupted run left {staging.name} beside it; add --resume to finish it "
                            "or --overwrite to start again")
    finished = args.resume and output.exists() and not staging.exists()
    one.output = staging
    run(one, tiff=output)
    if finished:
        return 0
    tiff_output.write_tiff(staging, output)
    shutil.rmtree(staging)  # this run's own intermediate, now in the TIFF
    if not args.quiet:
        print(f"wrote {output}")
    return 0


def run(args, *, tiff: Path | None = None) -> int:
    """One input into the OME-Zarr ``args.output``; with ``tiff``, that OME-Zarr is the intermediate of this TIFF
    output (already finished when it exists alone under --resume: then only its settings are compared)."""
    if args.example:
        path = write_example(args.example, overwrite=args.overwrite)
        print(f"wrote {path}; now run: python -m pipelines.upscale_zarr {path}")
        return 0
    if not args.input:
        raise ResShiftError("no input given; pass a zarr, TIFF or PNG path (or --example PATH to make one)")
    checks.check_arguments(args)
    check_spec(args.model)
    image = readers.open_input(where(args, args.input), axes=args.axes, rgb=args.rgb)
    upscaler = load(args)
    output = where(args, args.output) if args.output else default_output(where(args, args.input), scale=upscaler.scale)
    check_output_path(where(args, args.input), output, overwrite=args.overwrite, resume=args.resume)
    missing = checks.check_stored_chunks(image, args.input, fill=args.missing_chunks == "fill")
    tile, overlap = upscaler.tiling(tile=args.tile, overlap=args.overlap)
    layout = Layout(
        image.axes, tuple(image.array.shape), upscaler.scale, tile, overlap, rgb=image.rgb,
        out_axes="".join(a for a in ome.OME_ORDER if a in image.axes), min_chunk=args.chunk, batch=upscaler.batch(tile),
    )
    fmt = ome.pick_format(args.format or ome.DEFAULT_FORMAT)
    params = run_params(args, image, layout, upscaler, fmt) | {"missing_chunks": missing,
                                                                "torch_threads": args.torch_threads}
    if tiff is not None and args.resume and tiff.exists() and not output.exists():
        checks.check_resumable(tiff, params)
        print(f"{tiff}: already complete with these settings; nothing to do")
        return 0
    resuming = args.resume and output.exists()
    if resuming:
        group, stored = reopen(output, params)
        if group is None:
            print(f"{output}: already complete with these settings; nothing to do")
            return 0
    else:
        with reported(f"{args.input}: cannot be read", hint="; is the input complete?"):
            params["normalization"] = fit_normalization(image.array, layout, mode=args.norm).to_dict()
            report_nonfinite(image.array)
        check_disk(output, layout, params, tiff=tiff)
        # torch's thread count changes float rounding: one fixed count per task, whatever runs them, so that
        # --threads, --workers and a resume give the same bits
        params["torch_threads"] = args.torch_threads or os.cpu_count() or 1
        stored = params
    # a resume keeps the first run's batch (it groups the tiles) and automatic precision (older outputs lack them)
    kept = ("normalization", "torch_threads", "batch") + (("precision",) if args.precision == "auto" else ())
    params |= {k: stored[k] for k in kept if k in stored}
    layout = dataclasses.replace(layout, batch=params["batch"])
    with execute.connect(scheduler=args.scheduler, workers=args.workers) as client:  # before the output is touched
        if not resuming:
            if output.exists():
                storage.remove_tree(output)  # checked to be an output of ours
            group = create_output(output, layout, params, fmt)
        return finish(args, image, output, group, layout, params, fmt, client)


def finish(args, image, output: Path, group, layout: Layout, params: dict, fmt, client) -> int:
    """Compute the unfinished chunks, build the pyramid, then mark the output complete."""
    norm = Normalization.from_dict(params["normalization"])
    job = execute.Job(
        image.spec, output if storage.is_url(output) else str(output), layout, norm, args.seed, params["dtype"], args.model, args.device, params["precision"],
        threads=params["torch_threads"], steps=args.steps,
    )
    blocks = layout.blocks()
    done = execute.finished_keys(output)
    total = len(layout.planes()) * layout.grid[0] * layout.grid[1]
    from tqdm import tqdm

    stopped = reported(f"{output}: upscaling stopped", hint="; the output stays unfinished: fix the cause (the input "
                       "or the disk) and rerun with --resume")
    with stopped, tqdm(total=total, initial=len(done), unit="tile", disable=args.quiet, dynamic_ncols=True) as bar:
        if client is not None:
            execute.run_distributed(job, blocks, done, client=client, bar=bar)
        else:
            execute.run_local(job, blocks, done, threads=args.threads, bar=bar)
        execute.build_pyramid(output, params["levels"])
    ms = ome.multiscales(
        layout.target_axes, levels=params["levels"], scale=params["output_scale"],
        translation=params["output_translation"], units=image.units,
        name=f"{image.name or input_stem(where(args, args.input))} x{layout.scale}",
    )
    count = layout.target_shape[layout.target_axes.index("c")] if "c" in layout.target_axes else 1
    channels = image.channels if len(image.channels) == count else []
    omero = channels and ome.omero(channels, low=norm.low, high=norm.high, dtype=params["dtype"])
    geo = image.geo and geotiff.upscaled(image.geo, layout.scale)
    ome.mark_complete(group, fmt, ms, params, omero=omero or None, geo=geo)
    storage.remove_tree(output / execute.DONE_DIR, missing_ok=True)
    if not args.quiet:
        shape = " x ".join(map(str, layout.target_shape))
        print(f"wrote {output} ({shape} {params['dtype']}, {params['levels']} levels)")
    return 0


def load(args):
    """This process's model for the run (tasks load their own through the same cache)."""
    return cached_upscaler(args.model, device=args.device, precision=args.precision, steps=args.steps)


def input_stem(path: Path) -> str:
    """``scan`` for scan.ome.tif, demo.zarr, scan.png: the input's name without its image suffixes."""
    stem = path.name
    while suffix := next((s for s in IMAGE_SUFFIXES if stem.lower().endswith(s) and len(stem) > len(s)), None):
        stem = stem[: -len(suffix)]
    return stem


def default_output(path: Path, *, scale: int) -> Path:
    return path.parent / f"{input_stem(path)}_x{scale}.ome.zarr"


def check_output_path(source: Path, output: Path, *, overwrite: bool, resume: bool) -> None:
    src, out = source.resolve(), output.resolve()
    if out == src or src in out.parents:
        raise ResShiftError(f"{output}: the output may not be the input or lie inside it; choose another path")
    if out in src.parents:
        raise ResShiftError(f"{output}: the output would contain the input; choose another path")
    if output.exists() and not (overwrite or resume):
        raise ResShiftError(f"{output}: already exists; add --overwrite to replace it or --resume to finish it")
    if output.exists() and overwrite and not resume:
        checks.check_replaceable(output)
    if storage.is_url(output):
        storage.check_writable(output)  # object stores need no folder, only a bucket that takes a write
        return
    parent = out.parent
    if not parent.is_dir():
        raise ResShiftError(f"{parent}: the output's folder does not exist; create it first")
    checks.check_writable(output if resume and output.is_dir() else parent)


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
        a: in_translation[a] + in_scale[a] * placement.hr_offset(s) if a in "yx" else in_translation[a]
        for a in layout.target_axes
    }
    hr_min = min(layout.height, layout.width) * s
    return {
        "input": str(where(args, args.input).resolve()),  # a URL without its credentials
        "input_id": readers.input_identity(image.spec),
        "input_shape": list(layout.shape),
        "axes": layout.axes,
        "rgb": layout.rgb,
        **upscaler.record(seed=args.seed, tile=layout.tile, overlap=layout.overlap),
        "model": args.model,  # what to load again: the name or path given (the record's name is the card's)
        "model_name": upscaler.card.get("name", "custom"),
        "batch": layout.batch,
        "noise": noise.GENERATOR,
        "dtype": np.dtype(args.dtype or image.array.dtype).name,
        "levels": max(1, min(args.levels, int(math.log2(hr_min)) + 1)),
        "format": fmt.version,
        "output_scale": out_scale,
        "output_translation": out_translation,
        "versions": {"napari_resshift": napari_resshift.__version__, "torch": torch.__version__,
                     "zarr": zarr.__version__, "dask": dask.__version__, "numpy": np.__version__},
    }


def reopen(output: Path, params: dict):
    """The group of an interrupted run and its stored parameters; (None, None) when it is already complete. Either
    way the stored settings must be the ones asked for now."""
    import zarr

    status, stored = checks.check_resumable(output, params)
    if status == "complete":
        return None, None
    (output / execute.DONE_DIR).mkdir(exist_ok=True)  # a kill right after the marker leaves no folder yet
    return zarr.open_group(storage.zarr_store(output, read_only=False), mode="r+"), stored


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


def check_disk(output: Path, layout: Layout, params: dict, *, tiff: Path | None = None) -> None:
    """Refuse before starting when the uncompressed output cannot fit: compression only ever helps. A TIFF output
    lies beside its intermediate OME-Zarr until it is written: both count."""
    if storage.is_url(output):
        return  # an object store tells no free space: a full one fails at the first write, said in one line
    need = sum(math.prod(s) for s in level_shapes(layout, params["levels"])) * np.dtype(params["dtype"]).itemsize
    need *= 2 if tiff is not None else 1
    free = shutil.disk_usage(output.resolve().parent).free
    if need > free:
        what = " (the TIFF and the OME-Zarr it is made from)" if tiff is not None else ""
        raise ResShiftError(
            f"{tiff or output}: needs up to {need / 1e9:.1f} GB{what} but only {free / 1e9:.1f} GB are free there; "
            "free space or choose another disk"
        )


def create_output(output: Path, layout: Layout, params: dict, fmt):
    import zarr

    group = zarr.open_group(storage.zarr_store(output, read_only=False), mode="w", zarr_format=fmt.zarr_format)
    extra = fmt.array_options(layout.target_axes)
    for k, shape in enumerate(level_shapes(layout, params["levels"])):
        chunks = tuple(min(c, n) for c, n in zip(layout.target_chunks, shape))
        group.create_array(str(k), shape=shape, chunks=chunks, dtype=params["dtype"], fill_value=0, **extra)
    ome.mark_running(group, params)
    (output / execute.DONE_DIR).mkdir()
    return group


if __name__ == "__main__":
    sys.exit(main())
