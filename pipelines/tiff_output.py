"""TIFF outputs: a finished OME-Zarr pyramid rewritten, tile by tile, as a tiled BigTIFF whose levels 1.. are
reduced-resolution sub-IFDs (as in a cloud-optimised GeoTIFF): GeoTIFF tags for a georeferenced input, else OME-XML.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_resshift.ome_metadata import parse_image

from . import geotiff

TILE = 256


def write_tiff(source, target: Path, *, rgb: bool) -> None:
    """``target`` from the OME-Zarr at ``source``, never all in memory; written under another name, then renamed."""
    import tifffile
    import zarr

    group = zarr.open_group(str(source), mode="r")
    attrs = group.attrs.asdict()
    image = parse_image(attrs)
    geo = attrs.get("geo")
    # bands of a raster and RGB as TIFF samples (what GIS tools and viewers expect); other channels as OME planes
    planar = image.axes.endswith("cyx") and (geo or rgb)
    options = {"tile": (TILE, TILE), "compression": "zlib", "photometric": "rgb" if rgb else "minisblack",
               "planarconfig": "separate" if planar else None}
    first = {"subifds": len(image.levels) - 1}
    if geo:
        first |= {"extratags": geotiff.geotiff_tags(geo), "metadata": None}
    else:
        first |= {"metadata": ome_tiff_metadata(image, rgb=rgb)}
    partial = target.with_name(target.name + ".partial")
    with tifffile.TiffWriter(partial, bigtiff=True, ome=not geo) as tif:
        for k, level in enumerate(image.levels):
            array = group[level.path]
            extra = first if k == 0 else {"subfiletype": 1}
            tif.write(_tiles(array), shape=array.shape, dtype=array.dtype, **options, **extra)
    partial.replace(target)


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
