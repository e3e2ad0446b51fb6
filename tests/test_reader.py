"""The napari reader (npe2): an input and its upscaled output open with world coordinates that overlay exactly."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from napari_resshift._napari import _reader
from napari_resshift.engine import Upscaler
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture
from pipelines import execute, ome, upscale_zarr

from conftest import check_ome_zarr

ROOT = Path(__file__).resolve().parents[1]


class Bicubic(torch.nn.Module):
    """A denoiser that predicts the bicubic upscale it is conditioned on: the pipeline then upscales bicubically, so a
    bright pixel stays a symmetric peak centred where the input's was.
    """

    halo = 8

    def condition(self, lq):
        return lq

    def forward(self, x, t, lq=None):
        return lq


@pytest.fixture
def bicubic_like(monkeypatch) -> str:
    model = ResShiftModel(architecture("tiny", mode="pixel")).eval()
    model.unet = Bicubic()
    upscaler = Upscaler(model, device="cpu", card={"name": "bicubic"})
    pick = lambda spec, **_: upscaler  # noqa: E731 - the model spec the command line gets is this stand-in
    monkeypatch.setattr(upscale_zarr, "cached_upscaler", pick)
    monkeypatch.setattr(execute, "cached_upscaler", pick)
    monkeypatch.setattr(upscale_zarr, "check_spec", lambda spec: None)  # a name no registry knows: the stand-in's
    return "bicubic"


def layer_of(path):
    from napari.layers import Image

    reader = _reader.get_reader(str(path))
    assert reader is not None
    (data, kwargs, kind), = reader(str(path))
    assert kind == "image"
    return Image(data, **{k: v for k, v in kwargs.items() if k != "channel_axis"}), kwargs


def peak_world(layer, level0: np.ndarray) -> np.ndarray:
    """World position of the intensity-weighted centre of the brightest spot."""
    excess = np.clip(level0.astype(float) - np.median(level0), 0, None)
    i, j = np.unravel_index(np.argmax(excess), excess.shape)
    window = excess[max(0, i - 6): i + 7, max(0, j - 6): j + 7]
    yy, xx = np.mgrid[max(0, i - 6): max(0, i - 6) + window.shape[0], max(0, j - 6): max(0, j - 6) + window.shape[1]]
    centre = [(window * yy).sum() / window.sum(), (window * xx).sum() / window.sum()]
    return np.asarray(layer.data_to_world(centre))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_bright_pixel_lands_at_the_same_world_coordinate(bicubic_like, tmp_path, version):
    data = np.full((16, 20), 200, np.uint16)
    data[6, 11] = 3000
    src = tmp_path / "in.ome.zarr"
    fmt = ome.pick_format(version)
    group = zarr.open_group(str(src), mode="w", zarr_format=fmt.zarr_format)
    group.create_array("0", shape=data.shape, dtype="uint16", **fmt.array_options("yx"))[:] = data
    group.attrs.update(fmt.attrs(ome.multiscales("yx", levels=1, scale={"y": 0.5, "x": 0.7}, units={
        "y": "micrometer", "x": "micrometer"}, translation={"y": 3.0, "x": -2.0}, name="in")))
    out = tmp_path / "out.ome.zarr"
    assert upscale_zarr.main([str(src), "-o", str(out), "--model", bicubic_like, "--quiet", "--tile", "16",
                              "--overlap", "4", "--format", version]) == 0
    check_ome_zarr(out)
    lr, lr_kwargs = layer_of(src)
    hr, hr_kwargs = layer_of(out)
    assert hr_kwargs["multiscale"] and [str(u) for u in hr.units] == ["micrometer", "micrometer"]
    np.testing.assert_allclose(lr.data_to_world([6, 11]), [6 * 0.5 + 3, 11 * 0.7 - 2])
    hr0 = np.asarray(zarr.open_group(str(out), mode="r")["0"][:])
    np.testing.assert_allclose(peak_world(hr, hr0), lr.data_to_world([6, 11]), atol=0.01)  # a twentieth of an HR pixel
    np.testing.assert_allclose(lr.data_to_world([-0.5, -0.5]), hr.data_to_world([-0.5, -0.5]))  # outer corners


def test_channels_keep_their_names_colours_and_windows(tmp_path):
    src = tmp_path / "in.ome.zarr"
    fmt = ome.pick_format("0.5")
    group = zarr.open_group(str(src), mode="w", zarr_format=3)
    group.create_array("0", shape=(2, 8, 8), dtype="uint16", **fmt.array_options("cyx"))
    channels = [{"label": "dna", "color": "0000FF", "window": {"start": 5, "end": 50}},
                {"label": "actin", "color": "00FF00", "window": {"start": 7, "end": 70}, "active": False}]
    omero = ome.omero(channels, low=[0, 0], high=[1, 1], dtype="uint16")
    group.attrs.update(fmt.attrs(ome.multiscales("cyx", levels=1, scale={"y": 2.0, "x": 2.0}, translation={},
                                                 units={"y": "nanometer", "x": "nanometer"}, name="cells"),
                                 omero=omero))
    (data, kwargs, _), = _reader.get_reader(str(src))(str(src))
    assert kwargs["channel_axis"] == 0 and kwargs["name"] == ["dna", "actin"] and kwargs["scale"] == [2.0, 2.0]
    assert kwargs["contrast_limits"] == [[5, 50], [7, 70]] and kwargs["visible"] == [True, False]
    assert [tuple(c.colors[-1]) for c in kwargs["colormap"]] == [(0, 0, 1, 1), (0, 1, 0, 1)]
    assert kwargs["units"] == ["nanometer", "nanometer"]


def test_other_paths_are_left_to_other_readers(tmp_path):
    plain = tmp_path / "plain.zarr"
    zarr.open_array(str(plain), mode="w", shape=(4, 4), dtype="uint8")
    group = tmp_path / "group.zarr"
    zarr.open_group(str(group), mode="w").attrs["note"] = "no multiscales"
    for path in (plain, group, tmp_path / "x.tif", tmp_path / "missing.zarr"):
        assert _reader.get_reader(str(path)) is None


def refused_by_the_reader(path) -> str:
    """The reader claims ``path`` (no other reader gets it), adds no layer, and says why in one error notification."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    reader = _reader.get_reader(str(path))
    assert reader is not None, "left to another reader, which would show the partial data"
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        layers = reader(str(path))
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    assert layers == [(None,)]  # napari's "read, nothing to add"
    (event,) = seen
    assert event.severity == NotificationSeverity.ERROR and "\n" not in event.message
    return event.message


def test_an_unfinished_output_is_claimed_and_refused_with_what_to_do(tmp_path):
    """A killed run's output holds a partial, black pyramid: napari must not open it as an image."""
    running = tmp_path / "scan_x4.ome.zarr"
    group = zarr.open_group(str(running), mode="w")
    group.create_array("0", shape=(8, 8), dtype="uint8")
    ome.mark_running(group, {})
    message = refused_by_the_reader(running)
    assert "unfinished" in message and "--resume" in message and str(running) in message


def test_an_output_with_a_deleted_level_is_a_clear_message(tiny_model_path, tmp_path):
    out = tmp_path / "out.ome.zarr"
    src = tmp_path / "in.zarr"
    zarr.open_array(str(src), mode="w", shape=(12, 12), dtype="uint16")[:] = 7
    assert upscale_zarr.main([str(src), "-o", str(out), "--model", tiny_model_path, "--tile", "16", "--overlap", "4",
                              "--quiet"]) == 0
    assert _reader.get_reader(str(out)) is not None and len(_reader.read_ome_zarr(str(out))) == 1
    shutil.rmtree(out / "1")
    message = refused_by_the_reader(out)
    assert "level 1" in message and "missing" in message and "ArrayNotFound" not in message


def test_the_manifest_declares_the_reader():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari_resshift" / "napari.yaml")
    reader, = manifest.contributions.readers
    command = next(c for c in manifest.contributions.commands if c.id == reader.command)
    assert reader.accepts_directories and "*.zarr" in reader.filename_patterns
    assert command.python_name == "napari_resshift._napari._reader:get_reader"
