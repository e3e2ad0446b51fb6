"""A ConvDenoiser model with fewer residual blocks, as the init of a cheaper model's fine-tuning.

python scripts/drop_blocks.py IN.safetensors OUT.safetensors [--step-keep 2] [--encoder-keep 6]: keeps the heads, the
first ENCODER_KEEP blocks of the LR encoder (run once per image) and the first STEP_KEEP modulated blocks of each step
(with their scale/shift columns of the step embedding); every dropped block is residual, so the result is a close
start that fine-tuning then repairs.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from napari_resshift.loading import load_project_model, make_card, save_model
from napari_resshift.model import ResShiftModel


def kept(key: str, prefix: str, keep: int) -> bool:
    return not key.startswith(prefix) or int(key.split(".")[1]) < keep


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--step-keep", type=int, help="modulated blocks kept per step (default: all)")
    p.add_argument("--encoder-keep", type=int, help="LR encoder blocks kept (default: all)")
    args = p.parse_args(argv)
    model, card = load_project_model(args.source)
    config = copy.deepcopy(model.config)
    params = config["model"]["params"]
    if config["model"]["target"] != "ConvDenoiser":
        raise SystemExit(f"{args.source}: not a ConvDenoiser")
    step_keep = params["step_blocks"] if args.step_keep is None else args.step_keep
    encoder_keep = params["encoder_blocks"] if args.encoder_keep is None else args.encoder_keep
    if not (0 < step_keep <= params["step_blocks"] and 0 <= encoder_keep <= params["encoder_blocks"]):
        raise SystemExit(f"{args.source}: has {params['step_blocks']} step and {params['encoder_blocks']} encoder "
                         "blocks; keep at least one step block and at most what there is")
    params["step_blocks"], params["encoder_blocks"] = step_keep, encoder_keep
    smaller = ResShiftModel(config)
    columns = 2 * params["channels"] * step_keep
    state = {k: (v[:, :columns] if k == "step_embedding.weight" else v) for k, v in model.unet.state_dict().items()
             if kept(k, "blocks.", step_keep) and kept(k, "encoder.", encoder_keep)}
    smaller.unet.load_state_dict(state)
    new = make_card(smaller, name=f"{card.get('name', args.source.stem)}-{encoder_keep}e{step_keep}s",
                    **{k: card.get(k) for k in ("normalization", "tile", "overlap")}, training=card.get("training", {}),
                    provenance={"derived_from": str(args.source), "kept_step_blocks": step_keep,
                                "kept_encoder_blocks": encoder_keep})
    save_model(smaller, args.out, new)
    print(f"wrote {args.out}: {encoder_keep} of {len(model.unet.encoder)} encoder blocks, {step_keep} of "
          f"{len(model.unet.blocks)} step blocks")


if __name__ == "__main__":
    with torch.no_grad():
        main()
