"""Make a trained run one of the package's shipped models (default, clean): its weights with a complete card.

python scripts/ship_model.py default RUN/model.safetensors --quality quality.json --speed speed.txt --tile 256 \
    --overlap 16 --recipe training/recipes/default.sh --description "..."

The card gets the data and their licences (from ../shared/data/MANIFEST.tsv), the split, the training stages, the
validation metrics written by ``benchmarks/bench_quality.py --json`` and the measured speed; the weights go to
napari_resshift/weights/NAME.safetensors (+ NAME.json).
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from napari_resshift.loading import load_project_model, save_model
from napari_resshift.registry import SHIPPED

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "napari_resshift" / "weights"
LICENCE_NOTE = (
    "natural/ photos are research benchmark images that belong to their authors (BSDS: non-commercial research and "
    "education; no licence stated for SunHays80); the weights are derived from them, the images are not shipped"
)


SPLITS = {
    "files": "training/recipes/split.py --by files: ~15% of the files of each domain of the first data release held "
             "out by hashed file group (channels of one field of view together), never trained on",
    "sources": "training/recipes/split.py --by sources: whole sources held out (photo collections, microscopes and "
               "labs, sensors and scene families; HELD_OUT_SOURCES), never trained on",
}


def domain_of(path: str) -> str:
    """The domain of a --data folder: the folder below ``train``, or the last one (``.../train/natural/BSD200``)."""
    parts = Path(path).parts
    return parts[parts.index("train") + 1] if "train" in parts[:-1] else Path(path).name


def licences(manifest: Path, used: set[str]) -> dict[str, str]:
    """'domain/collection' -> the licences MANIFEST.tsv states for its files (satellite files are one collection)."""
    found = defaultdict(set)
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            domain, collection = row["relative_path"].split("/")[:2]
            if domain not in used or collection == "pairs":
                continue
            key = domain if domain == "satellite" else f"{domain}/{collection}"
            found[key].add(row["license"])
    return {k: "; ".join(sorted(v)) for k, v in sorted(found.items())}


def stages(card: dict) -> list[dict]:
    """The training stages behind a model, oldest first, following each card's ``init`` to the model it started from,
    up to a shipped card, whose recorded history comes first."""
    chain = []
    while card is not None:
        t = card["training"]
        if "stages" in t:
            return [s | {"loss": s.get("loss", "mse")} for s in t["stages"]] + chain  # before --loss: all MSE
        chain.insert(0, {k: t.get(k) for k in ("init", "degradation", "iterations", "wall_time_s", "lr", "ema",
                                               "batch", "crop", "rollout", "precision")}
                     | {"loss": t.get("loss", "mse"), "kappa": card["config"]["diffusion"]["params"]["kappa"]})
        init = t["init"].split(" (")[0]
        named = WEIGHTS / f"{init}.json"
        parent = named if named.is_file() else Path(init).with_suffix(".json")
        card = json.loads(parent.read_text()) if parent.is_file() else None
    return chain


def denoiser_summary(model) -> str:
    params = model.config["model"]["params"]
    if type(model.unet).__name__ == "ConvDenoiser":
        return (f"ConvDenoiser, {params['channels']} channels, an LR encoder of {params['encoder_blocks']} residual "
                f"blocks run once per image, {params['step_blocks']} modulated residual blocks per step"
                + (", each step its own" if params.get("per_step_weights") else ""))
    return (f"UNetModelSwin, {params['model_channels']} channels, channel_mult {params['channel_mult']}, res blocks "
            f"per level {params['num_res_blocks']}, Swin embed {params['swin_embed_dim']}, window "
            f"{params['window_size']}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=SHIPPED)
    p.add_argument("model", type=Path)
    p.add_argument("--quality", type=Path, required=True, help="bench_quality.py --json output on the held-out "
                   "split the model was chosen on")
    p.add_argument("--split", choices=tuple(SPLITS), default="files", help="which split that is (default files)")
    p.add_argument("--quality-other", type=Path, help="bench_quality.py --json output on the other split, to compare")
    p.add_argument("--speed", type=Path, required=True, help="bench_speed.py's table, as printed")
    p.add_argument("--tile", type=int, required=True)
    p.add_argument("--overlap", type=int, required=True)
    p.add_argument("--recipe", required=True, help="the script that reproduces the model")
    p.add_argument("--description", required=True, help="one line: what the model is for")
    p.add_argument("--notes", nargs="*", default=[], help="findings for the card (how the recipe was chosen)")
    p.add_argument("--status", help="a caveat for the card, e.g. where the model falls short")
    p.add_argument("--kappa", type=float, help="sample at this noise scale instead of the one it trained with (the "
                                                "stages keep theirs)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    model, card = load_project_model(args.model)
    training = card["training"]
    history = stages(card)  # before --kappa: each stage keeps the kappa it trained with
    if args.kappa is not None:
        model.set_kappa(args.kappa)
        card["config"] = model.config
    diffusion = model.config["diffusion"]["params"]
    card |= {
        "name": args.name,
        "description": args.description,
        "tile": args.tile,
        "overlap": args.overlap,
        "architecture": {
            "denoiser": denoiser_summary(model),
            "packing": f"space-to-depth: each {model.scale}x{model.scale} HR block is {3 * model.scale**2} channels "
                       "at the LR size; lossless, no autoencoder",
            "diffusion": f"{diffusion['steps']} steps, kappa {diffusion['kappa']}, p "
                         f"{diffusion['schedule_kwargs']['power']}, min_noise_level {diffusion['min_noise_level']}, "
                         "x_0 prediction",
        },
        "speed": {"benchmarks/bench_speed.py": args.speed.read_text().strip().splitlines(),
                  "hardware": training.get("hardware")},
        "metrics": json.loads(args.quality.read_text()) | {"split": SPLITS[args.split]},
        "notes": args.notes,
    }
    domains = sorted({domain_of(d.partition("=")[2] or d) for d in training["data"]})
    training |= {"stages": history, "total_iterations": sum(h["iterations"] for h in history),
                 "total_wall_time_s": round(sum(h["wall_time_s"] for h in history), 1),
                 "data_licences": licences(args.data / "MANIFEST.tsv", set(domains)), "licence_note": LICENCE_NOTE,
                 "split": SPLITS[args.split],
                 "recipe": args.recipe}
    card.pop("status", None)
    card.pop("metrics_other_split", None)
    if args.quality_other:
        other = "sources" if args.split == "files" else "files"
        card["metrics_other_split"] = json.loads(args.quality_other.read_text()) | {"split": SPLITS[other]}
    if args.status:
        card["status"] = args.status
    out = WEIGHTS / f"{args.name}.safetensors"
    save_model(model, out, card, overwrite=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
