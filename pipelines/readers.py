"""Lazy inputs of the pipeline: zarr arrays (v2, v3), OME-Zarr images (0.4, 0.5), TIFF / OME-TIFF, PNG / JPEG.

Each opens as an ``InputImage``: the lazy array, its axes, its physical scale / translation / units, and a small
picklable ``InputSpec`` from which a worker reopens it. Every failure is one ``ResShiftError`` line.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_resshift import ome_metadata
from napari_resshift.errors import ResShiftError, reported
from napari_resshift.normalization import check_dtype, is_rgba
from napari_resshift.outofcore import AXES

from . import geotiff, storage

TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
PICTURES = (".png", ".jpg", ".jpeg")
TIFFS = (".tif", ".tiff", ".btf", ".tf8")


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


@dataclass
class InputImage:
    spec: InputSpec
    array: object
    axes: str
    rgb: bool
    scale: dict = field(default_factory=dict)
    translation: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    channels: list = field(default_factory=list)  # omero-like: label, color, window (only what the input says)
    geo: dict | None = None  # georeferencing of a GeoTIFF, see pipelines.geotiff
    name: str = ""  # the image's own name where its metadata gives one (OME-Zarr multiscales)


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
            store = tif.series[0].aszarr(level=0)  # full resolution of pyramidal (e.g. cloud-optimised) files
        return zarr.open_array(store, mode="r")
    from PIL import Image

    with Image.open(spec.source()) as im:
        return np.asarray(im.convert("RGBA") if im.mode in ("P", "LA") else im)


IDENTITY_BYTES = 1 << 20  # a file's first and last MiB are hashed: cheap for any size, and tells files apart
ZARR_DOCUMENTS = storage.ZARR_DOCUMENTS


def input_identity(spec: InputSpec) -> dict:
    """What tells this input from another one, or from itself changed since, without reading it all: the size and
    modification time of its file (of its zarr metadata documents for a zarr) and a hash of its first and last MiB
    (of those documents). Not its path: a copied or moved input, unchanged, still resumes."""
    import hashlib

    path = storage.path(spec.path, spec.options)
    folders = [path, path / spec.array_path] if spec.kind == "zarr" and spec.array_path else [path]
    files = [f / name for f in folders for name in ZARR_DOCUMENTS if (f / name).is_file()] if path.is_dir() else [path]
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
    with unreadable, _tifffile_log_held(path):
        if path.is_dir():
            image = _open_zarr(path)
        elif path.suffix.lower() in TIFFS:
            image = _open_tiff(path)
        elif path.suffix.lower() in PICTURES:
            image = _open_picture(path)
        else:
            raise ResShiftError(f"{path}: not a zarr array, OME-Zarr image, TIFF, PNG or JPEG")
    return _check(image, path, axes=axes, rgb=rgb)


@contextlib.contextmanager
def _tifffile_log_held(path: Path):
    """tifffile logs what it finds damaged and reads on: a file with errors is refused in one line naming the first
    (its pixels may be missing), a file that cannot be read says so in its own line; warnings are passed on."""
    logger = logging.getLogger("tifffile")
    held: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = held.append
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    errors = [r for r in held if r.levelno >= logging.ERROR]
    if errors:
        raise ResShiftError(f"{path}: a damaged TIFF ({errors[0].getMessage()}); export it again")
    for record in held:
        logger.handle(record)


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


def _guess_axes(shape: tuple) -> str:
    """Only the unambiguous cases; anything else needs metadata or --axes."""
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return "yxc"
    return ""


def _open_zarr(path: Path) -> InputImage:
    import zarr

    node = zarr.open(storage.zarr_store(path, read_only=True), mode="r")
    if isinstance(node, zarr.Array):
        if _in_unfinished_output(path):
            raise ResShiftError(f"{path}: an array of an unfinished upscaling output (run interrupted); finish that "
                                "output with --resume")
        names = getattr(node.metadata, "dimension_names", None)
        axes = "".join(n.lower() for n in names) if names and all(n and len(n) == 1 for n in names) else ""
        axes = axes or _guess_axes(node.shape)
        return InputImage(InputSpec.of(path, "zarr"), node, axes, axes.endswith("c") and node.shape[-1] in (3, 4))
    attrs = node.attrs.asdict()
    if ome_metadata.unfinished(attrs):
        raise ResShiftError(f"{path}: an unfinished upscaling output (run interrupted); finish it with --resume")
    parsed = ome_metadata.parse_image(attrs)
    if parsed is None:
        raise ResShiftError(_not_an_image(path, node, attrs))
    level0 = parsed.levels[0]
    array = zarr.open_array(storage.zarr_store(path, read_only=True), path=level0.path, mode="r")
    return InputImage(
        InputSpec.of(path, "zarr", level0.path), array, parsed.axes, False,
        scale=dict(zip(parsed.axes, level0.scale)), translation=dict(zip(parsed.axes, level0.translation)),
        units=parsed.units, channels=parsed.channels, name=parsed.name or "",
    )


def _not_an_image(path: Path, group, attrs: dict) -> str:
    """What to pass instead of a group that is no OME-Zarr image: a bioformats2raw series, or an array inside."""
    layout = attrs.get("bioformats2raw.layout") or (attrs.get("ome") or {}).get("bioformats2raw.layout")
    if layout is not None:
        series = sorted((k for k in group.group_keys() if k.isdigit()), key=int)
        if series:
            pick = " or ".join(str(path / s) for s in series[:3]) + (" ..." if len(series) > 3 else "")
            return f"{path}: a bioformats2raw container of {len(series)} image(s); pass one image, e.g. {pick}"
        return f"{path}: a bioformats2raw container without images"
    arrays = sorted(group.array_keys())
    hint = f", e.g. {path / arrays[0]}" if arrays else ""
    return f"{path}: a zarr group without OME-Zarr 0.4/0.5 multiscales; pass an array inside it{hint}"


def _in_unfinished_output(path: Path) -> bool:
    """Whether a zarr group above ``path`` is an output of this pipeline that is not complete."""
    from .checks import own_status  # checks knows the inputs' kinds: imported here, not at the top

    for folder in path.resolve().parents:
        if not any((folder / name).is_file() for name in ("zarr.json", ".zgroup", ".zattrs")):
            return False
        status = own_status(folder)
        if status is not None:
            return status != "complete"
    return False


def _open_tiff(path: Path) -> InputImage:
    import tifffile

    spec = InputSpec.of(path, "tiff")
    with tifffile.TiffFile(spec.source()) as tif:
        series = tif.series[0]
        letters = series.axes
        if tif.is_ome:
            scale, units, channels = _ome_tiff_pixels(tif.ome_metadata)
        elif tif.is_imagej:
            scale, units, channels = _imagej_calibration(tif)
        else:
            scale, units, channels = {}, {}, []
        geo = geotiff.read_geo(tif, path) if tif.is_geotiff else None
    axes = "".join(TIFF_AXES.get(a, "?") for a in letters)
    if "S" in letters and "C" in letters:
        axes = ""
    translation = {}
    if geo is not None:
        scale, translation, units = geotiff.grid_scale(geo)
        channels = [{"label": name} for name in geo.get("bands", [])] or channels
    array = spec.open_array()
    return InputImage(spec, array, axes, "S" in letters, scale=scale, translation=translation, units=units,
                      channels=channels, geo=geo)


def _physical(scale: dict, units: dict, axis: str, size, unit) -> None:
    """Record one axis' pixel size, converted to its NGFF unit; a size without a known unit stays unitless."""
    name, factor = ome_metadata.ngff_unit(unit) if unit else (None, 1.0)
    scale[axis] = float(size) * factor
    if name:
        units[axis] = name


def _ome_tiff_pixels(xml: str | None) -> tuple[dict, dict, list]:
    """Physical pixel sizes, units (micrometre when not given, as OME says) and channel names/colours of OME-XML."""
    if not xml:
        return {}, {}, []
    try:
        pixels = next(e for e in ET.fromstring(xml).iter() if e.tag.endswith("Pixels"))
    except (ET.ParseError, StopIteration):
        return {}, {}, []
    scale, units = {}, {}
    for a in "zyx":
        size = pixels.get(f"PhysicalSize{a.upper()}")
        if size is not None:
            _physical(scale, units, a, size, pixels.get(f"PhysicalSize{a.upper()}Unit", "µm"))
    channels = []
    for element in (e for e in pixels if e.tag.endswith("Channel")):
        channel = {"label": element.get("Name")} if element.get("Name") else {}
        if element.get("Color") is not None:  # signed 32-bit RGBA
            channel["color"] = f"{(int(element.get('Color')) & 0xFFFFFFFF) >> 8:06X}"
        channels.append(channel)
    return scale, units, channels if any(channels) else []


def _imagej_calibration(tif) -> tuple[dict, dict, list]:
    """ImageJ hyperstack calibration: X/YResolution (pixels per unit), ``spacing`` for z, ``unit`` and ``Ranges``."""
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", ""))
    if "\\u" in unit:  # ImageJ escapes non-ASCII, e.g. \u00B5m
        unit = unit.encode().decode("unicode_escape")
    tags = tif.pages[0].tags
    scale, units = {}, {}
    for axis, tag in (("y", "YResolution"), ("x", "XResolution")):
        if tag in tags:
            numerator, denominator = tags[tag].value
            if numerator and denominator and (numerator, denominator) != (1, 1):
                _physical(scale, units, axis, denominator / numerator, unit)
    if "spacing" in meta:
        _physical(scale, units, "z", meta["spacing"], unit)
    ranges = meta.get("Ranges") or ()
    channels = [{"window": {"start": float(lo), "end": float(hi)}} for lo, hi in zip(ranges[::2], ranges[1::2])]
    return scale, units, channels


def _open_picture(path: Path) -> InputImage:
    spec = InputSpec.of(path, "picture")
    array = spec.open_array()
    axes = "yx" if array.ndim == 2 else "yxc"
    return InputImage(spec, array, axes, array.ndim == 3 and array.shape[-1] in (3, 4))
