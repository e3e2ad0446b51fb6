"""A running training's EMA weights as a model file, to score the run mid-way without stopping it.

python scripts/snapshot.py RUN OUT.safetensors: RUN is a --run folder of training.finetune (its checkpoint.pt);
the card records the run's training as far as it got, as the run's own export would, so scripts/ship_model.py can
follow its stages (checkpoints written before the record was kept give only the run folder and the iteration).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from napari_resshift.loading import build_model, make_card, save_model
from training import checkpoint
from training.finetune import reached


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    state = checkpoint.load(args.run / "checkpoint.pt")
    model = build_model(json.loads(state["config"]), source=args.run)
    model.load_state_dict(checkpoint.unwrap_keys(state["model"]))
    trained = model.unet if state["stage"] == "denoiser" else model.autoencoder  # the module the EMA follows
    trained.load_state_dict(checkpoint.unwrap_keys(state["ema"]["shadow"]), strict=False)
    record = json.loads(state["extra"]).get("training", {}) | {"snapshot_of": str(args.run)}
    training = reached(record, iteration=state["iteration"], elapsed=state["elapsed_s"],
                       metrics=json.loads(state["metrics"]))
    card = make_card(model, name=f"{args.run.name}@{state['iteration']}", training=training)
    save_model(model, args.out, card, overwrite=True)
    print(f"wrote {args.out} (EMA at iteration {state['iteration']})")


if __name__ == "__main__":
    with torch.no_grad():
        main()
