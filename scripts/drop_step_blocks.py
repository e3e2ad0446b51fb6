"""A ConvDenoiser model with fewer modulated blocks per step, as the init of a cheaper model's fine-tuning.

python scripts/drop_step_blocks.py IN.safetensors OUT.safetensors --keep 2: keeps the LR encoder, the heads and the
first KEEP step blocks (with their scale/shift columns of the step embedding); the dropped blocks are residual, so
the result is a close start that fine-tuning then repairs.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from napari_resshift.loading import load_project_model, make_card, save_model
from napari_resshift.model import ResShiftModel


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--keep", type=int, default=2, help="step blocks kept (default 2)")
    args = p.parse_args(argv)
    model, card = load_project_model(args.source)
    config = copy.deepcopy(model.config)
    params = config["model"]["params"]
    if config["model"]["target"] != "ConvDenoiser" or not 0 < args.keep < params["step_blocks"]:
        raise SystemExit(f"{args.source}: not a ConvDenoiser with more than {args.keep} step blocks")
    params["step_blocks"] = args.keep
    smaller = ResShiftModel(config)
    state = model.unet.state_dict()
    columns = 2 * params["channels"] * args.keep
    state = {k: (v[:, :columns] if k == "step_embedding.weight" else v) for k, v in state.items()
             if not k.startswith("blocks.") or int(k.split(".")[1]) < args.keep}
    smaller.unet.load_state_dict(state)
    kept = {k: card.get(k) for k in ("normalization", "tile", "overlap")}
    new = make_card(smaller, name=f"{card.get('name', args.source.stem)}-{args.keep}blocks", **kept,
                    training=card.get("training", {}),
                    provenance={"derived_from": str(args.source), "kept_step_blocks": args.keep})
    save_model(smaller, args.out, new)
    print(f"wrote {args.out}: {args.keep} of {len(model.unet.blocks)} step blocks")


if __name__ == "__main__":
    with torch.no_grad():
        main()
