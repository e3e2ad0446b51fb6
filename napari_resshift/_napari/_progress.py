"""The progress shown in the widget itself: a bar of tiles done, the plane of a stack, the time left.

napari's activity entry is kept beside it; both are fed from the engine's per-tile reports.
"""
from __future__ import annotations

import time
import warnings

from magicgui.widgets import Container, Label, ProgressBar

CANCELLING = "cancelling… (stops after the tile in progress)"


def duration(seconds: float) -> str:
    """'0.4 s', '8.2 s', '12 s', '2 min 05 s', '1 h 04 min': tenths where they are a fair share of the time."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_text(done: int, total: int, elapsed: float, *, plane: tuple[int, int] | None = None) -> str:
    """'tiles 12/49 · plane 2/3 · about 14 s left': the time left is the mean time per tile so far."""
    parts = [f"tiles {done}/{total}"]
    if plane is not None and plane[1] > 1:
        parts.append(f"plane {plane[0]}/{plane[1]}")
    if 0 < done < total:
        parts.append(f"about {duration(elapsed / done * (total - done))} left")
    return " · ".join(parts)


class ProgressPanel(Container):
    """A progress bar and one line of text; hidden between runs."""

    def __init__(self):
        self.bar = ProgressBar(value=0, min=0, max=1, tooltip="tiles computed so far in this run")
        self.text = Label(value="", tooltip="tiles done, the plane of a stack being computed, and the time left")
        super().__init__(widgets=[self.bar, self.text], labels=False)
        self.visible = False
        self.started = 0.0
        self.plane: tuple[int, int] | None = None
        self.cancelling = False

    def start(self, what: str) -> None:
        self.started = time.perf_counter()
        self.plane = None
        self.cancelling = False
        self.bar.max, self.bar.value = 1, 0
        self.text.value = f"{what}: loading the model…"
        self.visible = True

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def on_plane(self, number: int, planes: int) -> None:
        self.plane = (number, planes)

    def on_tile(self, done: int, total: int) -> None:
        if self.bar.max != total:
            self.bar.max = total
        self.bar.value = done
        if not self.cancelling:  # tiles reported before the cancel was seen must not hide it
            self.text.value = status_text(done, total, self.elapsed(), plane=self.plane)

    def cancel(self) -> None:
        self.cancelling = True
        self.text.value = CANCELLING

    def stop(self) -> None:
        self.visible = False


SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast")


def software_gl(viewer) -> bool:
    """Whether the canvas is drawn by Mesa's software rasteriser (as under Xvfb).

    There, once any napari ``progress`` bar has existed, removing layers and then drawing an RGB layer segfaults in
    vispy's glDrawArrays (reproduced without this plugin: progress bar, stack, clear, RGB layer, draw); the widget then
    reports progress in its own bar only. Anything unexpected counts as a hardware renderer.
    """
    try:
        from vispy.gloo import gl

        with warnings.catch_warnings():  # napari has no public handle on its GL context, and says so
            warnings.simplefilter("ignore", FutureWarning)
            viewer.window._qt_viewer.canvas._scene_canvas.set_current()
        renderer = str(gl.glGetParameter(gl.GL_RENDERER)).lower()
    except Exception:  # noqa: BLE001 - no window, no context, another backend: nothing to guard against
        return False
    return any(name in renderer for name in SOFTWARE_GL)
