"""napari reader for OME-Zarr images (this project's outputs, and the OME-Zarr 0.4/0.5 images they overlay): the lazy
pyramid with the composed scale and translation of level 0, axis units, and the omero channels' names, colours, windows.
"""
from __future__ import annotations

from pathlib import Path

from ..ome_metadata import OmeImage, parse_image

RUN_MARKER = "resshift"  # the pipeline's root attribute; an unfinished run holds partial data


def get_reader(path):
    """npe2 reader hook: a function for an OME-Zarr image folder, None for anything else (another reader's turn)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    image = _image_at(Path(path))
    return None if image is None else read_ome_zarr


def _image_at(path: Path) -> OmeImage | None:
    if not path.is_dir():
        return None
    import zarr

    try:
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        marker = attrs.get(RUN_MARKER)
        if isinstance(marker, dict) and marker.get("status") != "complete":
            return None
        return parse_image(attrs)
    except Exception:  # noqa: BLE001 - whatever makes it unreadable, it is not for this reader
        return None


def read_ome_zarr(path) -> list[tuple]:
    """One image layer (or one per channel, with its omero name, colour and window), in world units."""
    import dask.array as da

    path = Path(path[0] if isinstance(path, (list, tuple)) else path)
    image = _image_at(path)
    pyramid = [da.from_zarr(str(path / level.path)) for level in image.levels]
    level0 = image.levels[0]
    kept = [k for k, a in enumerate(image.axes) if a != "c"]  # napari splits channels into layers
    kwargs = {
        "name": image.name or path.name,
        "multiscale": len(pyramid) > 1,
        "scale": [level0.scale[k] for k in kept],
        "translate": [level0.translation[k] for k in kept],
        "axis_labels": [image.axes[k] for k in kept],
        "units": [image.units.get(image.axes[k], "pixel") for k in kept],
        "metadata": {"ome_zarr": str(path)},
    }
    data = pyramid if len(pyramid) > 1 else pyramid[0]
    if "c" not in image.axes:
        return [(data, kwargs | _channel_style(image.channels[:1]), "image")]
    count = pyramid[0].shape[image.axes.index("c")]
    channels = image.channels if len(image.channels) == count else []
    kwargs |= {"channel_axis": image.axes.index("c")}
    if channels:
        styles = [_channel_style([c]) for c in channels]
        kwargs |= {key: [s.get(key) for s in styles] for key in ("name", "colormap", "contrast_limits", "visible")
                   if all(key in s for s in styles)}
    return [(data, kwargs, "image")]


def _channel_style(channels: list[dict]) -> dict:
    if not channels:
        return {}
    channel, style = channels[0], {}
    if channel.get("label"):
        style["name"] = str(channel["label"])
    if channel.get("color"):
        from napari.utils.colormaps import ensure_colormap

        style["colormap"] = ensure_colormap(f"#{channel['color']}")
    window = channel.get("window") or {}
    if "start" in window and "end" in window and window["end"] > window["start"]:
        style["contrast_limits"] = [float(window["start"]), float(window["end"])]
    if "active" in channel:
        style["visible"] = bool(channel["active"])
    return style
