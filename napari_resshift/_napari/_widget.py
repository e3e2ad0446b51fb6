"""The Plugins → ResShift dock widget: choices, Run / Cancel, progress, and the layers a run adds.

Work runs in a napari ``thread_worker`` that yields per tile; every failure ends in one notification sentence.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QSizePolicy
from superqt import QCollapsible

from . import _big_layers, _controls, _job, _model_info, _output_layers, _progress, _run, _view
from ..engine import DEVICES, Cancelled, Upscaler, pick_device
from ..errors import ResShiftError, first_line
from ..loading import load_model
from ..registry import PRESETS, SHIPPED

log = logging.getLogger(__name__)

MODEL_FILE_FILTER = "Models (*.safetensors *.pth *.pt *.ckpt)"
RUN_TEXT = {True: "Run (whole layer)", False: "Run (visible region)"}  # keyed by: does the next click do it all
SHOWN_CHARACTERS = 36  # the model list's closed width: the shipped models' lines in full


MODEL_INFO_TIP = "From the model's card: the scale, what it is for, and its quality"
model_choices = _model_info.choices


class ResShiftWidget(Container):
    """Upscale the chosen image layer with a ResShift model; results are added as new, exactly overlaid layers.

    The first Run on a zoomed-in view upscales only what the canvas shows (a preview, placed where it belongs);
    the next Run does the whole layer (the current plane, or the whole stack).
    """

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.python_model = None  # (model, card) handed over by ``use_model``
        self._upscalers: dict[tuple, Upscaler] = {}
        self._worker = None
        self._helper: threading.Thread | None = None  # the compute thread; it may outlive a quit worker by a batch
        self._cancel = threading.Event()
        self._progress = None  # napari's activity entry
        self._previewed = None  # the layer whose visible region was previewed last: the next Run does it whole
        self._seconds_per_pixel: dict[tuple, float] = {}  # measured per (model, device, precision)
        self.memory_limit = _big_layers.default_memory_limit()  # outputs larger than this go to a temporary zarr
        self.activity = not _progress.software_gl(napari_viewer)  # napari's activity entry, where it cannot crash

        self.layer = ComboBox(label="image", choices=self._image_layers, tooltip="The image layer to upscale")
        self.model = ComboBox(
            label="model", choices=self._model_choices, value="default",
            tooltip="Shipped models run as installed; official ResShift presets need their .pth files "
                    "(published by the ResShift authors under their non-commercial S-Lab License 1.0)",
        )
        self.model_file = FileEdit(
            label="model file", mode="r", filter=MODEL_FILE_FILTER,
            tooltip="A .safetensors model exported by training, or an official ResShift .pth denoiser",
        )
        self.autoencoder_file = FileEdit(
            label="autoencoder", mode="r", filter=MODEL_FILE_FILTER,
            tooltip="The official autoencoder_vq_f4.pth that goes with an official denoiser",
        )
        self.model.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.native.setMinimumContentsLength(SHOWN_CHARACTERS)  # the shipped models' lines, in full
        self.model_info = Label(label="card", tooltip=MODEL_INFO_TIP)
        self.model_info.native.setWordWrap(True)
        self.model_info.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # wraps
        auto = pick_device("auto").type
        self.device = ComboBox(
            label="device", choices=[(f"auto ({auto})", "auto")] + [(d, d) for d in DEVICES[1:]],
            tooltip="Where the model runs; auto picks a CUDA or Apple GPU when there is one, else the CPU",
        )
        self.scope = ComboBox(
            label="planes", choices=self._scope_choices, value=False,
            tooltip="For a z/t stack: the plane on screen, or every plane (count and estimated time shown)",
        )
        self.samples = SpinBox(
            label="samples", min=1, max=64, value=1,
            tooltip="Runs with different seeds; more than 1 adds a mean and a per-pixel standard-deviation layer",
        )
        self.consistency = CheckBox(
            text="add a data-consistency layer",
            tooltip="Adds |downsampled result − input|: where the result, downsampled, departs from the input",
        )
        self.advanced = _controls.Advanced()
        self.run_button = PushButton(text=RUN_TEXT[True])
        self.cancel_button = PushButton(text="Cancel", enabled=False, tooltip="Stop after the tile in progress")
        self.panel = _progress.ProgressPanel()
        main = Container(
            widgets=[self.layer, self.model, self.model_file, self.autoencoder_file, self.model_info, self.device,
                     self.scope, self.samples, self.consistency]
        )
        bottom = Container(widgets=[self.run_button, self.cancel_button, self.panel], labels=False)
        super().__init__(widgets=[main, bottom], labels=False)
        self.advanced_section = QCollapsible("Advanced")
        self.advanced_section.setDuration(0)
        self.advanced_section.addWidget(self.advanced.native)
        self.advanced_section.setToolTip("tile, overlap, seed, steps, precision, normalisation")
        self.native.layout().insertWidget(1, self.advanced_section)

        self._card: dict | None = None  # the chosen model's card, once known
        self.advanced.tile.changed.connect(self._show_planned)
        self.model.changed.connect(self._show_model_files)
        self.model_file.changed.connect(self._show_model_info)
        self._show_model_files()
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._fit_model_list()
        self.layer.changed.connect(self._refresh_scope)
        self.samples.changed.connect(self._refresh_scope)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_inserted)
        layers.events.removed.connect(self._on_removed)
        layers.events.moved.connect(self.reset_choices)
        for layer in layers:
            layer.events.name.connect(self.reset_choices)
        view = _view.camera(self.viewer)
        view.events.zoom.connect(self._show_run_text)
        view.events.center.connect(self._show_run_text)
        self.viewer.canvas.events.size.connect(self._show_run_text)  # docking this widget narrows the canvas
        self.viewer.dims.events.ndisplay.connect(self._show_run_text)
        self.reset_choices()
        self._pick_active()
        self._refresh_scope()
        QTimer.singleShot(0, self._show_run_text)  # once the dock is laid out

    # layer picker ------------------------------------------------------------------------------------------
    def _image_layers(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_inserted(self, event):
        event.value.events.name.connect(self.reset_choices)
        self.reset_choices()
        if isinstance(event.value, Image) and self.layer.value is None:
            self.layer.value = event.value

    def _on_removed(self, event):
        event.value.events.name.disconnect(self.reset_choices)
        if self._previewed is event.value:
            self._previewed = None
        self.reset_choices()

    def _pick_active(self):
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            self.layer.value = active

    # scope and the Run button's next action ------------------------------------------------------------------
    def _stack_planes(self) -> int:
        layer = self.layer.value
        if layer is None:
            return 1
        data = layer.data[0] if layer.multiscale else layer.data
        return math.prod(data.shape[: layer.ndim - 2])

    def _scope_choices(self, _widget=None):
        planes = self._stack_planes()
        whole = f"whole stack ({planes} planes"
        estimate = self._estimate_seconds(planes)
        whole += f", about {_progress.duration(estimate)})" if estimate is not None else ")"
        return [("current plane", False), (whole, True)]

    def _estimate_seconds(self, planes: int) -> float | None:
        """From the last run's time per LR pixel with the same model, device and precision."""
        if not hasattr(self, "advanced"):  # asked while the controls are being made
            return None
        layer = self.layer.value
        rate = self._seconds_per_pixel.get(self._rate_key())
        if rate is None or layer is None:
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        height, width = data.shape[layer.ndim - 2:layer.ndim]
        return rate * planes * height * width * self.samples.value

    def _rate_key(self) -> tuple:
        return (self.model.value, str(self.model_file.value), self.device.value, self.advanced.precision.value)

    def _refresh_scope(self, *_):
        whole = self.scope.value
        self.scope.reset_choices()  # new labels: magicgui then falls back to the first choice
        self.scope.value = whole
        self.scope.enabled = self._stack_planes() > 1
        self._show_run_text()

    def _next_is_preview(self) -> bool:
        layer = self.layer.value
        if layer is None or layer is self._previewed:
            return False
        try:
            return _view.visible_box(self.viewer, layer) is not None
        except ResShiftError:
            return True

    def _show_run_text(self, *_) -> bool:
        """Label the Run button with what a click does now; returns whether that is a preview."""
        preview = self._next_is_preview()
        if self.running:
            return preview
        self.run_button.text = RUN_TEXT[not preview]
        self.run_button.tooltip = (
            "Upscale only the region the canvas shows (a quick look); the next click does the whole layer"
            if preview else "Upscale the whole layer: the current plane, or the whole stack if chosen"
        )
        return preview

    # model -------------------------------------------------------------------------------------------------
    def _model_choices(self, _widget=None):
        given = [(self.python_model[1].get("name", "from Python"), "python")] if self.python_model else []
        return model_choices() + given

    def _show_model_files(self, *_):
        choice = self.model.value
        self.model_file.visible = choice == "file" or choice in PRESETS and PRESETS[choice].config is not None
        self.autoencoder_file.visible = choice != "file" and self.model_file.visible
        self._show_model_info()

    def _fit_model_list(self):
        """The open list as wide as its longest line, whatever the dock's width."""
        combo = self.model.native
        widest = max(combo.view().fontMetrics().horizontalAdvance(combo.itemText(i)) for i in range(combo.count()))
        margins = 2 * combo.iconSize().width() + combo.view().verticalScrollBar().sizeHint().width()
        combo.view().setMinimumWidth(widest + margins)

    def _show_model_info(self, *_, card: dict | None = None):
        """The card under the model list, its details as the tooltip, and the auto values it implies."""
        choice = self.model.value
        if card is None and choice == "python":
            card = self.python_model[1]
        try:
            card = card if card is not None else _model_info.card_for(choice, path=_chosen_path(self.model_file.value))
            text, details = _model_info.describe(choice, card=card)
        except ResShiftError as exc:
            card, text, details = None, str(exc), ""
        self.model_info.value = text
        self.model_info.tooltip = details or MODEL_INFO_TIP
        self._card = card
        self._show_planned()
        self._refresh_scope()

    def _show_planned(self, *_):
        """The auto values as a run will use them: from the card, the overlap for the tile chosen."""
        planned = _model_info.planned(self.model.value, self._card, tile=self.advanced.tile.value)
        for name in ("tile", "overlap", "steps"):
            getattr(self.advanced, name).show_resolved(planned.get(name))

    def use_model(self, model, *, card: dict | None = None, name: str = "from Python") -> None:
        """Select an in-memory ``ResShiftModel`` (for scripts and notebooks)."""
        self.python_model = (model, card or {"name": name, "scale": model.scale})
        self.model.reset_choices()
        self._fit_model_list()
        self.model.value = "python"
        self._show_model_info()

    def _model_key(self) -> tuple:
        choice = self.model.value
        if choice == "python":
            return ("python", id(self.python_model[0]))
        if choice in SHIPPED:
            return (choice,)
        path = _chosen_path(self.model_file.value)
        if path is None:
            what = "a model file" if choice == "file" else f"the official {PRESETS[choice].files['unet']}"
            raise ResShiftError(f"choose {what} with the model file button first")
        return (choice, str(path), str(_chosen_path(self.autoencoder_file.value) or ""))

    def _load_upscaler(self, key: tuple, device: str, precision: str) -> Upscaler:
        """Runs in the worker: loading an official model takes seconds. Cached per (model, device, precision)."""
        if (key, device, precision) in self._upscalers:
            return self._upscalers[key, device, precision]
        if key[0] == "python":
            model, card = self.python_model
        elif key[0] in SHIPPED:
            model, card = load_model(key[0])
        elif key[0] == "file":
            model, card = load_model(key[1])
        else:
            model, card = load_model(key[1], autoencoder=key[2] or None, preset=key[0])
        upscaler = Upscaler(model, card=card, device=device, precision=precision)
        self._upscalers = {(key, device, precision): upscaler}  # one model in memory at a time
        return upscaler

    # run ---------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None or (self._helper is not None and self._helper.is_alive())

    def run(self, *_, preview: bool | None = None):
        """Start a run on the chosen layer; returns the worker (None if nothing was started).

        ``preview`` None: the visible region when the view is zoomed in and that layer was not just previewed,
        else the whole layer; True / False force either.
        """
        if self.running:
            if self._worker is None:
                show_info("the cancelled ResShift run is still finishing its batch; try again in a moment")
            return None
        try:
            layer = self.layer.value
            if layer is None:  # name what is there instead, e.g. a labels layer
                layer = next((other for other in self.viewer.layers if not isinstance(other, Image)), None)
            _job.check_layer(layer)
            box = None
            if preview is None:
                preview = self._show_run_text()  # the label and the action from one decision
            if preview:
                box = _view.visible_box(self.viewer, layer)
            job = _job.make_job(
                layer,
                current_step=self.viewer.dims.current_step,
                whole_stack=self.scope.value and box is None,
                samples=self.samples.value,
                consistency=self.consistency.value,
                box=box,
                **self.advanced.options(),
            )
            key = self._model_key()
        except ResShiftError as exc:
            show_error(str(exc))
            return None
        self._previewed = layer if box is not None else None
        return self._start(job, key, self.device.value, self.advanced.precision.value)

    def _start(self, job, key, device, precision):
        self._cancel.clear()
        what = f"ResShift {job.name}" + (" (preview)" if job.box is not None else "")
        self._progress = progress(total=0, desc=what) if self.activity else None
        self.panel.start(what)
        worker = self._work(job, key, device, precision)
        worker.yielded.connect(self._on_yield)
        worker.returned.connect(lambda outcome: self._on_done(outcome, job))
        worker.aborted.connect(self._on_aborted)  # napari's activity panel can quit a worker too
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()
        return worker

    def cancel(self, *_):
        """Stop after the tile in progress; nothing is added. Says so at once: the tile may take seconds."""
        self._cancel.set()
        self.cancel_button.enabled = False
        self.cancel_button.text = "Cancelling…"
        self.panel.cancel()
        if self._progress is not None:
            self._progress.set_description("ResShift: cancelling…")

    @thread_worker
    def _work(self, job, key, device, precision):
        """Yields what ``_run.run`` reports; returns ("ok", layers, info), ("cancelled",) or ("error", sentence)."""
        try:
            layers = yield from _in_helper_thread(
                lambda report: self._compute(job, key, device, precision, report), self._cancel,
                on_start=lambda thread: setattr(self, "_helper", thread),
            )
            return ("ok", layers)
        except Cancelled:
            return ("cancelled",)
        except ResShiftError as exc:
            return ("error", str(exc))
        except MemoryError:
            return ("error", "not enough memory for this layer; choose 'current plane', fewer samples or smaller tiles")
        except Exception as exc:  # noqa: BLE001 - a bug must not take the user's session down; details go to the log
            log.debug("ResShift run failed", exc_info=True)
            first = first_line(exc) if str(exc).strip() else ""
            return ("error", f"ResShift stopped unexpectedly ({type(exc).__name__}: {first}); no layer was added")

    def _compute(self, job, key, device, precision, report):
        """In the helper thread: load the model, run, and describe the layers to add."""
        output, scale = _run.run(
            lambda on: self._load_upscaler(key, on, precision), job, device=device, memory_limit=self.memory_limit,
            report=report,
        )
        return _output_layers.output_layers(job, output, scale=scale)

    def _on_yield(self, event):
        kind, *args = event
        if kind == "tile":
            done, total = args
            self.panel.on_tile(done, total)
            if self._progress is not None:
                if self._progress.total != total:  # first tile, or a retry with other tiles
                    self._progress.total = total
                    self._progress.n = 0
                self._progress.update(done - self._progress.n)
        elif kind == "plane":
            self.panel.on_plane(*args)
        elif kind == "model":
            self._show_model_info(card=args[1] | {"scale": args[0]})
        elif kind == "note":
            show_info(args[0])

    def _on_done(self, outcome, job):
        kind, *rest = outcome
        if kind == "ok":
            layers = _output_layers.displayable(rest[0])
            for data, kwargs, _ in layers:
                self.viewer.add_image(data, **kwargs)
            info = layers[0][1]["metadata"]["resshift"]
            self._learn_speed(job, info)
            for control, name in ((self.advanced.tile, "tile"), (self.advanced.overlap, "overlap"),
                                  (self.advanced.steps, "steps")):
                control.show_resolved(info.get(name))
            names = ", ".join(repr(kwargs["name"]) for _, kwargs, _ in layers)
            show_info(f"ResShift added {names} in {_progress.duration(self.panel.elapsed())}")
        elif kind == "cancelled":
            show_info("ResShift run cancelled; no layer was added")
        else:
            show_error(rest[0])

    def _learn_speed(self, job, info: dict) -> None:
        height, width = job.region_shape
        pixels = height * width * len(job.planes) * job.samples
        if info.get("time_s") and pixels:
            self._seconds_per_pixel[self._rate_key()] = info["time_s"] / pixels

    def _on_aborted(self):
        self._cancel.set()  # the helper thread stops at its next tile
        show_info("ResShift run cancelled; no layer was added")

    def _on_finished(self):
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.panel.stop()
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.cancel_button.text = "Cancel"
        self._refresh_scope()


def _chosen_path(value) -> Path | None:
    """FileEdit shows '.' when nothing is chosen."""
    if value is None or str(value) in ("", "."):
        return None
    return Path(value)


def _in_helper_thread(compute, cancel: threading.Event, on_start=None):
    """Run ``compute(report)`` in a helper thread and yield what it reports as it comes; return its result.

    The engine reports tiles through a callback, deep inside its loop; this turns those calls into the worker's
    yields (napari's progress and quit both hang off yields) and raises ``Cancelled`` in the engine once asked.
    ``on_start(thread)`` receives the helper thread, which may finish its batch after a quit worker has ended.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()

    def report(*event):
        if cancel.is_set():
            raise Cancelled
        events.put(("event", event))

    def target():
        try:
            events.put(("result", compute(report)))
        except BaseException as exc:  # noqa: BLE001 - handed to the worker thread, which decides
            events.put(("raised", exc))

    thread = threading.Thread(target=target, name="resshift-compute", daemon=True)
    thread.start()
    if on_start is not None:
        on_start(thread)
    while True:
        kind, value = events.get()
        if kind == "event":
            yield value
        elif kind == "result":
            return value
        else:
            raise value
