"""A ConvDenoiser model with its residual blocks reshaped, as the init of a fine-tuning.

python scripts/reshape_blocks.py IN.safetensors OUT.safetensors [--step-keep 2] [--encoder-keep 6] [--untie-steps]:
keeps the heads, the first ENCODER_KEEP blocks of the LR encoder (run once per image) and the first STEP_KEEP
modulated blocks of each step (with their scale/shift columns of the step embedding); every dropped block is residual,
so the result is a close start that fine-tuning then repairs. ``--untie-steps`` gives every step its own copy of the
shared step blocks: the same function and work per upscale, with the parameters to let the steps differ.
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


def untied(state: dict, step_blocks: int, steps: int) -> dict:
    """``state`` with shared step block i copied to block i of every step (key blocks.{s * step_blocks + i})."""
    out = {k: v for k, v in state.items() if not k.startswith("blocks.")}
    for key, value in state.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            out.update({f"blocks.{s * step_blocks + int(index)}.{rest}": value.clone() for s in range(steps)})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--step-keep", type=int, help="modulated blocks kept per step (default: all)")
    p.add_argument("--encoder-keep", type=int, help="LR encoder blocks kept (default: all)")
    p.add_argument("--untie-steps", action="store_true", help="give each step its own copy of the step blocks")
    args = p.parse_args(argv)
    model, card = load_project_model(args.source)
    config = copy.deepcopy(model.config)
    params = config["model"]["params"]
    if config["model"]["target"] != "ConvDenoiser":
        raise SystemExit(f"{args.source}: not a ConvDenoiser")
    if params.get("per_step_weights") and (args.step_keep is not None or args.untie_steps):
        raise SystemExit(f"{args.source}: its steps already have their own blocks; only --encoder-keep applies")
    step_keep = params["step_blocks"] if args.step_keep is None else args.step_keep
    encoder_keep = params["encoder_blocks"] if args.encoder_keep is None else args.encoder_keep
    if not (0 < step_keep <= params["step_blocks"] and 0 <= encoder_keep <= params["encoder_blocks"]):
        raise SystemExit(f"{args.source}: has {params['step_blocks']} step and {params['encoder_blocks']} encoder "
                         "blocks; keep at least one step block and at most what there is")
    params["step_blocks"], params["encoder_blocks"] = step_keep, encoder_keep
    params["per_step_weights"] = bool(params.get("per_step_weights") or args.untie_steps)
    smaller = ResShiftModel(config)
    columns = 2 * params["channels"] * step_keep
    state = {k: (v[:, :columns] if k == "step_embedding.weight" else v) for k, v in model.unet.state_dict().items()
             if kept(k, "blocks.", step_keep) and kept(k, "encoder.", encoder_keep)}
    if args.untie_steps:
        state = untied(state, step_keep, params["steps"])
    smaller.unet.load_state_dict(state)
    tag = "u" if params["per_step_weights"] else ""
    new = make_card(smaller, name=f"{card.get('name', args.source.stem)}-{encoder_keep}e{step_keep}s{tag}",
                    **{k: card.get(k) for k in ("normalization", "tile", "overlap")}, training=card.get("training", {}),
                    provenance={"derived_from": str(args.source), "kept_step_blocks": step_keep,
                                "kept_encoder_blocks": encoder_keep, "untied_steps": args.untie_steps})
    save_model(smaller, args.out, new)
    print(f"wrote {args.out}: {encoder_keep} of {len(model.unet.encoder)} encoder blocks, {step_keep} of "
          f"{model.unet.step_blocks} step blocks" + (", each step its own" if params["per_step_weights"] else ""))


if __name__ == "__main__":
    with torch.no_grad():
        main()
