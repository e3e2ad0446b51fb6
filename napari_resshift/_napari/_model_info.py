"""What the widget says about a model under its choice: the card summary, and where official weights come from.

Qt-free: text from a model card (the shipped cards are read from their files' headers, no weights loaded).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ResShiftError
from ..loading import read_card
from ..registry import PRESETS, SHIPPED

OFFICIAL_WEIGHTS = (
    "Official ResShift .pth weights are published by the ResShift authors (github.com/zsyOAOA/ResShift releases) "
    "under their own non-commercial licence (S-Lab License 1.0); download them yourself and choose the file below."
)
TABLE_NAMES = {"bicubic": "clean LR", "blind": "blind LR"}


def trained_on(card: dict) -> str | None:
    """'423 images (microscopy, natural, satellite), degradation bicubic' from the card's training record."""
    training = card.get("training") or {}
    domains = sorted({str(entry).split("=")[-1].rstrip("/").split("/")[-1] for entry in training.get("data", [])})
    if not domains and not training.get("degradation"):
        return None
    images = f"{training['train_files']} images" if training.get("train_files") else "images"
    where = f" ({', '.join(domains)})" if domains else ""
    how = f", degradation {training['degradation']}" if training.get("degradation") else ""
    return f"{images}{where}{how}"


def quality(card: dict) -> str | None:
    """PSNR gain over bicubic per domain, for each kind of LR the card's benchmark tables hold."""
    tables = (card.get("metrics") or {}).get("tables") or {}
    name = card.get("name")
    parts = []
    for kind, domains in tables.items():
        gains = [
            f"{domain} {scores[name]['psnr'] - scores['bicubic']['psnr']:+.1f}"
            for domain, scores in domains.items()
            if name in scores and "bicubic" in scores
        ]
        if gains:
            parts.append(f"{TABLE_NAMES.get(kind, kind)}: {', '.join(gains)}")
    if parts:
        return "PSNR over bicubic (dB) " + "; ".join(parts)
    metrics = (card.get("training") or {}).get("metrics") or {}
    if "psnr" in metrics and "psnr_bicubic" in metrics:
        return f"validation PSNR {metrics['psnr']:.2f} dB (bicubic {metrics['psnr_bicubic']:.2f} dB)"
    return None


def card_summary(card: dict) -> str:
    """A few lines: name and scale, what it was trained on, its quality line."""
    lines = [f"{card.get('name', 'model')} · ×{card.get('scale', '?')}"
             + (f" · {card['description']}" if card.get("description") else "")]
    if (trained := trained_on(card)) is not None:
        lines.append(f"trained on {trained}")
    if (line := quality(card)) is not None:
        lines.append(line)
    return "\n".join(lines)


def summary_for(choice: str, *, card: dict | None = None, path: Path | None = None) -> str:
    """The text under the model choice: the loaded (or readable) card, else what the choice needs."""
    if card is None and choice in SHIPPED:
        card = read_card(PRESETS[choice].packaged_path())
    if card is None and path is not None and path.suffix == ".safetensors":
        try:
            card = read_card(path)
        except ResShiftError as exc:
            return str(exc)
    official = choice in PRESETS and PRESETS[choice].config is not None
    if card is not None:
        return card_summary(card) + (f"\n{OFFICIAL_WEIGHTS}" if official else "")
    if official:
        return f"{PRESETS[choice].description}; scale ×4\n{OFFICIAL_WEIGHTS}"
    return "scale and card: read from the file once it is chosen (a .safetensors file carries its card)"
