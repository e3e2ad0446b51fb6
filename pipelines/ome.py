"""OME-Zarr metadata: one small writer/reader per spec version (0.4 on zarr v2, 0.5 on zarr v3), pyramid transforms,
and the completion marker that tells a finished output from a partial one.
"""
from __future__ import annotations

from napari_resshift.errors import ResShiftError

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
OME_ORDER = "tczyx"  # the order OME-Zarr requires: time, channel, then space
MARKER = "resshift"  # root attribute: {"status": "running" | "complete", "params": {...}}


def axis_entries(axes: str, units: dict[str, str]) -> list[dict]:
    return [{"name": a, "type": AXIS_TYPES[a]} | ({"unit": units[a]} if a in units else {}) for a in axes]


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
    return {
        "name": name,
        "axes": axis_entries(axes, units),
        "datasets": [
            {"path": str(k), "coordinateTransformations": level_transforms(axes, scale, translation, k)}
            for k in range(levels)
        ],
    }


class V04:
    """OME-Zarr 0.4: zarr v2, ``multiscales`` at the top of the attributes, the version inside it."""

    version = "0.4"
    zarr_format = 2

    def attrs(self, ms: dict) -> dict:
        return {"multiscales": [{"version": self.version} | ms]}

    def read(self, attrs: dict) -> dict | None:
        ms = attrs.get("multiscales")
        if ms and str(ms[0].get("version", "0.4")) in ("0.4", "0.3"):
            return ms[0]
        return None


class V05:
    """OME-Zarr 0.5: zarr v3, everything under the ``ome`` attribute, which holds the version."""

    version = "0.5"
    zarr_format = 3

    def attrs(self, ms: dict) -> dict:
        return {"ome": {"version": self.version, "multiscales": [ms]}}

    def read(self, attrs: dict) -> dict | None:
        ome = attrs.get("ome")
        if isinstance(ome, dict) and str(ome.get("version")) == self.version and ome.get("multiscales"):
            return ome["multiscales"][0]
        return None


FORMATS = {f.version: f for f in (V04(), V05())}


def pick_format(version: str):
    if version not in FORMATS:
        raise ResShiftError(f"OME-Zarr version {version!r} is not supported; use one of {', '.join(FORMATS)}")
    return FORMATS[version]


def read_multiscales(attrs: dict) -> dict | None:
    """The first multiscales entry of an OME-Zarr image of any supported version, or None."""
    for fmt in FORMATS.values():
        ms = fmt.read(attrs)
        if ms is not None:
            return ms
    return None


def run_status(attrs: dict) -> str | None:
    """``running`` or ``complete`` for an output of this pipeline, None for anything else."""
    marker = attrs.get(MARKER)
    return marker.get("status") if isinstance(marker, dict) else None


def mark_running(group, params: dict) -> None:
    group.attrs.update({MARKER: {"status": "running", "params": params}})


def mark_complete(group, fmt, ms: dict, params: dict) -> None:
    """One attribute write holding the image metadata and the marker: readers see all of it or none."""
    group.attrs.update(fmt.attrs(ms) | {MARKER: {"status": "complete", "params": params}})
