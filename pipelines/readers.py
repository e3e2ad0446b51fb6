"""Lazy inputs of the pipeline: zarr arrays (v2, v3), OME-Zarr images (0.4, 0.5), TIFF / OME-TIFF, PNG / JPEG, local
or at a URL, opened by ``napari_resshift.reading``.

Each opens as an ``InputImage``: the lazy array, its axes, its physical scale / translation / units, and a small
picklable ``InputSpec`` from which a worker reopens it. Every failure is one ``ResShiftError`` line.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from napari_resshift import ome_metadata, reading
from napari_resshift.errors import ResShiftError, reported
from napari_resshift.normalization import check_dtype, is_rgba
from napari_resshift.outofcore import AXES

from . import checks, geotiff, storage


@dataclass(frozen=True)
class InputSpec:
    """What a worker needs to reopen the input: the path, its kind and, inside a zarr group, the array's path."""

    path: str  # a local path or a URL (see pipelines.storage)
    kind: str  # zarr | tiff | picture
    array_path: str = ""
    options: storage.Options = field(default_factory=storage.Options)  # --storage-options of a URL: each worker opens it itself

    @classmethod
    def of(cls, path, kind: str, array_path: str = "") -> InputSpec:
        """The spec of a local path or a ``storage.RemotePath`` (its real URL and options, not its redacted name)."""
        if isinstance(path, storage.RemotePath):
            return cls(path.url, kind, array_path, path.options)
        return cls(str(path), kind, array_path)

    def open_array(self):
        return _open_array(self)

    def source(self):
        """What a reader opens: the local path, or a file over range requests of a URL."""
        return storage.open_file(storage.path(self.path, self.options)) if storage.is_url(self.path) else self.path


@dataclass(kw_only=True)
class InputImage(reading.OpenedImage):
    """An opened input with the spec a worker reopens it from and, for a GeoTIFF, its georeferencing."""

    spec: InputSpec
    geo: dict | None = None  # see pipelines.geotiff

    @classmethod
    def of(cls, spec: InputSpec, image: reading.OpenedImage) -> InputImage:
        return cls(**vars(image), spec=spec)


@functools.lru_cache(maxsize=4)
def _open_array(spec: InputSpec):
    """Read-only, once per process: the input is never written."""
    import zarr

    if spec.kind == "zarr" and storage.is_url(spec.path):
        store = storage.zarr_store(storage.path(spec.path, spec.options), read_only=True)
        return zarr.open_array(store, path=spec.array_path, mode="r")
    if spec.kind == "zarr":
        return zarr.open_array(spec.path + ("/" + spec.array_path if spec.array_path else ""), mode="r")
    if spec.kind == "tiff":
        import tifffile

        with tifffile.TiffFile(spec.source()) as tif:  # a URL's file stays open: tifffile does not close it
            return reading.tiff_array(tif)
    return reading.read_picture(spec.source())


IDENTITY_BYTES = 1 << 20  # a file's first and last MiB are hashed: cheap for any size, and tells files apart


def input_identity(spec: InputSpec) -> dict:
    """What tells this input from another one, or from itself changed since, without reading it all: the size and
    modification time of its file (of its zarr metadata documents for a zarr) and a hash of its first and last MiB
    (of those documents). Not its path: a copied or moved input, unchanged, still resumes."""
    import hashlib

    path = storage.path(spec.path, spec.options)
    folders = [path, path / spec.array_path] if spec.kind == "zarr" and spec.array_path else [path]
    files = ([f / name for f in folders for name in reading.ZARR_DOCUMENTS if (f / name).is_file()] if path.is_dir()
             else [path])
    digest, size, mtime = hashlib.sha256(), 0, 0
    for file in files:
        stat = file.stat()
        size, mtime = size + stat.st_size, max(mtime, stat.st_mtime_ns)
        with file.open("rb") as f:
            digest.update(f.read(IDENTITY_BYTES))
            if stat.st_size > IDENTITY_BYTES:
                f.seek(max(IDENTITY_BYTES, stat.st_size - IDENTITY_BYTES))
                digest.update(f.read())
    return {"size": size, "mtime_ns": mtime, "sha256": digest.hexdigest()}


def open_input(path, *, axes: str | None = None, rgb: bool | None = None) -> InputImage:
    """Open ``path`` (a local path, a URL or a ``storage.RemotePath``) lazily and check it is an image the pipeline
    can upscale."""
    path = storage.path(path)
    if not path.exists():
        raise ResShiftError(storage.missing(path) if storage.is_url(path) else f"{path}: no such file or folder")
    unreadable = reported(f"{path}: cannot be read", hint="; is it a complete zarr, TIFF, PNG or JPEG?")
    with unreadable, reading.tifffile_log_held(path):
        if path.is_dir():
            image = _open_zarr(path)
        elif path.suffix.lower() in reading.TIFFS:
            image = _open_tiff(path)
        elif path.suffix.lower() in reading.PICTURES:
            image = _open_picture(path)
        else:
            raise ResShiftError(f"{path}: not a zarr array, OME-Zarr image, TIFF, PNG or JPEG")
    return _check(image, path, axes=axes, rgb=rgb)


def _check(image: InputImage, path: Path, *, axes: str | None, rgb: bool | None) -> InputImage:
    shape = tuple(image.array.shape)
    if len(shape) < 2:
        raise ResShiftError(f"{path}: the array is {len(shape)}-D (shape {shape}); an image needs Y and X axes")
    if 0 in shape:
        raise ResShiftError(f"{path}: the array is empty (shape {shape}); nothing to upscale")
    check_dtype(image.array.dtype)
    if axes is not None:
        axes = axes.lower()
        if len(axes) != len(shape):
            raise ResShiftError(f"--axes {axes!r} names {len(axes)} axes but {path} has {len(shape)} (shape {shape})")
        image.axes, image.rgb = axes, axes.endswith("c") and shape[-1] in (3, 4)
    if not image.axes:
        raise ResShiftError(
            f"{path}: cannot tell the axes of an array of shape {shape} (no metadata); pass --axes, e.g. --axes "
            f"{'zyx' if len(shape) == 3 else 'tczyx'[-len(shape):]}"
        )
    bad = sorted(set(image.axes) - set(AXES))
    if bad or len(set(image.axes)) != len(image.axes) or not {"y", "x"} <= set(image.axes):
        unnamed = bad == ["?"] and image.axes.count("?") == 1 and {"y", "x"} <= set(image.axes)
        hint = " or ".join(image.axes.replace("?", a) for a in "tzc" if a not in image.axes) if unnamed else ""
        raise ResShiftError(
            f"{path}: axes {image.axes!r} are not understood; pass --axes with one letter per axis from {AXES!r}"
            + (f", here {hint} (shape {shape})" if hint else "")
        )
    if rgb is None and image.rgb:  # RGB + a band, e.g. near infrared: each channel alone
        image.rgb = is_rgba(image.array, image.axes.index("c"))
    if rgb is not None:
        if rgb and ("c" not in image.axes or shape[image.axes.index("c")] not in (3, 4)):
            raise ResShiftError(f"{path}: --rgb needs a c axis of 3 or 4 channels (axes {image.axes!r}, shape {shape})")
        image.rgb = rgb
    return image


def _open_zarr(path: Path) -> InputImage:
    image = reading.open_zarr(storage.zarr_store(path, read_only=True), path,
                              refuse=functools.partial(_refuse_unfinished, path))
    return InputImage.of(InputSpec.of(path, "zarr", image.array_path), image)


def _refuse_unfinished(path: Path, node) -> None:
    """An output of this pipeline that is not complete has holes: no input, but the output to finish."""
    import zarr

    if isinstance(node, zarr.Array) and _in_unfinished_output(path):
        raise ResShiftError(f"{path}: an array of an unfinished upscaling output (run interrupted); finish that "
                            "output with --resume")
    if isinstance(node, zarr.Group) and ome_metadata.unfinished(node.attrs.asdict()):
        raise ResShiftError(f"{path}: an unfinished upscaling output (run interrupted); finish it with --resume")


def _in_unfinished_output(path: Path) -> bool:
    """Whether a zarr group above ``path`` is an output of this pipeline that is not complete."""
    for folder in path.resolve().parents:
        if not any((folder / name).is_file() for name in ("zarr.json", ".zgroup", ".zattrs")):
            return False
        status = checks.own_status(folder)
        if status is not None:
            return status != "complete"
    return False


def _open_tiff(path: Path) -> InputImage:
    import tifffile

    spec = InputSpec.of(path, "tiff")
    array = spec.open_array()
    with tifffile.TiffFile(spec.source()) as tif:
        image = InputImage.of(spec, reading.tiff_image(tif, array))
        if {"S", "C"} <= set(tif.series[0].axes):  # which of two channel axes is c: the user says (--axes)
            image.axes = ""
        image.geo = geotiff.read_geo(tif, path) if tif.is_geotiff else None
    if image.geo is not None:
        image.scale, image.translation, image.units = geotiff.grid_scale(image.geo)
        image.channels = [{"label": name} for name in image.geo.get("bands", [])] or image.channels
    return image


def _open_picture(path: Path) -> InputImage:
    spec = InputSpec.of(path, "picture")
    return InputImage.of(spec, reading.picture_image(spec.open_array()))
