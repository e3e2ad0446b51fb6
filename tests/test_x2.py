"""An x2 model through every front-end: twice the size, OME scale 1/2 and translation -0.25 input pixels, an exact
overlay in napari, the BioImage.io axes."""
import os

import numpy as np
import pytest
import torch
import zarr
from conftest import check_ome_zarr, check_overlay

from napari_resshift.engine import Upscaler
from napari_resshift.loading import make_card, save_model
from napari_resshift.model import ResShiftModel
from napari_resshift.registry import architecture
from pipelines import ome, upscale_zarr
from pipelines.example import write_example

FLAGS = ["--tile", "16", "--overlap", "4", "--quiet", "--seed", "1"]


@pytest.fixture(scope="module")
def x2_path(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ResShiftModel(architecture("conv-tiny", mode="packed", scale=2)).eval()
    return str(save_model(model, tmp_path_factory.mktemp("model") / "x2.safetensors", make_card(model, name="x2")))


def test_the_api_gives_twice_the_size(x2_path):
    up = Upscaler(x2_path, device="cpu")
    image = np.random.default_rng(0).integers(0, 4000, (20, 26), dtype=np.uint16)
    result = up.upscale(image, tile=16)
    assert up.scale == 2 and result.image.shape == (40, 52) and result.image.dtype == np.uint16
    assert result.info["scale"] == 2


@pytest.fixture(scope="module")
def cli_output(x2_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("x2")
    demo = write_example(tmp / "demo.zarr", height=40, width=48)
    out = tmp / "out.ome.zarr"
    assert upscale_zarr.main([str(demo), "-o", str(out), "--model", x2_path, *FLAGS]) == 0
    return demo, out


def test_the_cli_writes_ome_scale_one_half_and_translation_minus_a_quarter(cli_output):
    demo, out = cli_output
    attrs = check_ome_zarr(out)
    src = ome.read_multiscales(zarr.open_group(str(demo), mode="r").attrs.asdict())["datasets"][0]
    dst = ome.read_multiscales(attrs)
    (s_in, t_in), (s_out, t_out) = (d["coordinateTransformations"] for d in (src, dst["datasets"][0]))
    np.testing.assert_allclose(s_out["scale"][-2:], np.asarray(s_in["scale"][-2:]) / 2)
    np.testing.assert_allclose(t_out["translation"][-2:],
                               np.asarray(t_in["translation"][-2:]) - 0.25 * np.asarray(s_in["scale"][-2:]))
    level0 = zarr.open_group(str(out), mode="r")[dst["datasets"][0]["path"]]
    assert level0.shape[-2:] == (80, 96) and dst["name"].endswith(" x2")


def test_the_reader_opens_the_x2_output_on_its_grid(cli_output):
    from napari_resshift._napari._reader import get_reader

    _, out = cli_output
    (data, kwargs, kind), = get_reader(str(out))(str(out))
    scale, translation = ome.read_multiscales(zarr.open_group(str(out), mode="r").attrs.asdict())["datasets"][0][
        "coordinateTransformations"]
    assert kind == "image" and data[0].shape[-2:] == (80, 96)
    np.testing.assert_allclose(kwargs["scale"][-2:], scale["scale"][-2:])
    np.testing.assert_allclose(kwargs["translate"][-2:], translation["translation"][-2:])


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="napari.Viewer needs a display (run under Xvfb)")
def test_napari_overlays_the_x2_output_on_its_input(make_napari_viewer, cli_output):
    check_overlay(make_napari_viewer(), *cli_output, scale=2)


def test_the_widget_places_an_x2_result_on_its_layer(make_napari_viewer, qtbot, x2_path):
    pytest.importorskip("pytestqt")
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.model.value = "file"
    w.model_file.value = x2_path
    w.device.value = "cpu"
    layer = viewer.add_image(np.random.default_rng(1).integers(0, 4000, (2, 24, 24), dtype=np.uint16),
                             scale=(5.0, 1.0, 1.0), translate=(100.0, 0.0, 0.0))
    w.layer.value = layer
    w.scope.value = True
    worker = w.run()
    if worker is not None:
        qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    result = viewer.layers[-1]
    assert result.data.shape == (2, 48, 48) and "×2" in result.name
    np.testing.assert_allclose(result.scale, [5.0, 0.5, 0.5])
    np.testing.assert_allclose(result.translate, [100.0, -0.25, -0.25])
    np.testing.assert_allclose(layer.data_to_world([0, -0.5, -0.5]), result.data_to_world([0, -0.5, -0.5]))


def test_the_bioimageio_package_scales_its_output_axes_by_two(x2_path, tmp_path, monkeypatch):
    pytest.importorskip("bioimageio.spec")
    import socket

    from bioimageio.spec import load_description

    from napari_resshift import export
    from napari_resshift.loading import load_model

    def refuse(*args, **kwargs):
        raise OSError("the tests run offline")

    monkeypatch.setattr(socket, "create_connection", refuse)
    model, card = load_model(x2_path)
    path = export.export_package(model, card, tmp_path / "x2pkg", rgb=False, seed=3)
    descr = load_description(path, perform_io_checks=True)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    spatial = [a for a in descr.outputs[0].axes if str(a.id) in ("y", "x")]
    assert [a.scale for a in spatial] == [0.5, 0.5] and "x2" in descr.name
