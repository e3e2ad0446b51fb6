"""What the pipeline refuses before it writes anything: bad argument values, a scheduler address it cannot use, an
input with missing chunks, and an existing output that is not provably its own.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from napari_resshift.errors import ResShiftError, reported
from napari_resshift.normalization import check_dtype

from . import ome

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
    """``--overwrite`` replaces only a folder this pipeline wrote (its marker present), never anything else."""
    if not output.is_dir():
        raise ResShiftError(f"{output}: exists and is not an output of this pipeline; --overwrite only replaces "
                            "those: remove it yourself or choose another -o")
    if own_status(output) is None:
        raise ResShiftError(f"{output}: not an output of this pipeline (no {ome.MARKER!r} marker); --overwrite only "
                            "replaces those: remove it yourself or choose another -o")


def own_status(output: Path) -> str | None:
    """``running`` / ``complete`` for a folder this pipeline wrote, None for anything else."""
    import zarr

    try:
        return ome.run_status(zarr.open_group(str(output), mode="r").attrs.asdict())
    except Exception:  # noqa: BLE001 - whatever is there, it is not an output of ours
        return None


def check_writable(folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ResShiftError(f"{folder}: cannot write there (read-only folder or file system); choose another output")
