"""What the widget says about a model: its line in the list, a short card in a user's words, the details behind it,
and the tile, overlap and steps that auto will use. Qt-free: all from the model's card, no weights loaded.
"""
from __future__ import annotations

from pathlib import Path

from .. import tileplan
from ..loading import read_card
from ..registry import CLEAN, NOISY, PRESETS, SHIPPED

OFFICIAL_WEIGHTS = (
    "Official ResShift .pth weights are published by the ResShift authors (github.com/zsyOAOA/ResShift releases) "
    "under their own non-commercial licence (S-Lab License 1.0); download them yourself and choose the file below."
)
TABLE_NAMES = {"bicubic": "clean LR", "blind": "blind LR"}
DOMAIN_NAMES = {"natural": "photos"}  # the cards' domain names, as a user says them
FIRST = "microscopy"  # the domain a microscopist reads first


def choices() -> list[tuple[str, str]]:
    """The model list: each name with what it is for, short enough to read in full."""
    shipped = [(f"{name}: {PRESETS[name].use}", name) for name in SHIPPED]
    official = [(f"{name}: official, {p.use.removeprefix('for ')} (your .pth)", name)
                for name, p in PRESETS.items() if p.config]
    return [*shipped, *official, ("model file…", "file")]


def card_for(choice: str, *, path: Path | None = None) -> dict | None:
    """The card of a shipped model or of a chosen .safetensors file, read from the file's header."""
    if choice in SHIPPED:
        return read_card(PRESETS[choice].packaged_path())
    if path is not None and path.suffix == ".safetensors":
        return read_card(path)
    return None


def use(card: dict) -> str | None:
    """'for noisy or blurred images' or 'for clean images', from the card's preset or the degradations it learnt."""
    if card.get("name") in PRESETS and PRESETS[card["name"]].use:
        return PRESETS[card["name"]].use
    learnt = [d.strip() for d in str((card.get("training") or {}).get("degradation") or "").split(",") if d.strip()]
    if not learnt:
        return None
    return CLEAN if set(learnt) == {"bicubic"} else NOISY


def gains(card: dict, table: str) -> dict[str, float]:
    """PSNR gain over bicubic (dB) per domain in one of the card's benchmark tables, the first domain first."""
    domains = ((card.get("metrics") or {}).get("tables") or {}).get(table) or {}
    name = card.get("name")
    found = {d: s[name]["psnr"] - s["bicubic"]["psnr"] for d, s in domains.items() if name in s and "bicubic" in s}
    return dict(sorted(found.items(), key=lambda item: item[0] != FIRST))


def headline(card: dict) -> str | None:
    """The number that matters: the gain over bicubic on the kind of image the model is for, microscopy first."""
    found = gains(card, "bicubic" if use(card) == CLEAN else "blind") or gains(card, "bicubic")
    if found:
        (first, gain), *rest = found.items()
        others = ", ".join(f"{DOMAIN_NAMES.get(d, d)} {g:+.1f}" for d, g in rest)
        return f"{DOMAIN_NAMES.get(first, first)} {gain:+.1f} dB PSNR over bicubic" + (f" ({others})" if others
                                                                                            else "")
    metrics = (card.get("training") or {}).get("metrics") or {}
    if "psnr" in metrics and "psnr_bicubic" in metrics:
        return f"{metrics['psnr'] - metrics['psnr_bicubic']:+.1f} dB PSNR over bicubic on its held-out images"
    return None


def summary(card: dict) -> str:
    """The card under the model list: the scale and what it is for, then its headline number."""
    first = f"×{card.get('scale', '?')}" + (f", {purpose}" if (purpose := use(card)) else "")
    return "\n".join([first] + ([line] if (line := headline(card)) else []))


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


def details(card: dict) -> str:
    """Behind the card (its tooltip): name, description, training data, every benchmark row, the network."""
    lines = [f"{card.get('name', 'model')} · ×{card.get('scale', '?')}"
             + (f" · {card['description']}" if card.get("description") else "")]
    if (trained := trained_on(card)) is not None:
        lines.append(f"trained on {trained}")
    for table in (card.get("metrics") or {}).get("tables") or {}:
        if found := gains(card, table):
            rows = ", ".join(f"{DOMAIN_NAMES.get(d, d)} {g:+.2f}" for d, g in found.items())
            lines.append(f"PSNR over bicubic (dB), {TABLE_NAMES.get(table, table)}: {rows}")
    if isinstance(card.get("architecture"), dict) and card["architecture"].get("denoiser"):
        lines.append(f"network: {card['architecture']['denoiser']}")
    return "\n".join(lines)


def describe(choice: str, *, card: dict | None) -> tuple[str, str]:
    """(card text, details) for the chosen model: from its card, else what the choice needs."""
    official = choice in PRESETS and PRESETS[choice].config is not None
    if card is not None:
        return summary(card) + (f"\n{OFFICIAL_WEIGHTS}" if official else ""), details(card)
    if official:
        preset = PRESETS[choice]
        return f"×4, {preset.use}\n{OFFICIAL_WEIGHTS}", f"{choice}: {preset.description}"
    return "the scale and card are read from the file once it is chosen (a .safetensors file carries its card)", ""


def planned(choice: str, card: dict | None, *, tile: int | None = None) -> dict:
    """The tile, overlap and steps auto will use for this choice (the overlap for ``tile`` when one is chosen), as
    far as its card or preset tells before loading; the values not known yet are None."""
    preset = PRESETS.get(choice)
    config = (card or {}).get("config") or (preset.config if preset is not None else None)
    if not config:
        return {}
    latent = bool(config.get("autoencoder"))
    scale = int((card or {}).get("scale") or config["diffusion"]["params"]["sf"])
    tile = tile or tileplan.planned_tile(card or {}, latent=latent, scale=scale)
    return {"tile": tile, "overlap": tileplan.planned_overlap(card or {}, tile, latent=latent),
            "steps": config["diffusion"]["params"].get("steps")}
