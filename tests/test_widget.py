"""The napari widget end to end, under a real (virtual) X display: xvfb-run -a python -m pytest tests/test_widget.py."""
import dask.array as da
import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


from napari_resshift._napari import _run, _widget  # noqa: E402
from napari_resshift.engine import Upscaler  # noqa: E402
from napari_resshift.loading import make_card, save_model  # noqa: E402
from napari_resshift.model import ResShiftModel  # noqa: E402
from napari_resshift.registry import SHIPPED, architecture  # noqa: E402

TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    torch.manual_seed(0)
    model = ResShiftModel(architecture("tiny")).eval()
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(model, path, make_card(model, name="tiny"))
    return path


class Bicubic(torch.nn.Module):
    """A denoiser that predicts the bicubic upscale it is conditioned on: the result is a bicubic ×4."""

    halo = 8  # latent pixels, as a denoiser declares its receptive field

    def condition(self, lq):
        return lq

    def forward(self, x, t, lq=None):
        return lq


@pytest.fixture
def widget(make_napari_viewer, tiny_path):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.model.value = "file"
    w.model_file.value = tiny_path
    w.device.value = "cpu"
    return w


def run(qtbot, w):
    worker = w.run()
    if worker is not None:
        qtbot.waitUntil(lambda: not w.running, timeout=TIMEOUT_MS)
    return worker


def added(w, before: int):
    return list(w.viewer.layers)[before:]


def test_manifest_opens_widget_and_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    assert isinstance(w, _widget.ResShiftWidget)
    viewer.open_sample("napari-resshift", "cells")
    assert viewer.layers[-1].data.dtype == np.uint16 and viewer.layers[-1].data.shape == (128, 128)
    assert w.layer.value is viewer.layers[-1]  # the picker follows layers being added


def test_picker_follows_add_remove_rename(widget):
    v = widget.viewer
    a = v.add_image(np.zeros((8, 8)), name="a")
    v.add_labels(np.zeros((8, 8), int), name="mask")
    b = v.add_image(np.ones((8, 8)), name="b")
    assert [name for name, _ in widget._image_layers()] == ["a", "b"]
    assert widget.layer.choices == (a, b)
    b.name = "renamed"
    assert "renamed" in [widget.layer.native.itemText(i) for i in range(widget.layer.native.count())]
    v.layers.remove(a)
    assert widget.layer.choices == (b,)


def test_gray_result_shape_geometry_metadata(qtbot, widget):
    v = widget.viewer
    data = np.random.default_rng(0).integers(0, 255, (24, 24), dtype=np.uint8)
    layer = v.add_image(data.copy(), name="cells", scale=(0.5, 0.25), translate=(1.0, 2.0), colormap="green",
                        contrast_limits=(10, 200), blending="additive")
    widget.layer.value = layer
    widget.advanced.seed.value = 3
    run(qtbot, widget)
    (out,) = added(widget, 1)
    assert out.name == "cells ×4 ResShift"
    assert out.data.shape == (96, 96) and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, [0.125, 0.0625])
    np.testing.assert_allclose(out.translate, [1.0 - 0.5 * 3 / 8, 2.0 - 0.25 * 3 / 8])
    assert out.colormap.name == "green" and tuple(out.contrast_limits) == (10, 200) and out.blending == "additive"
    meta = out.metadata["resshift"]
    assert meta["model"] == "tiny" and meta["seed"] == 3 and meta["steps"] == 4 and meta["device"] == "cpu"
    assert meta["time_s"] > 0 and meta["input"] == "cells"
    np.testing.assert_array_equal(layer.data, data)  # the input is never modified
    assert "×4" in widget.model_info.value


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_are_choices_and_run(qtbot, widget, name):
    assert name in [value for _, value in _widget.model_choices()]
    widget.model.value = name
    assert not widget.model_file.visible  # shipped: nothing to choose
    layer = widget.viewer.add_image(np.random.default_rng(0).integers(0, 255, (12, 16), dtype=np.uint8))
    widget.layer.value = layer
    run(qtbot, widget)
    out = widget.viewer.layers[-1]
    assert out.data.shape == (48, 64) and out.metadata["resshift"]["model"] == name


def test_bright_pixel_lands_on_the_same_world_coordinate(qtbot, widget):
    model = ResShiftModel(architecture("tiny", mode="pixel")).eval()
    model.unet = Bicubic()
    widget.use_model(model, card={"name": "bicubic"})
    data = np.zeros((16, 16), np.uint8)
    data[5, 9] = 255
    layer = widget.viewer.add_image(data, scale=(2.0, 3.0), translate=(10.0, -5.0))
    run(qtbot, widget)
    out = widget.viewer.layers[-1]
    hr = out.data.astype(float)
    assert hr.shape == (64, 64) and hr.max() > 100  # the bright pixel survived as a bright spot
    window = np.zeros_like(hr)
    window[16:32, 32:48] = hr[16:32, 32:48]
    ys, xs = np.indices(hr.shape)
    centroid = (np.sum(ys * window) / window.sum(), np.sum(xs * window) / window.sum())
    np.testing.assert_allclose(out.data_to_world(centroid), layer.data_to_world((5, 9)), atol=0.05)


@pytest.mark.parametrize("how", ["Cancel button", "napari activity panel"])
def test_cancel_mid_run_leaves_no_layer(qtbot, widget, messages, how):
    layer = widget.viewer.add_image(np.random.default_rng(1).random((80, 80), np.float32))
    widget.layer.value = layer
    widget.advanced.tile.value = 16  # 7 x 7 tiles, computed a tile row (7 tiles) per forward pass
    ticks = []

    def on_yield(event):
        if event[0] == "tile":
            ticks.append(event[1:])
            widget.cancel() if how == "Cancel button" else worker.quit()

    worker = widget.run()
    worker.yielded.connect(on_yield)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(widget.viewer.layers) == 1
    assert ticks and ticks[0][1] == 49 and len(ticks) <= 14  # stopped within one batch of the request
    assert any("cancelled" in m for _, m in messages)
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_stack_whole_and_current_plane(qtbot, widget):
    v = widget.viewer
    stack = np.random.default_rng(2).integers(0, 4000, (3, 24, 24), dtype=np.uint16)
    layer = v.add_image(stack, scale=(5.0, 1.0, 1.0), translate=(100.0, 0.0, 0.0))
    widget.scope.value = True
    run(qtbot, widget)
    whole = v.layers[-1]
    assert whole.data.shape == (3, 96, 96) and whole.data.dtype == np.uint16
    np.testing.assert_allclose(whole.scale, [5.0, 0.25, 0.25])
    np.testing.assert_allclose(whole.translate, [100.0, -0.375, -0.375])
    v.dims.set_current_step(0, 2)
    widget.layer.value = layer
    widget.scope.value = False
    run(qtbot, widget)
    plane = v.layers[-1]
    assert plane.data.shape == (1, 96, 96)
    np.testing.assert_allclose(plane.translate, [110.0, -0.375, -0.375])  # placed at its own z
    np.testing.assert_array_equal(plane.data[0], whole.data[2])  # same noise for a plane whatever the scope


def test_rgb_and_multichannel(qtbot, widget):
    v = widget.viewer
    rgb = v.add_image(np.random.default_rng(3).integers(0, 255, (20, 24, 3), dtype=np.uint8), rgb=True)
    run(qtbot, widget)
    out = v.layers[-1]
    assert out.rgb and out.data.shape == (80, 96, 3)
    channels = (np.random.default_rng(4).random((2, 16, 16)) * [[[1.0]], [[50.0]]]).astype(np.float32)
    multi = v.add_image(channels, axis_labels=("c", "y", "x"))
    widget.layer.value = multi
    widget.scope.value = True  # every channel
    run(qtbot, widget)
    out = v.layers[-1]
    assert out.data.shape == (2, 64, 64) and out.data.dtype == np.float32
    norm = out.metadata["resshift"]["normalization"]
    assert norm["high"][1] > 10 * norm["high"][0]  # each channel normalised on its own range
    assert rgb.data.shape == (20, 24, 3)


def test_samples_add_mean_std_and_consistency(qtbot, widget):
    v = widget.viewer
    layer = v.add_image(np.random.default_rng(5).integers(0, 255, (16, 16), dtype=np.uint8), scale=(2.0, 2.0))
    widget.samples.value = 2
    widget.consistency.value = True
    run(qtbot, widget)
    mean, std, cons = added(widget, 1)
    assert mean.name.endswith("ResShift mean") and std.name.endswith("ResShift std")
    assert mean.data.shape == std.data.shape == (64, 64) and std.data.dtype == np.float32
    assert std.data.max() > 0  # two seeds differ somewhere
    np.testing.assert_allclose(std.scale, mean.scale)
    assert cons.data.shape == (16, 16)
    np.testing.assert_allclose(cons.scale, layer.scale)
    np.testing.assert_allclose(cons.translate, layer.translate)
    block_mean = mean.data.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(cons.data, np.abs(block_mean - layer.data), rtol=1e-5, atol=1e-3)


def test_dask_layer_in_memory_and_out_of_core_agree(qtbot, widget):
    v = widget.viewer
    data = np.random.default_rng(6).integers(0, 255, (2, 24, 24), dtype=np.uint8)
    layer = v.add_image(da.from_array(data, chunks=(1, 12, 12)), name="lazy")
    widget.advanced.tile.value = 16
    widget.scope.value = True
    run(qtbot, widget)
    in_memory = v.layers[-1]
    assert isinstance(in_memory.data, np.ndarray)
    widget.memory_limit = 0  # as if the result did not fit in memory
    widget.layer.value = layer
    widget.consistency.value = True
    run(qtbot, widget)
    lazy, cons = added(widget, 2)
    assert hasattr(lazy.data, "dask") and "resshift-" in lazy.metadata["resshift"]["storage"]
    np.testing.assert_array_equal(np.asarray(lazy.data), in_memory.data)
    np.testing.assert_allclose(lazy.translate, in_memory.translate)
    assert np.asarray(cons.data).shape == (2, 24, 24)


@pytest.mark.parametrize("situation", ["no layer", "labels", "one pixel", "bad model file", "tile vs overlap"])
def test_bad_situations_end_in_one_notification(qtbot, widget, messages, tmp_path, situation):
    v = widget.viewer
    if situation == "labels":
        v.add_labels(np.zeros((8, 8), int), name="mask")
    elif situation == "one pixel":
        v.add_image(np.ones((1, 1), np.uint8), name="dot")
    elif situation != "no layer":
        v.add_image(np.ones((8, 8), np.uint8))
    if situation == "bad model file":
        bad = tmp_path / "broken.safetensors"
        bad.write_bytes(b"not a model at all")
        widget.model_file.value = bad
    if situation == "tile vs overlap":
        widget.advanced.tile.value, widget.advanced.overlap.value = 16, 16
    before = len(v.layers)
    run(qtbot, widget)
    errors = [m for s, m in messages if s == "error"]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0]
    expected = {"no layer": "no image layer", "labels": "labels layer", "one pixel": "1×1",
                "bad model file": "broken.safetensors", "tile vs overlap": "larger than the overlap"}[situation]
    assert expected in errors[0]
    assert len(v.layers) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a missing GPU")
def test_missing_gpu_is_one_notification(qtbot, widget, messages):
    widget.viewer.add_image(np.ones((8, 8), np.uint8))
    widget.device.value = "cuda"
    run(qtbot, widget)
    assert [m for s, m in messages if s == "error"] == [
        "device 'cuda' was asked for but no CUDA GPU is available; choose the device auto or cpu"
    ]


def test_out_of_memory_retries_with_smaller_tiles(qtbot, widget, messages, monkeypatch):
    real = Upscaler.super_resolve

    def small_memory(self, lr, **kwargs):
        if lr.shape[-1] > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, lr, **kwargs)

    monkeypatch.setattr(Upscaler, "super_resolve", small_memory)
    # this machine has no GPU: give the CPU the plan a GPU gets, so the retry path itself runs
    monkeypatch.setattr(_run, "fallback_plan", lambda tile, overlap, device: [(tile, device), (16, device)])
    widget.viewer.add_image(np.random.default_rng(7).integers(0, 255, (24, 24), dtype=np.uint8))
    run(qtbot, widget)
    out = widget.viewer.layers[-1]
    assert out.data.shape == (96, 96) and out.metadata["resshift"]["tile"] == 16
    assert any(s == "info" and "retrying with 16-pixel tiles" in m for s, m in messages)
    assert not [m for s, m in messages if s == "error"]


def test_out_of_memory_everywhere_is_one_notification(qtbot, widget, messages, monkeypatch):
    def no_memory(self, lr, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(Upscaler, "super_resolve", no_memory)
    widget.viewer.add_image(np.ones((8, 8), np.uint8))
    run(qtbot, widget)
    errors = [m for s, m in messages if s == "error"]
    assert len(errors) == 1 and "out of memory" in errors[0]


def test_fallback_plan_shrinks_tiles_then_uses_the_cpu():
    assert _run.fallback_plan(128, 8, "cuda") == [(128, "cuda"), (64, "cuda"), (32, "cuda"), (128, "cpu")]
    assert _run.fallback_plan(128, 40, "mps") == [(128, "mps"), (64, "mps"), (128, "cpu")]
    assert _run.fallback_plan(128, 8, "cpu") == [(128, "cpu")]
