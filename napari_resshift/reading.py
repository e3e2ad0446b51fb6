"""Opening images: zarr arrays (v2, v3), OME-Zarr images (0.4, 0.5), TIFF / OME-TIFF, PNG / JPEG, each as an
``OpenedImage``: the array, its axes, and the physical scale, units and channels its metadata gives.

Where an image lives is the caller's: the openers take what zarr, tifffile or Pillow opens (a path, a store, a file)
and the location to name in messages, so that object storage stays the pipeline's. Reads, never writes.
"""
from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ome_metadata
from .errors import ResShiftError

PICTURES = (".png", ".jpg", ".jpeg")
TIFFS = (".tif", ".tiff", ".btf", ".tf8")
IMAGE_SUFFIXES = TIFFS + PICTURES  # files opened by their extension; a zarr is a folder
ZARR_DOCUMENTS = ("zarr.json", ".zarray", ".zgroup", ".zattrs")  # what makes a folder a zarr
TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
# Pillow modes numpy takes as they are
PIXEL_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "RGB", "RGBA")
ALPHA_MODES = ("P", "PA", "LA", "La", "RGBa")  # read as RGBA, transparency kept; other colour spaces as RGB


@dataclass
class OpenedImage:
    array: object  # lazy (zarr) unless read whole
    axes: str  # one letter of 'tczyx' per axis, '?' for an axis of another kind; '' when nothing tells
    rgb: bool  # the last axis holds colour samples as far as the file says (judge with normalization.is_rgba)
    array_path: str = ""  # inside a zarr group: the array opened (level 0 of an OME-Zarr image)
    scale: dict = field(default_factory=dict)
    translation: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    channels: list = field(default_factory=list)  # omero-like: label, color, window (only what the input says)
    name: str = ""  # the image's own name where its metadata gives one (OME-Zarr multiscales)


def is_zarr(path: Path) -> bool:
    """A folder named .zarr or holding zarr metadata."""
    return path.is_dir() and (path.suffix.lower() == ".zarr" or any((path / m).exists() for m in ZARR_DOCUMENTS))


def open_image(path: Path, *, whole: bool = False) -> OpenedImage:
    """A local zarr folder, TIFF or picture (any other file is left to Pillow, which reads many formats); ``whole``
    reads a TIFF into memory at once, faster than through zarr where every pixel is read."""
    if path.is_dir():
        return open_zarr(str(path), path)
    if path.suffix.lower() in TIFFS:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tiff_image(tif, tiff_array(tif, whole=whole))
    return picture_image(read_picture(path))


# -- zarr -------------------------------------------------------------------------------------------------------------

def open_zarr(store, where, *, refuse=None) -> OpenedImage:
    """The zarr array, or level 0 of the OME-Zarr image, that zarr opens from ``store``; ``where`` names it in
    messages. ``refuse(node)`` may raise for the opened array or group before anything more is read."""
    import zarr

    node = zarr.open(store, mode="r")
    if refuse is not None:
        refuse(node)
    if isinstance(node, zarr.Array):
        names = getattr(node.metadata, "dimension_names", None)
        axes = "".join(n.lower() for n in names) if names and all(n and len(n) == 1 for n in names) else ""
        axes = axes or _guess_axes(node.shape)
        return OpenedImage(node, axes, axes.endswith("c") and node.shape[-1] in (3, 4))
    attrs = node.attrs.asdict()
    parsed = ome_metadata.parse_image(attrs)
    if parsed is None:
        raise ResShiftError(_not_an_image(where, node, attrs))
    level0 = parsed.levels[0]
    return OpenedImage(
        zarr.open_array(store, path=level0.path, mode="r"), parsed.axes, False, level0.path,
        scale=dict(zip(parsed.axes, level0.scale)), translation=dict(zip(parsed.axes, level0.translation)),
        units=parsed.units, channels=parsed.channels, name=parsed.name or "",
    )


def _not_an_image(where, group, attrs: dict) -> str:
    """What to pass instead of a group that is no OME-Zarr image: a bioformats2raw series, or an array inside."""
    layout = attrs.get("bioformats2raw.layout") or (attrs.get("ome") or {}).get("bioformats2raw.layout")
    if layout is not None:
        series = sorted((k for k in group.group_keys() if k.isdigit()), key=int)
        if series:
            pick = " or ".join(str(where / s) for s in series[:3]) + (" ..." if len(series) > 3 else "")
            return f"{where}: a bioformats2raw container of {len(series)} image(s); pass one image, e.g. {pick}"
        return f"{where}: a bioformats2raw container without images"
    arrays = sorted(group.array_keys())
    hint = f", e.g. {where / arrays[0]}" if arrays else ""
    return f"{where}: a zarr group without OME-Zarr 0.4/0.5 multiscales; pass an array inside it{hint}"


def _guess_axes(shape: tuple) -> str:
    """Only the unambiguous cases; anything else needs metadata or the user's word."""
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return "yxc"
    return ""


# -- TIFF -------------------------------------------------------------------------------------------------------------

def tiff_array(tif, *, whole: bool = False):
    """Level 0 (full resolution, e.g. of a cloud-optimised file) of an open ``tifffile.TiffFile``'s first series:
    lazy through zarr, or read ``whole``. A lazy array reopens a local file itself; a file object stays open."""
    series = tif.series[0]
    if whole:
        return series.asarray(level=0)
    import zarr

    return zarr.open_array(series.aszarr(level=0), mode="r")


def tiff_image(tif, array) -> OpenedImage:
    """The image of an open ``tifffile.TiffFile`` whose level 0 is ``array``: axes from its series, calibration from
    OME-XML or ImageJ tags. Samples (S) are the c axis, unless the file has channels (C) too: then one of its own."""
    letters = tif.series[0].axes
    both = "S" in letters and "C" in letters
    axes = "".join("?" if both and a == "S" else TIFF_AXES.get(a, "?") for a in letters)
    if tif.is_ome:
        scale, units, channels = _ome_tiff_pixels(tif.ome_metadata)
    elif tif.is_imagej:
        scale, units, channels = _imagej_calibration(tif)
    else:
        scale, units, channels = {}, {}, []
    return OpenedImage(array, axes, "S" in letters and not both, scale=scale, units=units, channels=channels)


@contextlib.contextmanager
def tifffile_log_held(where):
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
        raise ResShiftError(f"{where}: a damaged TIFF ({errors[0].getMessage()}); export it again")
    for record in held:
        logger.handle(record)


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


# -- pictures ---------------------------------------------------------------------------------------------------------

def read_picture(source) -> np.ndarray:
    """The pixels of a PNG / JPEG (or any picture Pillow reads): palette and grey with alpha become RGBA, other
    colour spaces (CMYK, YCbCr, ...) RGB; every other mode is kept as it is."""
    from PIL import Image

    with Image.open(source) as im:
        if im.mode not in PIXEL_MODES:
            im = im.convert("RGBA" if im.mode in ALPHA_MODES else "RGB")
        return np.asarray(im)


def picture_image(pixels: np.ndarray) -> OpenedImage:
    return OpenedImage(pixels, "yx" if pixels.ndim == 2 else "yxc", pixels.ndim == 3 and pixels.shape[-1] in (3, 4))
