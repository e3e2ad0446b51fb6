"""Render docs/screenshot.png: napari with the ResShift widget docked and a result beside its input (grid view).

Uses the plugin's sample and the shipped default model, or ``--model PATH``; without either, a tiny random model
(the picture then shows the layout, not the quality). Needs a display: ``xvfb-run -a python scripts/screenshot.py``.
"""
import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model file or folder; default: the shipped default model")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--size", default="1500x860", help="window size WIDTHxHEIGHT")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_resshift.errors import ResShiftError
    from napari_resshift.loading import load_model

    viewer = napari.Viewer(show=True)
    width, height = (int(n) for n in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)  # napari has no public window-size setter
    _, widget = viewer.window.add_plugin_dock_widget("napari-resshift", "ResShift")
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
    qapp = QApplication.instance()
    before = len(viewer.layers)
    widget.run()
    while widget.running:
        qapp.processEvents()
        time.sleep(0.01)
    if len(viewer.layers) == before:
        raise SystemExit("the run added no layer; see the message above")
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 1  # the input first, its result to the right
    viewer.reset_view()
    for _ in range(30):
        qapp.processEvents()
        time.sleep(0.02)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print(f"wrote {args.out}")
    viewer.close()


def tiny_random_model():
    import torch

    from napari_resshift.model import ResShiftModel
    from napari_resshift.registry import architecture

    torch.manual_seed(0)
    return ResShiftModel(architecture("tiny")).eval()


if __name__ == "__main__":
    main()
