"""Georeferencing: a GeoTIFF's CRS, grid and band names as the ``geo`` attribute of the output, and the GeoTIFF tags
that put the same CRS keys and the upscaled grid on a TIFF output (``pipelines.tiff_output``).

The ``geo`` attribute (a sibling of ``multiscales`` / ``ome`` in the root attributes)::

    {"crs": {"epsg": 32633, "units": "meter", "citation": "..."},   # from the GeoKeys, when they say it
     "geokeys": {"directory": [...], "doubles": [...], "ascii": "..."},  # the input's GeoKey tags verbatim
     "raster_type": "area" | "point",                                 # GTRasterTypeGeoKey of the input
     "transform": [a, b, c, d, e, f],  # level 0: x = a*col + b*row + c, y = d*col + e*row + f, where (col, row) =
                                       # (0, 0) is the outer corner of the first pixel and (0.5, 0.5) its centre
     "gcps": [[col, row, 0, x, y, z], ...],  # instead of "transform" for a grid given by ground control points only
                                             # (several tie points): (col, row) as for the transform
     "bands": ["red", ...], "nodata": "0"}                            # GDAL_METADATA descriptions, GDAL_NODATA

Upscaling by s keeps the outer corner and divides a, b, d, e by s: a pixel centre of the input lies at output pixel
(s * col + (s - 1) / 2) -- the rule the OME transforms follow too.
"""
from __future__ import annotations

import math
import re
import sys

import numpy as np

from napari_resshift.ome_metadata import ngff_unit

GEOKEYS, DOUBLES, ASCII = 34735, 34736, 34737
PIXEL_SCALE, TIEPOINT, TRANSFORMATION = 33550, 33922, 34264
GDAL_METADATA, GDAL_NODATA = 42112, 42113
USER_DEFINED = 32767  # a GeoKey value: the CRS is described by other keys, not by an EPSG code


def read_geo(tif, path="the TIFF") -> dict | None:
    """The ``geo`` attribute of an open GeoTIFF (``tifffile.TiffFile``), None when it has no grid. A GeoKey directory
    that cannot be parsed is one warning line and no georeference: nothing of it is copied."""
    tags = tif.pages[0].tags
    if GEOKEYS not in tags:
        return None
    damage = _damage([int(v) for v in np.ravel(tags[GEOKEYS].value)], len(np.ravel(tags[DOUBLES].value)) if DOUBLES
                     in tags else 0, len(tags[ASCII].value) if ASCII in tags else 0)
    if damage:
        print(f"warning: {path}: its GeoKeyDirectory is damaged ({damage}); the output is not georeferenced",
              file=sys.stderr)
        return None
    keys = tif.geotiff_metadata or {}
    point = int(keys.get("GTRasterTypeGeoKey", 1)) == 2
    transform = _transform(keys.get("ModelPixelScale"), keys.get("ModelTiepoint"), keys.get("ModelTransformation"))
    gcps = None if transform is not None else _gcps(keys.get("ModelTiepoint"), point=point)
    if transform is None and gcps is None:
        return None
    if transform is not None and point:  # the tiepoint names a pixel centre: move it to the corner, as GDAL does
        a, b, c, d, e, f = transform
        transform = [a, b, c - (a + b) / 2, d, e, f - (d + e) / 2]
    epsg = keys.get("ProjectedCSTypeGeoKey", keys.get("GeographicTypeGeoKey"))
    linear = keys.get("ProjLinearUnitsGeoKey")
    value = lambda code: tags[code].value if code in tags else None  # noqa: E731
    return {
        "crs": {"epsg": int(epsg) if epsg is not None and int(epsg) != USER_DEFINED else None,
                "units": ngff_unit(linear.name.lower())[0] if hasattr(linear, "name") else None,
                "citation": keys.get("GTCitationGeoKey") or keys.get("PCSCitationGeoKey")},
        "geokeys": {"directory": [int(v) for v in value(GEOKEYS)], "doubles": [float(v) for v in value(DOUBLES) or ()],
                    "ascii": value(ASCII) or ""},
        "raster_type": "point" if point else "area",
        **({"transform": [float(v) for v in transform]} if transform is not None else {"gcps": gcps}),
        "bands": _band_names(value(GDAL_METADATA)),
        "nodata": value(GDAL_NODATA),
    }


def _damage(directory: list[int], doubles: int, ascii: int) -> str:
    """What is wrong with a GeoKeyDirectory (its header's key count, a key's place in the other GeoKey tags), or ""."""
    if len(directory) < 4:
        return f"{len(directory)} values, fewer than its header's 4"
    count = directory[3]
    if len(directory) != 4 + 4 * count:
        return f"says {count} keys, holds {(len(directory) - 4) // 4}"
    sizes = {0: None, DOUBLES: doubles, ASCII: ascii}
    for k in range(4, len(directory), 4):
        key, where, n, offset = directory[k:k + 4]
        if where not in sizes:
            return f"key {key} points into tag {where}"
        if sizes[where] is not None and offset + n > sizes[where]:
            return f"key {key} reads past the end of tag {where}"
    return ""


def _gcps(tiepoints, *, point: bool) -> list[list[float]] | None:
    """Ground control points (several tie points, no pixel scale) with corner-based raster positions, or None."""
    if tiepoints is None or np.size(tiepoints) < 12 or np.size(tiepoints) % 6:
        return None
    gcps = np.reshape(np.asarray(tiepoints, dtype=float), (-1, 6))
    if point:  # raster positions of pixel centres: to corners, as for the transform
        gcps[:, :2] += 0.5
    return gcps.tolist()


def _transform(scale, tiepoint, matrix) -> list[float] | None:
    if matrix is not None and len(matrix) == 16:
        m = [float(v) for v in np.ravel(matrix)]
        return [m[0], m[1], m[3], m[4], m[5], m[7]]
    if scale is None or tiepoint is None or len(tiepoint) < 6:
        return None
    i, j, _, x, y, _ = (float(v) for v in tiepoint[:6])
    sx, sy = float(scale[0]), float(scale[1])
    return [sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy]


def _band_names(xml: str | None) -> list[str]:
    if not xml:
        return []
    found = {}
    for attrs, text in re.findall(r"<Item([^>]*)>([^<]*)</Item>", xml):
        if 'role="description"' in attrs:
            sample = re.search(r'sample="(\d+)"', attrs)
            found[int(sample.group(1)) if sample else 0] = text
    return [found[k] for k in sorted(found)] if found and sorted(found) == list(range(len(found))) else []


def grid_scale(geo: dict) -> tuple[dict, dict, dict]:
    """Scale, translation (of pixel centres) and units of the y, x axes in CRS units. A north-up grid's y is the CRS y
    negated, so that it grows with the row as image axes do; the exact mapping is ``geo["transform"]``.
    """
    if "transform" not in geo:  # ground control points only: no one scale; the OME axes stay in pixels
        return {}, {}, {}
    a, b, c, d, e, f = geo["transform"]
    sx, sy = math.hypot(a, d), math.hypot(b, e)
    centre_x, centre_y = c + (a + b) / 2, f + (d + e) / 2
    unit = geo["crs"].get("units")
    units = {"y": unit, "x": unit} if unit else {}
    return {"y": sy, "x": sx}, {"y": -centre_y if e < 0 else centre_y, "x": centre_x}, units


def upscaled(geo: dict, scale: int) -> dict:
    """The ``geo`` attribute of the output grid: same outer corner, pixels ``scale`` times smaller."""
    if "gcps" in geo:  # the same ground points, at raster positions ``scale`` times larger
        return geo | {"gcps": [[i * scale, j * scale, *rest] for i, j, *rest in geo["gcps"]]}
    a, b, c, d, e, f = geo["transform"]
    return geo | {"transform": [a / scale, b / scale, c, d / scale, e / scale, f]}


def geotiff_tags(geo: dict) -> list[tuple]:
    """tifffile ``extratags`` that put the grid and the input's GeoKeys (so its CRS, bit for bit) on a TIFF."""
    point = geo["raster_type"] == "point"
    if "gcps" in geo:  # back to the input's convention, as below
        points = [v for i, j, *rest in geo["gcps"] for v in (i - 0.5 * point, j - 0.5 * point, *rest)]
        grid = [(TIEPOINT, "d", len(points), tuple(points), True)]
    else:
        grid = _grid_tags(geo["transform"], point=point)
    keys = geo["geokeys"]
    tags = grid + [(GEOKEYS, "H", len(keys["directory"]), tuple(keys["directory"]), True)]
    if keys["doubles"]:
        tags.append((DOUBLES, "d", len(keys["doubles"]), tuple(keys["doubles"]), True))
    if keys["ascii"]:
        tags.append((ASCII, "s", 0, keys["ascii"], True))
    if geo.get("bands"):
        items = "".join(f'<Item name="DESCRIPTION" sample="{k}" role="description">{name}</Item>'
                        for k, name in enumerate(geo["bands"]))
        tags.append((GDAL_METADATA, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", True))
    if geo.get("nodata") is not None:
        tags.append((GDAL_NODATA, "s", 0, str(geo["nodata"]), True))
    return tags


def _grid_tags(transform: list[float], *, point: bool) -> list[tuple]:
    a, b, c, d, e, f = transform
    if point:  # back to the input's convention: the tiepoint on the first pixel centre
        c, f = c + (a + b) / 2, f + (d + e) / 2
    if b == 0 and d == 0:
        return [(PIXEL_SCALE, "d", 3, (a, -e, 0.0), True), (TIEPOINT, "d", 6, (0.0, 0.0, 0.0, c, f, 0.0), True)]
    return [(TRANSFORMATION, "d", 16, (a, b, 0, c, d, e, 0, f, 0, 0, 0, 0, 0, 0, 0, 1), True)]
