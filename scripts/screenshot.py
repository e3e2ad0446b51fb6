"""Render docs/screenshot.png: napari with the ResShift widget mid-run (its progress bar), a preview on the canvas.

The plugin's sample is zoomed into and Run previews the visible region; the view is then widened and Run does the
whole layer, and the window is captured part way through. Uses the shipped default model, or ``--model PATH``;
without either, a tiny random model (the picture then shows the layout, not the quality).
Needs a display: ``xvfb-run -a python scripts/screenshot.py``.
"""
import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model file or folder; default: the shipped default model")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--size", default="1500x900", help="window size WIDTHxHEIGHT")
    parser.add_argument("--dock-width", type=int, default=470, help="width of the widget's dock in pixels")
    parser.add_argument("--at", type=float, default=0.4, help="capture when this fraction of the tiles is done")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_resshift._napari._view import camera
    from napari_resshift.errors import ResShiftError
    from napari_resshift.loading import load_model

    viewer = napari.Viewer(show=True)
    width, height = (int(n) for n in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)  # napari has no public window-size setter
    dock, widget = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
    viewer.open_sample("napari-resshift", "cells")
    if args.model:
        widget.model.value = "file"
        widget.model_file.value = args.model
    else:
        try:
            load_model(None)
        except ResShiftError:
            widget.use_model(tiny_random_model(), name="tiny (random weights)")
    widget.device.value = "cpu"
    widget.advanced.tile.value = 32  # a few dozen tiles, so that the progress bar has something to show
    widget.advanced_section.expand(animate=False)
    qapp = QApplication.instance()
    viewer.window._qt_window.resizeDocks([dock], [args.dock_width], Qt.Orientation.Horizontal)
    pump(qapp, 10)

    view = camera(viewer)
    view.zoom *= 3
    view.center = (0.0, 45.0, 60.0)
    pump(qapp, 10)
    before = len(viewer.layers)
    wait(qapp, widget, widget.run())  # the first click: the visible region only
    if len(viewer.layers) == before:
        raise SystemExit("the preview added no layer; see the message above")
    viewer.reset_view()
    view.zoom *= 1.7  # the sharp preview patch among the input's coarse pixels
    view.center = (0.0, 45.0, 60.0)
    pump(qapp, 10)

    captured = []

    def capture(event):
        if event[0] == "tile" and not captured and event[1] >= args.at * event[2]:
            pump(qapp, 3)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(args.out), canvas_only=False)
            captured.append(event[1:])

    worker = widget.run()  # the second click: the whole layer
    worker.yielded.connect(capture)
    wait(qapp, widget, worker)
    if not captured:
        raise SystemExit("the run ended before the capture point; lower --at")
    print(f"wrote {args.out} at tile {captured[0][0]}/{captured[0][1]}")
    viewer.close()


def pump(qapp, n: int):
    for _ in range(n):
        qapp.processEvents()
        time.sleep(0.02)


def wait(qapp, widget, worker):
    if worker is None:
        raise SystemExit("Run started nothing; see the message above")
    while widget.running:
        qapp.processEvents()
        time.sleep(0.005)
    pump(qapp, 5)


def tiny_random_model():
    import torch

    from napari_resshift.model import ResShiftModel
    from napari_resshift.registry import architecture

    torch.manual_seed(0)
    return ResShiftModel(architecture("tiny")).eval()


if __name__ == "__main__":
    main()
