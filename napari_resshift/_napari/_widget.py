"""The Plugins → ResShift dock widget: choices, Run / Cancel, progress, and the layers a run adds.

Work runs in a napari ``thread_worker`` that yields per tile; every failure ends in one notification sentence.
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from . import _big_layers, _layers, _run
from ..engine import Cancelled, Upscaler, pick_device
from ..errors import ResShiftError
from ..loading import load_model
from ..registry import PRESETS, SHIPPED

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
MODEL_FILE_FILTER = "Models (*.safetensors *.pth *.pt *.ckpt)"


def model_choices() -> list[tuple[str, str]]:
    official = [(f"official {name}: {p.description}", name) for name, p in PRESETS.items() if p.config]
    shipped = [(f"{name}: {PRESETS[name].description.removesuffix(' (shipped)')}", name) for name in SHIPPED]
    return [*shipped, *official, ("model file…", "file")]


class ResShiftWidget(Container):
    """Upscale the chosen image layer with a ResShift model; results are added as new, exactly overlaid layers."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.python_model = None  # (model, card) handed over by ``use_model``
        self._upscalers: dict[tuple, Upscaler] = {}
        self._worker = None
        self._helper: threading.Thread | None = None  # the compute thread; it may outlive a quit worker by a batch
        self._cancel = threading.Event()
        self._progress = None
        self.memory_limit = _big_layers.default_memory_limit()  # outputs larger than this go to a temporary zarr

        self.layer = ComboBox(label="image", choices=self._image_layers)
        self.model = ComboBox(label="model", choices=self._model_choices, value="default")
        self.model_file = FileEdit(label="model file", mode="r", filter=MODEL_FILE_FILTER)
        self.autoencoder_file = FileEdit(label="autoencoder", mode="r", filter=MODEL_FILE_FILTER)
        self.scale_label = Label(label="scale", value="set by the model")
        self.steps = SpinBox(label="steps (0: model's)", min=0, max=200, tooltip="0: as the model was trained")
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.tile = SpinBox(label="tile (0: auto)", min=0, max=4096, step=16, tooltip="LR pixels per tile")
        self.overlap = SpinBox(label="overlap (-1: auto)", min=-1, max=512, value=-1, tooltip="LR pixels")
        auto = pick_device("auto").type
        self.device = ComboBox(label="device", choices=[(f"auto ({auto})", "auto")] + [(d, d) for d in DEVICES[1:]])
        self.scope = ComboBox(label="scope", choices=[("whole stack", True), ("current plane", False)], value=True)
        self.samples = SpinBox(label="samples", min=1, max=64, value=1, tooltip=">1 adds mean and std layers")
        self.consistency = CheckBox(text="data-consistency layer (|downsampled result − input|)")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(
            widgets=[
                self.layer, self.model, self.model_file, self.autoencoder_file, self.scale_label, self.steps,
                self.seed, self.tile, self.overlap, self.device, self.scope, self.samples, self.consistency,
                self.run_button, self.cancel_button,
            ]
        )
        self.model.changed.connect(self._show_model_files)
        self._show_model_files()
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_inserted)
        layers.events.removed.connect(self._on_removed)
        layers.events.moved.connect(self.reset_choices)
        for layer in layers:
            layer.events.name.connect(self.reset_choices)
        self.reset_choices()
        self._pick_active()

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
        self.reset_choices()

    def _pick_active(self):
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            self.layer.value = active

    # model -------------------------------------------------------------------------------------------------
    def _model_choices(self, _widget=None):
        given = [(self.python_model[1].get("name", "from Python"), "python")] if self.python_model else []
        return model_choices() + given

    def _show_model_files(self, *_):
        choice = self.model.value
        self.model_file.visible = choice == "file" or choice in PRESETS and PRESETS[choice].config is not None
        self.autoencoder_file.visible = choice != "file" and self.model_file.visible

    def use_model(self, model, *, card: dict | None = None, name: str = "from Python") -> None:
        """Select an in-memory ``ResShiftModel`` (for scripts and notebooks)."""
        self.python_model = (model, card or {"name": name})
        self.model.reset_choices()
        self.model.value = "python"

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

    def _load_upscaler(self, key: tuple, device: str) -> Upscaler:
        """Runs in the worker: loading an official model takes seconds. Cached per (model, device)."""
        if (key, device) in self._upscalers:
            return self._upscalers[key, device]
        if key[0] == "python":
            model, card = self.python_model
        elif key[0] in SHIPPED:
            model, card = load_model(key[0])
        elif key[0] == "file":
            model, card = load_model(key[1])
        else:
            model, card = load_model(key[1], autoencoder=key[2] or None, preset=key[0])
        upscaler = Upscaler(model, card=card, device=device)
        self._upscalers = {(key, device): upscaler}  # one model in memory at a time
        return upscaler

    # run ---------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None or (self._helper is not None and self._helper.is_alive())

    def run(self, *_):
        """Start a run on the chosen layer; returns the worker (None if nothing was started)."""
        if self.running:
            if self._worker is None:
                show_info("the cancelled ResShift run is still finishing its batch; try again in a moment")
            return None
        try:
            layer = self.layer.value
            if layer is None:  # name what is there instead, e.g. a labels layer
                layer = next((other for other in self.viewer.layers if not isinstance(other, Image)), None)
            _layers.check_layer(layer)
            job = _layers.make_job(
                layer,
                current_step=self.viewer.dims.current_step,
                whole_stack=self.scope.value,
                seed=self.seed.value,
                samples=self.samples.value,
                tile=self.tile.value or None,
                overlap=None if self.overlap.value < 0 else self.overlap.value,
                steps=self.steps.value or None,
                consistency=self.consistency.value,
            )
            key = self._model_key()
        except ResShiftError as exc:
            show_error(str(exc))
            return None
        return self._start(job, key, self.device.value)

    def _start(self, job, key, device):
        self._cancel.clear()
        self._progress = progress(total=0, desc=f"ResShift {job.name}")
        worker = self._work(job, key, device)
        worker.yielded.connect(self._on_yield)
        worker.returned.connect(self._on_done)
        worker.aborted.connect(self._on_aborted)  # napari's activity panel can quit a worker too
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()
        return worker

    def cancel(self, *_):
        """Stop after the tile in progress; nothing is added."""
        self._cancel.set()
        if self._progress is not None:
            self._progress.set_description("ResShift: cancelling…")

    @thread_worker
    def _work(self, job, key, device):
        """Yields ("tile", done, total), ("scale", s), ("note", text); returns ("ok", layers), ("cancelled",)
        or ("error", one sentence)."""
        try:
            layers = yield from _in_helper_thread(
                lambda report: self._compute(job, key, device, report), self._cancel,
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
            first = str(exc).splitlines()[0] if str(exc) else ""
            return ("error", f"ResShift stopped unexpectedly ({type(exc).__name__}: {first}); no layer was added")

    def _compute(self, job, key, device, report):
        """In the helper thread: load the model, run, and describe the layers to add."""
        output, scale = _run.run(
            lambda on: self._load_upscaler(key, on), job, device=device, memory_limit=self.memory_limit, report=report
        )
        return _layers.output_layers(job, output, scale=scale)

    def _on_yield(self, event):
        kind, *args = event
        if kind == "tile" and self._progress is not None:
            done, total = args
            if self._progress.total != total:  # first tile, or a retry with other tiles
                self._progress.total = total
                self._progress.n = 0
            self._progress.update(done - self._progress.n)
        elif kind == "scale":
            self.scale_label.value = f"×{args[0]}"
        elif kind == "note":
            show_info(args[0])

    def _on_done(self, outcome):
        kind, *rest = outcome
        if kind == "ok":
            for data, kwargs, _ in rest[0]:
                self.viewer.add_image(data, **kwargs)
        elif kind == "cancelled":
            show_info("ResShift run cancelled; no layer was added")
        else:
            show_error(rest[0])

    def _on_aborted(self):
        self._cancel.set()  # the helper thread stops at its next tile
        show_info("ResShift run cancelled; no layer was added")

    def _on_finished(self):
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False


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
