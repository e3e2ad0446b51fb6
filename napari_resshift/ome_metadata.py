"""OME-Zarr image metadata as plain data: multiscales of 0.4/0.5 images with every transform composed, units in the
NGFF vocabulary, ``omero`` channels. Shared by the pipeline's input reader and the napari reader; reads, never writes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .errors import ResShiftError

# the NGFF axis types by the one-letter names this project uses
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
RUN_MARKER = "resshift"  # root attribute of the pipeline's outputs: {"status": "running" | "complete", "params": {}}


@dataclass(frozen=True)
class Level:
    """One pyramid level: its array path and the composed scale / translation of its pixel centres."""

    path: str
    scale: tuple[float, ...]
    translation: tuple[float, ...]


@dataclass
class OmeImage:
    axes: str  # one letter per axis; '?' where the name is not one letter
    levels: list[Level]
    units: dict[str, str] = field(default_factory=dict)  # NGFF unit names; only the axes that have one
    channels: list[dict] = field(default_factory=list)  # omero channels as stored
    name: str | None = None
    version: str = ""


def multiscales_of(attrs: dict) -> tuple[dict, dict] | None:
    """(first multiscales entry, the attributes holding it) of an OME-Zarr 0.4 or 0.5 image, or None."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and str(ome.get("version")) == "0.5" and ome.get("multiscales"):
        return ome["multiscales"][0], ome
    ms = attrs.get("multiscales")
    if ms and isinstance(ms, list) and str(ms[0].get("version", "0.4")) in ("0.4", "0.3"):
        return ms[0], attrs
    return None


def run_status(attrs: dict) -> str | None:
    """``running`` or ``complete`` for an output of the upscaling pipeline (its marker), None for anything else."""
    marker = attrs.get(RUN_MARKER)
    return marker.get("status") if isinstance(marker, dict) else None


def unfinished(attrs: dict) -> bool:
    """Whether ``attrs`` are an upscaling output's whose run has not completed (readers refuse it: it has holes)."""
    return run_status(attrs) not in (None, "complete")


def compose(transforms: list[dict], ndim: int) -> tuple[list[float], list[float]]:
    """Scale and translation of a list of NGFF scale / translation / identity transforms applied in order."""
    scale, translation = [1.0] * ndim, [0.0] * ndim
    for t in transforms or []:
        kind = t.get("type")
        if kind == "identity":
            continue
        if kind not in ("scale", "translation") or kind not in t:
            raise ResShiftError(
                f"OME-Zarr transform {kind!r} {'given by a path ' if 'path' in t else ''}is not supported; "
                "only inline scale and translation are"
            )
        values = [float(v) for v in t[kind]]
        if len(values) != ndim:
            raise ResShiftError(f"OME-Zarr {kind} has {len(values)} values for {ndim} axes")
        if kind == "scale":
            scale = [s * v for s, v in zip(scale, values)]
            translation = [o * v for o, v in zip(translation, values)]
        else:
            translation = [o + v for o, v in zip(translation, values)]
    return scale, translation


def parse_image(attrs: dict) -> OmeImage | None:
    """The image of an OME-Zarr group's attributes, each level's dataset transform composed with the multiscale's."""
    found = multiscales_of(attrs)
    if found is None:
        return None
    ms, holder = found
    entries = ms.get("axes", [])
    names = [a["name"] if isinstance(a, dict) else a for a in entries]
    axes = "".join(n.lower() if isinstance(n, str) and len(n) == 1 else "?" for n in names)
    levels = []
    for ds in ms["datasets"]:
        scale, translation = compose(ds.get("coordinateTransformations", []) + ms.get("coordinateTransformations", []),
                                     len(axes))
        levels.append(Level(str(ds["path"]), tuple(scale), tuple(translation)))
    units = {}
    for k, (a, entry) in enumerate(zip(axes, entries)):
        unit = entry.get("unit") if isinstance(entry, dict) else None
        if unit:
            name, factor = ngff_unit(unit, kind=entry.get("type") or AXIS_TYPES.get(a, "space"))
            if name:
                units[a] = name
                levels = [_rescaled(lv, k, factor) for lv in levels]
    omero = holder.get("omero") or attrs.get("omero") or {}
    return OmeImage(axes, levels, units, list(omero.get("channels", [])), ms.get("name"), str(holder.get("version",
                    ms.get("version", ""))))


def _rescaled(level: Level, axis: int, factor: float) -> Level:
    if factor == 1.0:
        return level
    scale, translation = list(level.scale), list(level.translation)
    scale[axis] *= factor
    translation[axis] *= factor
    return Level(level.path, tuple(scale), tuple(translation))


@functools.lru_cache(maxsize=1)
def _registry():
    import pint

    return pint.UnitRegistry()


def ngff_unit(symbol: str, *, kind: str = "space") -> tuple[str | None, float]:
    """The NGFF name of a unit written as a name or symbol (``µm``, ``Å``, ``cm``, ``micron``, ``ms`` ...) and the
    factor that converts values to it; a unit NGFF lacks becomes metre / second. (None, 1.0) when it is no length
    (space) or duration (time), e.g. ``pixel``.
    """
    from ome_zarr.axes import KNOWN_SPATIAL_UNITS, KNOWN_TEMPORAL_UNITS

    known, base = {"space": (KNOWN_SPATIAL_UNITS, "meter"), "time": (KNOWN_TEMPORAL_UNITS, "second")}.get(kind, ((), ""))
    if not known:
        return None, 1.0
    import pint

    try:
        unit = _registry().Unit(str(symbol).strip().replace(" ", "_"))
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, AssertionError):
        return None, 1.0
    if unit.dimensionality != _registry().Unit(base).dimensionality:
        return None, 1.0
    name = str(unit)
    if name == "micron":
        name = "micrometer"
    if name in known:
        return name, 1.0
    return base, float(_registry().Quantity(1.0, unit).to(base).magnitude)
