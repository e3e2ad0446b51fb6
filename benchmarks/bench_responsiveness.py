"""How responsive napari stays while the ResShift widget runs on the CPU: the longest gap between Qt event-loop ticks.

A 10 ms QTimer records when it fires during a run; a gap much above 10 ms is time the GUI thread could not run
(the GIL held by the worker, or work done in the GUI thread). Target: longest gap < 100 ms while tiles
are computed, with the widget's progress bar updated per tile. Reported apart, as one-off GUI-thread costs: the Run
click and adding the result layers (napari's cost of showing any new layer). Needs a display:
``xvfb-run -a python benchmarks/bench_responsiveness.py [--size 128] [--tile 64] [--arch tiny|small|v3] [--samples 1]``
"""
import argparse
import os
import statistics
import time

import numpy as np
import torch

TICK_MS = 10
TARGET_MS = 100


def build_model(arch: str):
    from napari_resshift.model import ResShiftModel
    from napari_resshift.registry import PRESETS, architecture

    torch.manual_seed(0)
    config = PRESETS[arch].config if arch in PRESETS else architecture(arch)
    return ResShiftModel(config).eval()  # random weights: the speed and the GIL use are those of trained ones


def measure(viewer, widget, qapp, *, size: int, tile: int, samples: int, consistency: bool) -> dict:
    from qtpy.QtCore import QTimer

    from napari_resshift.samples import cell_image

    layer = viewer.add_image(cell_image(size=size), name=f"cells {size}")
    widget.layer.value = layer
    widget.advanced.tile.value = tile
    widget.samples.value = samples
    widget.consistency.value = consistency
    ticks = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    before = len(viewer.layers)
    last_tile = []
    timer.start()
    clicked = time.perf_counter()
    worker = widget.run(preview=False)  # in the GUI thread: checks, snapshot, the progress bars
    worker.yielded.connect(lambda event: event[0] == "tile" and last_tile.append(time.perf_counter()))
    while widget.running:
        qapp.processEvents()
        time.sleep(0.001)
    for _ in range(10):  # let the timer fire once after the result layers are shown
        qapp.processEvents()
        time.sleep(TICK_MS / 1000)
    timer.stop()
    if len(viewer.layers) == before:
        raise SystemExit("the run added no layer; see the notification above")
    ticks = np.array(ticks)
    during = ticks[ticks <= last_tile[-1] + TICK_MS / 1000]
    gaps = np.diff(during) * 1000
    after = ticks[ticks > during[-1]]
    return {
        "layer": f"{size}x{size}",
        "tile": tile,
        "tiles": _tiles(widget, size, tile) * samples,
        "run_s": last_tile[-1] - clicked,
        "ticks": len(during),
        "click_ms": 1000 * (during[0] - clicked),
        "median_ms": statistics.median(gaps),
        "p99_ms": float(np.percentile(gaps, 99)),
        "max_ms": float(gaps.max()),
        "show_ms": 1000 * (after[0] - during[-1]),
    }


def idle_gaps(qapp, seconds: float = 3.0) -> dict:
    """The same timer with nothing running: what this machine's load alone does to the ticks."""
    from qtpy.QtCore import QTimer

    ticks = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        qapp.processEvents()
        time.sleep(0.001)
    timer.stop()
    gaps = np.diff(ticks) * 1000
    return {"median_ms": statistics.median(gaps), "p99_ms": float(np.percentile(gaps, 99)), "max_ms": float(gaps.max())}


def _tiles(widget, size, tile):
    from napari_resshift.tiling import plan_tiles

    upscaler = next(iter(widget._upscalers.values()))
    return len(plan_tiles(size, size, tile=tile, overlap=upscaler.default_overlap(tile)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[128])
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--arch", default="tiny", help="tiny, small, or a preset name (v3: the official size)")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--consistency", action="store_true")
    parser.add_argument("--activity", action="store_true",
                        help="napari's activity entry too, as on a hardware renderer (off on Mesa's llvmpipe)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_resshift._napari._widget import ResShiftWidget

    viewer = napari.Viewer(show=True)
    widget = ResShiftWidget(viewer)
    viewer.window.add_dock_widget(widget, name="ResShift")
    widget.use_model(build_model(args.arch), card={"name": f"{args.arch} (random)"})
    widget.device.value = "cpu"
    widget.activity = widget.activity or args.activity
    qapp = QApplication.instance()
    idle = idle_gaps(qapp)
    rows = [
        measure(viewer, widget, qapp, size=n, tile=args.tile, samples=args.samples, consistency=args.consistency)
        for n in args.size
    ]
    print(f"model {args.arch}, CPU, torch threads {torch.get_num_threads()}, timer {TICK_MS} ms, "
          f"load {os.getloadavg()[0]:.1f}, napari activity entry {'on' if widget.activity else 'off'}")
    print(f"idle viewer: median {idle['median_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms, max {idle['max_ms']:.1f} ms")
    header = (
        f"{'layer':>9} {'tile':>5} {'tiles':>6} {'run s':>7} {'ticks':>6} {'Run click ms':>13} "
        f"{'median ms':>10} {'p99 ms':>7} {'max ms':>7} {'add layers ms':>14}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['layer']:>9} {r['tile']:>5} {r['tiles']:>6} {r['run_s']:>7.1f} {r['ticks']:>6} {r['click_ms']:>13.0f} "
            f"{r['median_ms']:>10.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {r['show_ms']:>14.0f}"
        )
    worst = max(r["max_ms"] for r in rows)
    verdict = "within" if worst < TARGET_MS else "ABOVE"
    print(f"longest gap during runs {worst:.0f} ms: {verdict} the {TARGET_MS} ms target")
    viewer.close()


if __name__ == "__main__":
    main()
