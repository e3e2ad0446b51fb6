"""The widget says what it does: the Run label against the click's action right after docking, Cancel heard at once,
the card in a user's words from the shipped cards, a model list readable in full, times and auto values as used.
xvfb-run -a python -m pytest tests/test_widget_words.py
"""
import json
import time
from importlib import resources

import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_resshift._napari import _model_info, _progress, _widget  # noqa: E402
from napari_resshift._napari._view import camera  # noqa: E402
from napari_resshift.engine import Upscaler  # noqa: E402
from napari_resshift.model import ResShiftModel  # noqa: E402
from napari_resshift.registry import SHIPPED, architecture  # noqa: E402

TIMEOUT_MS = 60_000


class Bicubic(torch.nn.Module):
    """A denoiser that returns the bicubic upscale it is conditioned on: fast, so whole layers run in a test."""

    halo = 8

    def condition(self, lq):
        return lq

    def forward(self, x, t, lq=None):
        return lq


def bicubic_model():
    model = ResShiftModel(architecture("tiny", mode="pixel")).eval()
    model.unet = Bicubic()
    return model


def shipped_card(name: str) -> dict:
    """The card as shipped beside the weights (the JSON copy ship_model.py writes)."""
    return json.loads((resources.files("napari_resshift") / "weights" / f"{name}.json").read_text())


def docked(make_napari_viewer, qtbot, layer_data):
    """A shown window with an image layer fitted to the whole canvas, then the dock opened over part of it."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    layer = viewer.add_image(layer_data, name="cells")
    qtbot.wait(50)
    viewer.reset_view()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.use_model(bicubic_model(), card={"name": "bicubic"})
    w.device.value = "cpu"
    qtbot.wait(200)  # the dock's layout narrows the canvas
    return viewer, layer, w


def click(qtbot, w):
    worker = w.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not w.running, timeout=TIMEOUT_MS)
    return w.viewer.layers[-1]


def says_preview(w) -> bool:
    assert w.run_button.text in _widget.RUN_TEXT.values()
    return w.run_button.text == _widget.RUN_TEXT[False]


def test_run_label_and_action_agree_right_after_docking(make_napari_viewer, qtbot):
    data = np.random.default_rng(0).integers(0, 255, (60, 120), dtype=np.uint8)  # wide: the dock hides a part
    viewer, layer, w = docked(make_napari_viewer, qtbot, data)
    # the image filled the canvas before the dock took its share: now part of it is off screen
    assert says_preview(w) and w._next_is_preview()
    out = click(qtbot, w)
    assert "preview" in out.name and out.data.shape != (240, 480)  # the label said so, and so it was
    assert not says_preview(w)  # the next click: the whole layer
    out = click(qtbot, w)
    assert "preview" not in out.name and out.data.shape == (240, 480)
    # the other way: zoomed in again the label says preview and the click does one; fitted, it says whole and does it
    viewer.layers.selection.active = layer
    w.layer.value = layer
    camera(viewer).zoom *= 3
    assert says_preview(w)
    assert "preview" in click(qtbot, w).name
    viewer.reset_view()
    camera(viewer).zoom *= 0.5  # everything in view, margins around it
    assert not says_preview(w)
    assert "preview" not in click(qtbot, w).name


def test_cancel_says_cancelling_at_once_and_resets(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.use_model(bicubic_model(), card={"name": "bicubic"})
    w.device.value = "cpu"
    w.advanced.tile.value, w.advanced.overlap.value = 16, 4
    viewer.add_image(np.random.default_rng(1).integers(0, 255, (160, 160), dtype=np.uint8))
    before = len(viewer.layers)
    seen = []

    def cancel_on_first_tile(event):
        if event[0] == "tile" and not seen:
            w.cancel()
            seen.append((w.panel.text.value, w.cancel_button.text, w.cancel_button.enabled))

    worker = w.run(preview=False)
    worker.yielded.connect(cancel_on_first_tile)
    qtbot.waitUntil(lambda: not w.running, timeout=TIMEOUT_MS)
    text, button, enabled = seen[0]
    assert text.startswith("cancelling") and button == "Cancelling…" and not enabled  # before the run stops
    assert len(viewer.layers) == before and any("cancelled" in m for _, m in messages)
    assert w.cancel_button.text == "Cancel" and w.run_button.enabled


@pytest.mark.parametrize("name", SHIPPED)
def test_card_is_the_shipped_card_in_a_users_words(make_napari_viewer, name):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.model.value = name
    card = shipped_card(name)
    clean = card["training"]["degradation"] == "bicubic"
    text = w.model_info.value
    assert text.splitlines()[0] == f"×{card['scale']}, " + ("for clean images" if clean else
                                                            "for noisy or blurred images")
    # the number that matters: the gain over bicubic on the images it is for, microscopy first, from the card's table
    table = card["metrics"]["tables"]["bicubic" if clean else "blind"]["microscopy"]
    gain = table[card["name"]]["psnr"] - table["bicubic"]["psnr"]
    assert text.splitlines()[1].startswith(f"microscopy {gain:+.1f} dB PSNR over bicubic")
    for jargon in ("ConvDenoiser", "packed", "degradation", "LR"):
        assert jargon not in text
    details = w.model_info.tooltip
    assert card["description"] in details and f"{card['training']['train_files']} images" in details
    for table_name, domains in card["metrics"]["tables"].items():
        for domain, scores in domains.items():
            assert f"{scores[card['name']]['psnr'] - scores['bicubic']['psnr']:+.2f}" in details
    assert w.model_info.value == _model_info.describe(name, card=card)[0]  # the header's card is the JSON's


@pytest.mark.parametrize("name", SHIPPED)
def test_auto_values_before_a_run_are_those_the_run_uses(make_napari_viewer, name):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.model.value = name
    up = Upscaler(name, device="cpu")
    adv = w.advanced
    assert adv.tile.value is None and adv.tile.number.value == up.default_tile
    assert adv.overlap.number.value == up.default_overlap(up.default_tile)
    assert adv.steps.number.value == up.model.schedule.steps
    adv.tile.value = 32  # a tile of one's own: the overlap auto will use follows it
    assert adv.overlap.value is None and adv.overlap.number.value == up.default_overlap(32) < up.default_overlap(
        up.default_tile)


def test_model_list_is_readable_in_full(make_napari_viewer):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    combo = w.model.native
    metrics = combo.view().fontMetrics()
    lines = [combo.itemText(i) for i in range(combo.count())]
    assert all(metrics.horizontalAdvance(line) <= combo.view().minimumWidth() for line in lines)
    shipped = [line for line in lines if line.split(":")[0] in SHIPPED]
    assert len(shipped) == len(SHIPPED) and max(map(len, shipped)) <= combo.minimumContentsLength()


def test_times_have_tenths_under_ten_seconds():
    assert [_progress.duration(s) for s in (0.04, 0.42, 8.26, 9.99, 12.4, 125, 3840)] == [
        "0.0 s", "0.4 s", "8.3 s", "10 s", "12 s", "2 min 05 s", "1 h 04 min"]
    assert _progress.status_text(3, 10, time.perf_counter() * 0 + 3.0) == "tiles 3/10 · about 7.0 s left"
