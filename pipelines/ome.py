"""OME-Zarr metadata of the outputs: one small class per spec version (0.4, 0.5) built and checked by ome-zarr-py and
ome-zarr-models, pyramid transforms, and the completion marker that tells a finished output from a partial one.
"""
from __future__ import annotations

from napari_resshift.errors import ResShiftError
from napari_resshift.ome_metadata import RUN_MARKER as MARKER
from napari_resshift.ome_metadata import multiscales_of, run_status  # noqa: F401 - run_status: one rule, re-exported

OME_ORDER = "tczyx"  # the order OME-Zarr requires: time, channel, then space
# how levels 1.. are made (execute.build_pyramid), in the multiscales' own words
DOWNSAMPLING = {"type": "local_mean", "metadata": {
    "description": "each level the 2x2 mean of the one above in y and x (integers rounded); the other axes kept",
    "method": "dask.array.coarsen(numpy.mean)",
}}


def axis_entries(axes: str, units: dict[str, str]) -> list[dict]:
    """NGFF axes, checked by ome-zarr-py: known names, types in order and units from the NGFF vocabulary."""
    from ome_zarr.axes import Axes
    from ome_zarr.format import FormatV04

    return Axes(list(axes), axes_units={a: u for a, u in units.items() if a in axes}, fmt=FormatV04()).to_list()


def level_transforms(axes: str, scale: dict, translation: dict, level: int) -> list[dict]:
    """Scale and translation of pyramid level ``level`` (2x mean downsampling of y and x per level from level 0)."""
    factor = {a: (2**level if a in "yx" else 1) for a in axes}
    return [
        {"type": "scale", "scale": [scale.get(a, 1.0) * factor[a] for a in axes]},
        {
            "type": "translation",
            "translation": [translation.get(a, 0.0) + scale.get(a, 1.0) * (factor[a] - 1) / 2 for a in axes],
        },
    ]


def multiscales(axes: str, *, levels: int, scale: dict, translation: dict, units: dict, name: str) -> dict:
    """The version-less multiscales entry of an image whose levels 1.. are 2x means."""
    return {
        "name": name,
        "axes": axis_entries(axes, units),
        "datasets": [
            {"path": str(k), "coordinateTransformations": level_transforms(axes, scale, translation, k)}
            for k in range(levels)
        ],
    } | (DOWNSAMPLING if levels > 1 else {})


def omero(channels: list[dict], *, low: list[float], high: list[float], dtype) -> dict:
    """``omero`` of the input's channels, completed where the input is silent: the display window defaults to the
    normalisation range, its bounds to the dtype's, the colour to white.
    """
    import numpy as np
    from ome_zarr_models.common.omero import Omero

    kind = np.dtype(dtype)
    info = np.iinfo(kind) if kind.kind in "iu" else None
    out = []
    for k, given in enumerate(channels):
        window = dict(given.get("window") or {})
        window.setdefault("start", float(low[min(k, len(low) - 1)]))
        window.setdefault("end", float(high[min(k, len(high) - 1)]))
        window.setdefault("min", float(info.min) if info else min(window["start"], 0.0))
        window.setdefault("max", float(info.max) if info else max(window["end"], 1.0))
        entry = {"color": "FFFFFF", "active": True} | given | {"window": window}
        entry.setdefault("label", f"channel {k}")
        out.append(entry)
    return Omero.model_validate({"channels": out}).model_dump(mode="json", exclude_none=True)


class V04:
    """OME-Zarr 0.4: zarr v2 with '/' chunk keys, ``multiscales`` (holding the version) and ``omero`` at the top."""

    version = "0.4"
    zarr_format = 2

    @staticmethod
    def array_options(axes: str) -> dict:
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}  # what ome-zarr-py writes and reads

    def attrs(self, ms: dict, *, omero: dict | None = None) -> dict:
        from ome_zarr_models.v04.image import ImageAttrs

        image = {"multiscales": [ms | {"version": self.version}]} | ({"omero": omero} if omero else {})
        return ImageAttrs.model_validate(image).model_dump(mode="json", exclude_none=True, by_alias=True)


class V05:
    """OME-Zarr 0.5: zarr v3 with dimension names, everything under the ``ome`` attribute, which holds the version."""

    version = "0.5"
    zarr_format = 3

    @staticmethod
    def array_options(axes: str) -> dict:
        return {"dimension_names": list(axes)}

    def attrs(self, ms: dict, *, omero: dict | None = None) -> dict:
        from ome_zarr_models.v05.image import ImageAttrs

        image = {"version": self.version, "multiscales": [ms]} | ({"omero": omero} if omero else {})
        return {"ome": ImageAttrs.model_validate(image).model_dump(mode="json", exclude_none=True, by_alias=True)}


FORMATS = {f.version: f for f in (V04(), V05())}
DEFAULT_FORMAT = "0.5"


def pick_format(version: str):
    if version not in FORMATS:
        raise ResShiftError(f"OME-Zarr version {version!r} is not supported; use one of {', '.join(FORMATS)}")
    return FORMATS[version]


def read_multiscales(attrs: dict) -> dict | None:
    """The first multiscales entry of an OME-Zarr image of any supported version, or None."""
    found = multiscales_of(attrs)
    return found[0] if found else None


def validate(path) -> object:
    """The ome-zarr-models image of the OME-Zarr at ``path``; raises where the metadata or the arrays break the spec."""
    import zarr
    from ome_zarr_models import open_ome_zarr

    return open_ome_zarr(zarr.open_group(str(path), mode="r"))


def mark_running(group, params: dict) -> None:
    group.attrs.update({MARKER: {"status": "running", "params": params}})


def mark_complete(group, fmt, ms: dict, params: dict, *, omero: dict | None = None, geo: dict | None = None) -> None:
    """One attribute write holding the image metadata and the marker: readers see all of it or none."""
    extra = {"geo": geo} if geo else {}
    group.attrs.update(fmt.attrs(ms, omero=omero) | extra | {MARKER: {"status": "complete", "params": params}})
