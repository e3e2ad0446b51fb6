"""napari reader for OME-Zarr images (this project's outputs, and the OME-Zarr 0.4/0.5 images they overlay), on a local
disk or in object storage by URL (s3://, gs://, az://, https://: zarr's FsspecStore, credentials from the environment):
the lazy pyramid with the composed scale and translation of level 0, axis units, and the omero channels' names, colours,
windows. An unfinished output of the pipeline, or an image with a missing level, is claimed and refused with a
notification.
"""
from __future__ import annotations

from pathlib import Path

from ..ome_metadata import OmeImage, parse_image, unfinished

REFUSED = [(None,)]  # napari's "read, nothing to add": no other reader then opens the partial data


def get_reader(path):
    """npe2 reader hook: a function for an OME-Zarr image folder (or an unfinished output of the pipeline, to refuse
    it), None for anything else (another reader's turn)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return None if _inspect(str(path)) is None else read_ome_zarr


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _name(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1] if _is_url(location) else Path(location).name


def _open_group(location: str):
    """The zarr group at a local folder or a URL (read only); None when there is none to open."""
    import zarr

    if _is_url(location):
        from zarr.storage import FsspecStore

        return zarr.open_group(FsspecStore.from_url(location, read_only=True), mode="r")
    return zarr.open_group(location, mode="r") if Path(location).is_dir() else None


def _inspect(location: str) -> tuple[OmeImage | None, str, object] | None:
    """(image, "", group) for a readable OME-Zarr image, (None, why, group) for one this reader refuses, None when
    not ours."""
    import zarr

    try:
        group = _open_group(location)
        attrs = group.attrs.asdict() if group is not None else None
    except Exception:  # noqa: BLE001 - whatever makes it unreadable, it is not for this reader
        return None
    if attrs is None:
        return None
    if unfinished(attrs):
        return None, (f"{_name(location)}: an unfinished upscaling output (the run was interrupted); finish it with "
                      f"python -m pipelines.upscale_zarr INPUT -o {location} --resume"), group
    try:
        image = parse_image(attrs)
    except Exception:  # noqa: BLE001 - metadata this reader does not understand: another reader's turn
        return None
    if image is None:
        return None
    for k, level in enumerate(image.levels):
        try:
            array = group[level.path]
        except Exception:  # noqa: BLE001 - deleted, or unreadable: the pyramid is damaged
            array = None
        if not isinstance(array, zarr.Array):
            return None, (f"{_name(location)}: level {k} of the pyramid ({level.path!r}) is missing or unreadable; "
                          "the image is damaged: upscale it again (pipelines: --overwrite) or restore the level"), group
    return image, "", group


def read_ome_zarr(path) -> list[tuple]:
    """One image layer (or one per channel, with its omero name, colour and window), in world units; a refused image
    is one error notification and no layer."""
    import dask.array as da

    location = str(path[0] if isinstance(path, (list, tuple)) else path)
    image, refused, group = _inspect(location)
    if refused:
        from napari.utils.notifications import show_error

        show_error(refused)
        return REFUSED
    pyramid = [da.from_zarr(group[level.path]) for level in image.levels]
    level0 = image.levels[0]
    kept = [k for k, a in enumerate(image.axes) if a != "c"]  # napari splits channels into layers
    kwargs = {
        "name": image.name or _name(location),
        "multiscale": len(pyramid) > 1,
        "scale": [level0.scale[k] for k in kept],
        "translate": [level0.translation[k] for k in kept],
        "axis_labels": [image.axes[k] for k in kept],
        "units": [image.units.get(image.axes[k], "pixel") for k in kept],
        "metadata": {"ome_zarr": location},
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
