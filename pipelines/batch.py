"""Batch inputs and output kinds: a folder or glob of images becomes one job per file, and an output path's extension
says what is written (an OME-Zarr folder, or a TIFF made from a finished OME-Zarr).
"""
from __future__ import annotations

import glob
from pathlib import Path

from napari_resshift.errors import ResShiftError

from . import ome
from .readers import PICTURES, TIFFS

ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
ZARR_SUFFIXES = (".zarr",)
IMAGE_SUFFIXES = TIFFS + PICTURES


def output_kind(path: Path) -> str:
    """``zarr`` for ``.zarr`` / ``.ome.zarr`` or no extension, ``tiff`` for a TIFF name; any other is refused."""
    suffix = path.suffix.lower()
    if suffix in TIFFS:
        return "tiff"
    if suffix in ZARR_SUFFIXES or not suffix:
        return "zarr"
    raise ResShiftError(
        f"{path}: cannot write {suffix!r} files; name the output .ome.zarr (OME-Zarr) or .tif (tiled BigTIFF)"
    )


def staging_path(output: Path) -> Path:
    """Where a TIFF output is computed first, resumably: an OME-Zarr beside it, removed once the TIFF is written."""
    return output.with_name(output.name + ".partial.ome.zarr")


def is_batch(source: str) -> bool:
    path = Path(source)
    if path.is_dir():
        return not any((path / m).exists() for m in ZARR_MARKERS) and path.suffix.lower() not in ZARR_SUFFIXES
    return not path.exists() and glob.has_magic(source)


def batch_inputs(source: str) -> list[Path]:
    """The images of a folder (not its subfolders, but zarr folders in it) or of a glob pattern, sorted by name."""
    path = Path(source)
    candidates = sorted(path.iterdir()) if path.is_dir() else sorted(Path(p) for p in glob.glob(source))
    images = [p for p in candidates if _is_image(p)]
    if not images:
        raise ResShiftError(f"{source}: no images found (TIFF, PNG, JPEG or .zarr); pass an image or a folder of them")
    return images


def _is_image(path: Path) -> bool:
    if path.name.startswith(".") or path.name.endswith((".partial", ".partial.ome.zarr")):
        return False
    if path.is_dir():
        zarr_like = path.suffix.lower() in ZARR_SUFFIXES or any((path / m).exists() for m in ZARR_MARKERS)
        return zarr_like and not _is_our_output(path)
    return path.suffix.lower() in IMAGE_SUFFIXES


def _is_our_output(path: Path) -> bool:
    """An earlier run's output lying beside its input is no input of the next batch."""
    import zarr

    try:
        return ome.run_status(zarr.open_group(str(path), mode="r").attrs.asdict()) is not None
    except Exception:  # noqa: BLE001 - not a readable group: the reader will say what is wrong with it
        return False
