"""The widget as a microscopist meets it, under Xvfb: controls and their auto values, progress, the preview of the
visible region, and a sequence of runs that once crashed napari.
xvfb-run -a python -m pytest tests/test_widget_controls.py
"""
import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from magicgui.widgets import Container  # noqa: E402

from napari_resshift._napari._view import camera  # noqa: E402
from napari_resshift.engine import Upscaler  # noqa: E402
from napari_resshift.model import ResShiftModel  # noqa: E402
from napari_resshift.normalization import DEFAULT_PERCENTILES  # noqa: E402
from napari_resshift.registry import architecture  # noqa: E402

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ResShiftModel(architecture("tiny")).eval()


@pytest.fixture
def widget(make_napari_viewer, tiny):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.use_model(tiny, card={"name": "tiny"})
    w.device.value = "cpu"
    return w


def run(qtbot, w, **kwargs):
    worker = w.run(**kwargs)
    assert worker is not None
    qtbot.waitUntil(lambda: not w.running, timeout=TIMEOUT_MS)
    return w.viewer.layers[-1]


def controls(container):
    for child in container:
        if isinstance(child, Container):
            yield from controls(child)
        else:
            yield child


def test_every_control_has_a_tooltip_and_advanced_starts_collapsed(widget):
    shown = [c for c in controls(widget) if c is not widget.model_info and c not in widget.panel]
    everything = shown + list(controls(widget.advanced))
    assert len(everything) >= 17
    assert all(c.tooltip for c in everything), [c.label for c in everything if not c.tooltip]
    assert not widget.advanced_section.isExpanded()
    adv = widget.advanced
    assert adv.tile.label == "tile (LR px)" and adv.overlap.label == "overlap (LR px)"


def test_defaults_say_auto_and_resolve_to_the_models_values(qtbot, widget):
    adv = widget.advanced
    for control in (adv.tile, adv.overlap, adv.steps):
        assert control.auto.value and control.auto.text == "auto" and not control.number.enabled  # no 0 or -1
        assert control.value is None
    assert adv.options() == {"tile": None, "overlap": None, "steps": None, "seed": 0, "norm": "auto",
                             "percentiles": DEFAULT_PERCENTILES}
    assert adv.precision.value == "fp32" and widget.samples.value == 1 and not widget.consistency.value
    assert widget.device.choices[0] == "auto" and widget.device.native.itemText(0).startswith("auto (")
    assert adv.low.enabled  # percentiles apply under auto (for anything but 8-bit)
    layer = widget.viewer.add_image(np.random.default_rng(0).integers(0, 4000, (20, 20), dtype=np.uint16))
    widget.layer.value = layer
    out = run(qtbot, widget)
    meta = out.metadata["resshift"]
    upscaler = Upscaler(widget.python_model[0], device="cpu")
    assert meta["tile"] == upscaler.default_tile and meta["overlap"] == upscaler.default_overlap(meta["tile"])
    assert meta["steps"] == upscaler.model.schedule.steps and meta["precision"] == "fp32"
    norm = meta["normalization"]
    assert norm["mode"] == "percentile"
    np.testing.assert_allclose([norm["low"][0], norm["high"][0]], np.percentile(layer.data, DEFAULT_PERCENTILES))
    for control, name in ((adv.tile, "tile"), (adv.overlap, "overlap"), (adv.steps, "steps")):
        assert control.number.value == meta[name] and control.value is None  # greyed, showing what auto chose
    adv.tile.auto.value = False
    assert adv.tile.number.enabled and adv.options()["tile"] == meta["tile"]


def test_values_replace_auto(qtbot, widget):
    adv = widget.advanced
    adv.tile.value, adv.overlap.value, adv.steps.value, adv.seed.value = 16, 4, 3, 7
    adv.norm.value = "percentile"
    adv.low.value, adv.high.value = 1.0, 99.0
    layer = widget.viewer.add_image(np.random.default_rng(1).random((20, 20), np.float32))
    widget.layer.value = layer
    meta = run(qtbot, widget).metadata["resshift"]
    assert (meta["tile"], meta["overlap"], meta["steps"], meta["seed"]) == (16, 4, 3, 7)
    np.testing.assert_allclose([meta["normalization"]["low"][0], meta["normalization"]["high"][0]],
                               np.percentile(layer.data, (1.0, 99.0)))
    adv.norm.value = "range"
    assert not adv.low.enabled and not adv.high.enabled
    assert run(qtbot, widget).metadata["resshift"]["normalization"]["low"] == [0.0]


def test_model_card_summary_and_official_weights_pointer(widget):
    widget.model.value = "default"
    text = widget.model_info.value
    assert text.startswith("×4, for noisy or blurred images") and "dB PSNR over bicubic" in text
    assert "ConvDenoiser" not in text and "degradation" not in text  # the jargon is behind the tooltip
    assert "trained on" in widget.model_info.tooltip and "ConvDenoiser" in widget.model_info.tooltip
    widget.model.value = "v3"
    text = widget.model_info.value
    assert "github.com/zsyOAOA/ResShift" in text and "S-Lab License 1.0" in text and "non-commercial" in text
    assert not widget.model_file.native.isHidden()  # a file to choose (the viewer itself is not shown)


def test_stack_scope_defaults_to_the_current_plane_and_shows_the_whole_stack(qtbot, widget, messages):
    v = widget.viewer
    layer = v.add_image(np.random.default_rng(2).integers(0, 255, (3, 16, 16), dtype=np.uint8))
    widget.layer.value = layer
    assert widget.scope.value is False and widget.scope.enabled
    assert widget.scope.native.itemText(1) == "whole stack (3 planes)"
    v.dims.set_current_step(0, 1)
    plane = run(qtbot, widget)
    assert plane.data.shape == (1, 64, 64)
    assert "whole stack (3 planes, about" in widget.scope.native.itemText(1)  # the estimate, once measured
    ticks, planes = [], []
    widget.scope.value = True
    worker = widget.run()
    worker.yielded.connect(lambda e: e[0] == "tile" and ticks.append(
        (widget.panel.bar.value, widget.panel.bar.max, widget.panel.text.value, not widget.panel.native.isHidden())))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert v.layers[-1].data.shape == (3, 64, 64)
    values = [t[0] for t in ticks]
    assert values == sorted(values) and values[-1] == ticks[-1][1] and len(set(values)) == len(values) > 2
    assert all(shown for *_, shown in ticks) and widget.panel.native.isHidden()  # shown while it runs
    assert any("plane 3/3" in text for _, _, text, _ in ticks) and any("left" in text for _, _, text, _ in ticks)
    assert ticks[0][2].startswith(f"tiles {ticks[0][0]}/{ticks[0][1]}")
    done = [m for s, m in messages if "ResShift added" in m]
    assert len(done) == 2 and done[-1].endswith(" s") and "×4 ResShift" in done[-1]


def _expected_box(viewer, layer):
    """LR pixels whose world footprint meets the field of view, checked pixel by pixel."""
    height, width = viewer.canvas.size
    centre = np.asarray(camera(viewer).center[-2:])
    half = np.array([height, width]) / (2 * camera(viewer).zoom)
    low, high = centre - half, centre + half
    inside = np.zeros(layer.data.shape[-2:], bool)
    for y, x in np.ndindex(*inside.shape):
        a = layer.data_to_world((y - 0.5, x - 0.5))[-2:]
        b = layer.data_to_world((y + 0.5, x + 0.5))[-2:]
        inside[y, x] = np.all(np.maximum(a, b) > low) and np.all(np.minimum(a, b) < high)
    ys, xs = np.nonzero(inside)
    return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


def test_preview_covers_the_visible_region_and_equals_the_whole_run(qtbot, widget):
    v = widget.viewer
    data = np.random.default_rng(3).integers(0, 4000, (40, 48), dtype=np.uint16)
    layer = v.add_image(data, scale=(0.5, 0.5), translate=(3.0, -2.0))
    widget.layer.value = layer
    widget.advanced.tile.value = 16  # several tiles, some outside the view
    v.reset_view()
    assert widget.run_button.text == "Run (whole layer)"
    camera(v).zoom *= 3
    camera(v).center = (0.0, 3.0 + 0.5 * 13.2, -2.0 + 0.5 * 30.7)
    assert widget.run_button.text == "Run (visible region)"
    box = _expected_box(v, layer)
    assert 0 < box[0] and box[2] < 40 and 0 < box[1] and box[3] < 48  # really zoomed in
    preview = run(qtbot, widget)
    s = 4
    assert preview.name.endswith("preview") and preview.metadata["resshift"]["preview_box_lr"] == list(box)
    assert preview.data.shape == ((box[2] - box[0]) * s, (box[3] - box[1]) * s)
    assert widget.run_button.text == "Run (whole layer)"  # the second click does it all
    whole = run(qtbot, widget)
    assert whole.data.shape == (160, 192)
    np.testing.assert_array_equal(preview.data, whole.data[box[0] * s:box[2] * s, box[1] * s:box[3] * s])
    for corner in [(0, 0), (preview.data.shape[0] - 1, preview.data.shape[1] - 1)]:
        np.testing.assert_allclose(preview.data_to_world(corner),
                                   whole.data_to_world((corner[0] + box[0] * s, corner[1] + box[1] * s)), atol=1e-9)


def test_preview_of_an_rgb_stack_plane_with_consistency(qtbot, widget):
    v = widget.viewer
    layer = v.add_image(np.random.default_rng(4).integers(0, 255, (2, 24, 24, 3), dtype=np.uint8), rgb=True)
    widget.layer.value = layer
    widget.consistency.value = True
    camera(v).zoom *= 4
    v.dims.set_current_step(0, 1)
    run(qtbot, widget)
    preview, cons = list(v.layers)[-2:]
    box = preview.metadata["resshift"]["preview_box_lr"]
    assert preview.rgb and preview.data.shape[1:3] == ((box[2] - box[0]) * 4, (box[3] - box[1]) * 4)
    np.testing.assert_allclose(cons.data_to_world((0, 0, 0)), layer.data_to_world((1, box[0], box[1])))
    run(qtbot, widget)  # the current plane, whole
    whole, whole_cons = list(v.layers)[-2:]
    assert "preview" not in whole.name
    np.testing.assert_array_equal(preview.data[0], whole.data[0, box[0] * 4:box[2] * 4, box[1] * 4:box[3] * 4])
    np.testing.assert_allclose(cons.data[0], whole_cons.data[0, box[0]:box[2], box[1]:box[3]], rtol=1e-6)


def test_the_once_crashing_sequence_runs_ten_times(qtbot, make_napari_viewer, tiny):
    """Stack on the current plane, clear, RGB, clear, float: napari drew every step (show=True), ten times.

    It segfaulted in vispy's glDrawArrays on Mesa's llvmpipe: once a napari ``progress`` bar has existed, drawing an
    RGB layer after layers were removed crashes, with or without this plugin (see test_napari_progress_crash_...).
    The widget keeps napari's activity entry off on software GL; every layer is drawn as soon as it is added."""
    viewer = make_napari_viewer(show=True)
    _, w = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    w.use_model(tiny, card={"name": "tiny"})
    w.device.value = "cpu"
    rng = np.random.default_rng(5)
    assert not w.activity  # llvmpipe under Xvfb
    for _ in range(10):
        stack = viewer.add_image(rng.integers(0, 4000, (3, 8, 8), dtype=np.uint16))
        viewer.dims.set_current_step(0, 2)
        w.layer.value = stack
        assert run(qtbot, w).data.shape == (1, 32, 32)
        viewer.screenshot(canvas_only=True)
        viewer.layers.clear()
        w.layer.value = viewer.add_image(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), rgb=True)
        viewer.screenshot(canvas_only=True)  # the draw that crashed
        assert run(qtbot, w).rgb
        viewer.screenshot(canvas_only=True)
        viewer.layers.clear()
        w.layer.value = viewer.add_image(rng.random((8, 8), np.float32))
        viewer.screenshot(canvas_only=True)
        assert run(qtbot, w).data.dtype == np.float32
        viewer.screenshot(canvas_only=True)
        viewer.layers.clear()
    assert not w.running and w.run_button.enabled


def test_napari_activity_entry_is_kept_where_the_renderer_is_not_software(qtbot, widget):
    from napari.utils import progress

    widget.activity = True  # as on a GPU's OpenGL; this viewer is not drawn, so llvmpipe does not crash here
    widget.viewer.add_image(np.random.default_rng(6).integers(0, 255, (16, 16), dtype=np.uint8), name="cells")
    seen = []
    worker = widget.run()
    worker.yielded.connect(lambda e: e[0] == "tile" and seen.append([p.desc for p in progress._all_instances]))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert seen and all(any("ResShift cells" in d for d in descs) for descs in seen)
    assert not any("ResShift" in p.desc for p in progress._all_instances)  # closed at the end


NAPARI_ALONE = """
import sys
import time
import numpy as np
import napari
from napari.utils import progress
from qtpy.QtWidgets import QApplication

def wait(ms):
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)

rng = np.random.default_rng(5)
viewer = napari.Viewer(show=True)
viewer.add_image(rng.integers(0, 4000, (3, 8, 8), dtype=np.uint16))
viewer.dims.set_current_step(0, 2)
if sys.argv[1] == "progress":
    bar = progress(total=0, desc="x")
    wait(20)
    bar.total = 4
    for _ in range(4):
        bar.update(1)
        wait(5)
    bar.close()
viewer.add_image(rng.integers(0, 4000, (3, 32, 32), dtype=np.uint16), scale=(1, 0.25, 0.25))
viewer.screenshot(canvas_only=True)
wait(50)
viewer.layers.clear()
viewer.add_image(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), rgb=True)
viewer.screenshot(canvas_only=True)
wait(50)
print("drawn")
"""


def test_napari_progress_crash_is_napari_vispy_mesa_not_this_plugin(tmp_path):
    """Where napari draws with llvmpipe, the crash needs nothing of ours: a napari progress bar is enough."""
    import os
    import signal
    import subprocess
    import sys

    if not os.environ.get("DISPLAY"):
        pytest.skip("needs a display (xvfb-run)")
    script = tmp_path / "napari_alone.py"
    script.write_text(NAPARI_ALONE)
    plain = subprocess.run([sys.executable, str(script), "none"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "drawn" in plain.stdout
    with_bar = subprocess.run([sys.executable, str(script), "progress"], capture_output=True, text=True, timeout=120)
    if with_bar.returncode == 0:
        pytest.skip("this napari / vispy / Mesa does not crash (fixed upstream, or a hardware renderer)")
    assert with_bar.returncode == -signal.SIGSEGV and "drawn" not in with_bar.stdout, with_bar.stderr[-500:]
