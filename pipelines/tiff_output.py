"""TIFF outputs: a finished OME-Zarr pyramid rewritten, tile by tile, as a tiled BigTIFF whose levels 1.. are
reduced-resolution sub-IFDs (as in a cloud-optimised GeoTIFF): GeoTIFF tags for a georeferenced input, else OME-XML.
Every TIFF output carries the pipeline's marker and run settings in a private tag, so it is known as ours.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_resshift.errors import ResShiftError, os_message
from napari_resshift.ome_metadata import RUN_MARKER, parse_image

from . import geotiff

TILE = 256
PARTIAL = ".partial"  # a TIFF output's name while it is written; batches skip such files
MARKER_TAG = 65235  # private (reusable range): the output's marker, JSON {"resshift": {"status": ..., "params": ...}}


def partial_path(target: Path) -> Path:
    """The file a TIFF output is written to before it is renamed: a kill leaves this, never a half ``target``."""
    return target.with_name(target.name + PARTIAL)


def read_marker(path: Path) -> dict | None:
    """The marker (``{"status": "complete", "params": {...}}``) of a TIFF this pipeline wrote, None for any other."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages.first.tags.get(MARKER_TAG)
            marker = json.loads(tag.value).get(RUN_MARKER) if tag is not None else None
    except Exception:  # noqa: BLE001 - unreadable, or not JSON: whatever it is, it is not an output of ours
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("params"), dict) else None


def write_tiff(source, target: Path) -> None:
    """``target`` from the finished OME-Zarr at ``source``, never all in memory; written under another name, then
    renamed. A failure (a full disk) removes what was written and names ``target``."""
    partial = partial_path(target)
    try:
        _write(source, partial)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            exc.filename = exc.filename or str(target)
            raise ResShiftError(f"{os_message(exc)}; the upscaled OME-Zarr is kept: rerun with --resume") from None
        raise
    partial.replace(target)


def _write(source, partial: Path) -> None:
    import tifffile
    import zarr

    group = zarr.open_group(str(source), mode="r")
    attrs = group.attrs.asdict()
    marker = attrs[RUN_MARKER]
    rgb = marker["params"]["rgb"]
    image = parse_image(attrs)
    geo = attrs.get("geo")
    # bands of a raster and RGB as TIFF samples (what GIS tools and viewers expect); other channels as OME planes
    planar = image.axes.endswith("cyx") and (geo or rgb)
    options = {"tile": (TILE, TILE), "compression": "zlib", "photometric": "rgb" if rgb else "minisblack",
               "planarconfig": "separate" if planar else None}
    ours = (MARKER_TAG, "s", 0, json.dumps({RUN_MARKER: marker}), True)
    first = {"subifds": len(image.levels) - 1}
    if geo:
        first |= {"extratags": geotiff.geotiff_tags(geo) + [ours], "metadata": None}
    else:
        first |= {"extratags": [ours], "metadata": ome_tiff_metadata(image, rgb=rgb)}
    with tifffile.TiffWriter(partial, bigtiff=True, ome=not geo) as tif:
        for k, level in enumerate(image.levels):
            array = group[level.path]
            extra = first if k == 0 else {"subfiletype": 1}
            tif.write(_tiles(array), shape=array.shape, dtype=array.dtype, **options, **extra)


def ome_tiff_metadata(image, *, rgb: bool) -> dict:
    """tifffile's OME metadata: axes, physical sizes in OME unit symbols (µm, Å ...), channel names."""
    import pint

    level0 = image.levels[0]
    meta = {"axes": image.axes.upper().replace("C", "S" if rgb else "C")}
    for axis, size in zip(image.axes, level0.scale):
        if axis in "zyx":
            meta[f"PhysicalSize{axis.upper()}"] = size
            if axis in image.units:
                meta[f"PhysicalSize{axis.upper()}Unit"] = f"{pint.Unit(image.units[axis]):~}"
    names = [c.get("label") for c in image.channels]
    if names and all(names) and not rgb:
        meta["Channel"] = {"Name": names}
    return meta


def _tiles(array):
    """The tiles of every plane of ``array`` (..., y, x) in TIFF order: planes, then rows, then columns."""
    *lead, height, width = array.shape
    for index in np.ndindex(*lead):
        for y in range(0, height, TILE):
            rows = array[index + (slice(y, y + TILE),)]  # one band of tiles per read: a strip of zarr chunks
            for x in range(0, width, TILE):
                yield np.ascontiguousarray(rows[..., x: x + TILE])
