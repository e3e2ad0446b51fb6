"""The widget's settings: controls that say "auto" in words, units in their labels, a tooltip each; the Advanced
section (tile, overlap, seed, steps, precision, normalisation) and what it turns into for a run.
"""
from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox

from ..engine import PRECISIONS
from ..normalization import DEFAULT_PERCENTILES, NORM_MODES

AUTO = "auto"
NORM_LABELS = {
    "auto": "auto (8-bit: full range; else percentiles)",
    "range": "full range of the pixel type",
    "percentile": "percentiles",
    "minmax": "min–max",
}
NORMS = tuple((NORM_LABELS[mode], mode) for mode in NORM_MODES)  # the command line's --norm, in words


class AutoValue(Container):
    """A number with an "auto" checkbox beside it: ticked, the field is greyed and shows what auto resolved to
    (from the model's card or the last run) once that is known; ``value`` is then None."""

    def __init__(self, label: str, *, tooltip: str, lowest: int, highest: int, step: int = 1, typical: int):
        self.number = SpinBox(min=lowest, max=highest, step=step, value=typical, enabled=False, tooltip=tooltip)
        self.auto = CheckBox(text=AUTO, value=True, tooltip=f"{AUTO}: {tooltip}")
        super().__init__(widgets=[self.number, self.auto], layout="horizontal", labels=False, label=label,
                         tooltip=tooltip)
        self.margins = (0, 0, 0, 0)
        self.auto.changed.connect(self._follow)

    def _follow(self, *_):
        self.number.enabled = not self.auto.value

    @property
    def value(self) -> int | None:
        return None if self.auto.value else int(self.number.value)

    @value.setter
    def value(self, number: int | None) -> None:
        self.auto.value = number is None
        if number is not None:
            self.number.value = number

    def show_resolved(self, resolved: int | None) -> None:
        if self.auto.value and resolved is not None:
            self.number.value = resolved


class Advanced(Container):
    """The collapsed Advanced section; ``options()`` gives the engine's keyword arguments, None meaning auto."""

    def __init__(self):
        self.tile = AutoValue(
            "tile (LR px)", lowest=16, highest=4096, step=16, typical=128,
            tooltip="Side of the square tiles the image is cut into, in input (LR) pixels. auto: the model card's "
                    "tile, else the size the model was trained on. Smaller tiles need less memory.",
        )
        self.overlap = AutoValue(
            "overlap (LR px)", lowest=0, highest=512, typical=16,
            tooltip="Pixels shared by neighbouring tiles, blended smoothly, in input (LR) pixels. auto: the model "
                    "card's, else the network's receptive field (at most a quarter of the tile).",
        )
        self.seed = SpinBox(
            label="seed", min=0, max=2**31 - 1, value=0,
            tooltip="Seed of the diffusion noise: the same seed gives the same result, whatever the tiling or scope.",
        )
        self.steps = AutoValue(
            "steps", lowest=2, highest=200, typical=4,
            tooltip="Diffusion sampling steps. auto: as many as the model was trained with (fewer: faster, "
                    "usually worse; the shipped models use 4).",
        )
        self.precision = ComboBox(
            label="precision", choices=list(PRECISIONS), value="fp32",
            tooltip="Arithmetic precision: fp32 everywhere; bf16 is faster on recent CPUs and GPUs; fp16 on GPUs only.",
        )
        self.norm = ComboBox(
            label="normalisation", choices=list(NORMS), value="auto",
            tooltip="How stored intensities map to the model's range, one mapping for the whole layer "
                    "(per channel), as the command line's --norm.",
        )
        self.low = FloatSpinBox(
            label="low percentile (%)", min=0.0, max=50.0, step=0.01, value=DEFAULT_PERCENTILES[0],
            tooltip="Intensity mapped to the model's black, as a percentile of the layer (percentile normalisation).",
        )
        self.high = FloatSpinBox(
            label="high percentile (%)", min=50.0, max=100.0, step=0.01, value=DEFAULT_PERCENTILES[1],
            tooltip="Intensity mapped to the model's white, as a percentile of the layer (percentile normalisation).",
        )
        super().__init__(
            widgets=[self.tile, self.overlap, self.seed, self.steps, self.precision, self.norm, self.low, self.high]
        )
        self.norm.changed.connect(self._show_percentiles)
        self._show_percentiles()

    def _show_percentiles(self, *_):
        uses = self.norm.value in ("auto", "percentile")
        self.low.enabled = self.high.enabled = uses

    def options(self) -> dict:
        """Job options: tile, overlap and steps are None for auto."""
        return {
            "tile": self.tile.value,
            "overlap": self.overlap.value,
            "steps": self.steps.value,
            "seed": self.seed.value,
            "norm": self.norm.value,
            "percentiles": (float(self.low.value), float(self.high.value)),
        }
