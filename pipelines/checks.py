"""What the pipeline refuses before it writes anything: bad argument values, a scheduler address it cannot use, an
input with missing chunks, an existing output that is not provably its own or was made with other settings.
The one place that tells the pipeline's outputs (OME-Zarr folders and TIFF files, by their marker) from anything else.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from napari_resshift.errors import ResShiftError, reported
from napari_resshift.normalization import check_dtype
from napari_resshift.reading import TIFFS

from . import ome, storage, tiff_output

AT_LEAST = {"tile": 1, "overlap": 0, "chunk": 1, "levels": 1, "threads": 1, "workers": 1, "torch_threads": 1}


def check_arguments(args) -> None:
    """Numbers in range, a supported output pixel type, a usable scheduler address; before any file is touched."""
    for name, low in AT_LEAST.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise ResShiftError(f"--{name.replace('_', '-')} {value} is not allowed; it must be at least {low}")
    if args.dtype is not None:
        try:
            dtype = np.dtype(args.dtype)
        except TypeError:
            raise ResShiftError(f"--dtype {args.dtype!r} is not a pixel type; use e.g. uint8, uint16 or float32") \
                from None
        if dtype.kind not in "uif":
            raise ResShiftError(f"--dtype {dtype.name} is not an image pixel type; use e.g. uint8, uint16 or float32")
        check_dtype(dtype)
    if args.scheduler:
        check_scheduler_address(args.scheduler)
    output = getattr(args, "output", None)
    if getattr(args, "format", None) is not None and output is not None and Path(output).suffix.lower() in TIFFS:
        raise ResShiftError(f"--format {args.format} sets the OME-Zarr version, but {output} is a TIFF; drop --format "
                            "or name the output .ome.zarr")


def check_scheduler_address(address: str) -> None:
    from distributed.comm import parse_address
    from distributed.comm.registry import get_backend

    with reported(f"--scheduler {address}: not a dask scheduler address", hint="; use e.g. tcp://host:8786"):
        get_backend(parse_address(address)[0])


def check_stored_chunks(image, path, *, fill: bool) -> int:
    """Chunks of a zarr input that are not stored read as the fill value: refused unless ``fill``, then reported.

    zarr itself leaves chunks equal to the fill value unwritten, so only the user can tell a sparse array from a
    damaged one. Returns the number of missing chunks.
    """
    array = image.array
    if image.spec.kind != "zarr" or not hasattr(array, "nchunks_initialized"):
        return 0
    if storage.unlisted(path):
        if not fill:
            raise ResShiftError(f"{storage.path(path)}: a web server cannot list which chunks are stored; add "
                                "--missing-chunks fill to read any missing chunk as the fill value")
        return 0
    with reported(f"{path}: cannot list the stored chunks"):
        missing = array.nchunks - array.nchunks_initialized
    if missing and not fill:
        raise ResShiftError(
            f"{path}: {missing} of {array.nchunks} chunks are not stored (deleted or never written) and would read "
            f"as the fill value {array.fill_value}; repair the input, or add --missing-chunks fill if they are meant "
            "to be that value"
        )
    if missing:
        print(f"warning: {missing} of {array.nchunks} chunks of {path} are not stored; they are read as the fill "
              f"value {array.fill_value}", file=sys.stderr)
    return missing


def check_replaceable(output: Path) -> None:
    """``--overwrite`` replaces only an output this pipeline wrote (its marker present), never anything else."""
    check_own(output, action="overwrite")


def check_own(path: Path, *, action: str) -> dict:
    """The marker of an output of ours that --overwrite or --resume (``action``) may touch; anything else refused."""
    run = own_run(path)
    if run is None:
        what = "--overwrite only replaces those" if action == "overwrite" else "cannot resume it"
        raise ResShiftError(f"{path}: {_not_ours(path)}; {what}: remove it yourself or choose another -o")
    return run


def own_run(path: Path) -> dict | None:
    """The marker, ``{"status": "running" | "complete", "params": {...}}``, of an output this pipeline wrote (an
    OME-Zarr folder, or a TIFF, which is complete once it exists); None for anything else."""
    path = storage.path(path)
    if path.is_file():
        return tiff_output.read_marker(path) if path.suffix.lower() in TIFFS else None
    if not path.is_dir():
        return None
    import zarr

    try:
        with storage.storage_errors(path):
            attrs = zarr.open_group(storage.zarr_store(path, read_only=True), mode="r").attrs.asdict()
    except ResShiftError:
        raise  # the storage refused to answer: that says nothing about whose the output is
    except Exception:  # noqa: BLE001 - whatever is there, it is not an output of ours
        return None
    return attrs[ome.MARKER] if ome.run_status(attrs) is not None else None


def own_status(path: Path) -> str | None:
    """``running`` / ``complete`` for an output this pipeline wrote, None for anything else."""
    run = own_run(path)
    return run and run.get("status")


def _not_ours(path: Path) -> str:
    if path.is_dir():
        return f"not an output of this pipeline (no {ome.MARKER!r} marker)"
    return "exists and is not an output of this pipeline"


# compared by --resume: a change of any of these makes other pixels
RESUME_KEYS = ("input_shape", "axes", "rgb", "model", "scale", "steps", "seed", "tile", "overlap", "dtype", "levels",
               "format", "noise")
NEWER_KEYS = ("input_id",)  # compared when the output records them (older outputs do not)
SAID = {"input_id": "input: another file, or changed since"}


def check_resumable(output: Path, params: dict) -> tuple[str, dict]:
    """(status, stored settings) of an output of ours that ``--resume`` may finish or call complete: the settings
    it was made with must be the ones asked for now; anything not ours is refused."""
    run = check_own(output, action="resume")
    stored = run["params"]
    keys = RESUME_KEYS + tuple(k for k in NEWER_KEYS if k in stored)
    keys += ("torch_threads",) if params.get("torch_threads") else ()
    changed = [SAID.get(k, k) for k in keys if stored.get(k) != params.get(k)]
    if changed:
        state = "was made" if run["status"] == "complete" else "was started"
        raise ResShiftError(
            f"{output}: {state} with other settings ({', '.join(changed)}); rerun with them or use --overwrite"
        )
    return run["status"], stored


def check_writable(folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ResShiftError(f"{folder}: cannot write there (read-only folder or file system); choose another output")
