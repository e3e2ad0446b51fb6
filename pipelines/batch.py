"""Batch inputs and output kinds: a folder or glob of images becomes one job per file, each with an output of its own
name, and an output path's extension says what is written (an OME-Zarr folder, or a TIFF made from a finished
OME-Zarr).
"""
from __future__ import annotations

import glob
import sys
from collections import defaultdict
from pathlib import Path

from napari_resshift.errors import ResShiftError, os_message
from napari_resshift.reading import IMAGE_SUFFIXES, TIFFS, ZARR_DOCUMENTS

from . import checks, storage, tiff_output

ZARR_SUFFIXES = (".zarr",)
STAGING = ".partial.ome.zarr"  # a TIFF output's resumable OME-Zarr, beside it until the TIFF is written


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
    return output.with_name(output.name + STAGING)


def is_batch(source) -> bool:
    path = storage.path(source)
    if path.is_dir():
        return not any((path / m).exists() for m in ZARR_DOCUMENTS) and path.suffix.lower() not in ZARR_SUFFIXES
    return not path.exists() and glob.has_magic(str(source))


def batch_inputs(source: str) -> list[Path]:
    """The images of a folder (not its subfolders, but zarr folders in it) or of a glob pattern, sorted by name.
    Earlier outputs of this pipeline among them (OME-Zarr or TIFF) are no inputs: skipped, and said so once."""
    path = storage.path(source)  # a URL's folder or glob is listed by its object store
    if storage.is_url(path):
        candidates = sorted(path.iterdir(), key=str) if path.is_dir() else storage.glob(path)
    else:
        candidates = sorted(path.iterdir()) if path.is_dir() else sorted(Path(p) for p in glob.glob(str(source)))
    images = [p for p in candidates if _is_image(p)]
    ours = [p for p in images if checks.own_run(p) is not None]
    images = [p for p in images if p not in ours]
    if not images:
        found = " other than outputs of this pipeline" if ours else ""
        raise ResShiftError(f"{source}: no images found (TIFF, PNG, JPEG or .zarr){found}; pass an image or a folder "
                            "of them")
    if ours:
        names = ", ".join(p.name for p in ours[:3]) + (" ..." if len(ours) > 3 else "")
        print(f"note: skipping {len(ours)} output(s) of this pipeline among the inputs ({names})", file=sys.stderr)
    return images


def _is_image(path: Path) -> bool:
    if path.name.startswith(".") or path.name.endswith((tiff_output.PARTIAL, STAGING)):
        return False
    if path.is_dir():
        return path.suffix.lower() in ZARR_SUFFIXES or any((path / m).exists() for m in ZARR_DOCUMENTS)
    return path.suffix.lower() in IMAGE_SUFFIXES


def output_folder(output: str | None) -> Path | None:
    """The folder of a batch's outputs (``-o``): an existing plain folder, whatever its name, or a new one; never a
    file or a zarr. Created once the inputs are known to be upscalable (``unique_outputs``)."""
    if output is None:
        return None
    folder = storage.path(output)
    zarr_like = folder.is_dir() and any((folder / m).exists() for m in ZARR_DOCUMENTS)
    new_file_name = not folder.exists() and folder.suffix.lower() in TIFFS + ZARR_SUFFIXES
    if zarr_like or new_file_name or folder.is_file() or (folder.exists() and not folder.is_dir()):
        what = "is a zarr" if zarr_like else "is a file" if folder.exists() else "names a file"
        raise ResShiftError(f"{folder}: {what}, but with a folder or pattern of inputs -o names the folder of the "
                            "outputs; pass a folder")
    return folder


def unique_outputs(sources: list[Path], targets: list[Path], folder: Path | None) -> list[Path]:
    """Each input's output path (in ``folder`` when given): inputs whose outputs would share a name (scan.tif and
    scan.tiff) each get their full file name instead (scan.tif_x4.ome.zarr), said so in one line; refused when even
    that is shared (same file names from different folders into one -o)."""
    paths = [folder / t.name if folder else t for t in targets]
    groups = defaultdict(list)
    for k, p in enumerate(paths):
        groups[p.resolve()].append(k)
    shared = [ks for ks in groups.values() if len(ks) > 1]
    for ks in shared:
        for k in ks:
            suffix = targets[k].name[targets[k].name.rindex("_x"):]  # _x4.ome.zarr
            paths[k] = paths[k].with_name(sources[k].name + suffix)
    first = {}
    for k, p in enumerate(paths):
        j = first.setdefault(p.resolve(), k)
        if j != k:
            raise ResShiftError(f"{sources[j]} and {sources[k]} would write the same output {p}; upscale them in "
                                "separate runs (with separate -o folders)")
    if shared:
        said = "; ".join(" and ".join(sources[k].name for k in ks) + " -> " + ", ".join(paths[k].name for k in ks)
                         for ks in shared)
        print(f"note: inputs that would share an output name are told apart by their full names: {said}",
              file=sys.stderr)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return paths


def check_failed(failed: list[tuple[Path, BaseException]], total: int) -> None:
    """After a batch: one line naming every input that failed, with its reason; the others are written."""
    if not failed:
        return
    reasons = " | ".join(os_message(e) if isinstance(e, OSError) else str(e) for _, e in failed)
    raise ResShiftError(f"{len(failed)} of {total} inputs failed ({', '.join(str(p) for p, _ in failed)}), the "
                        f"others are done; fix them and rerun with --resume: {reasons}")
