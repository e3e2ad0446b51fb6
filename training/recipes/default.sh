#!/usr/bin/env bash
# Train the package's default model from ../shared/data: the held-out split, then one denoiser stage.
# Usage: bash training/recipes/default.sh [DATA=../shared/data] [RUNS=runs/default] [DEVICE=cpu] [MINUTES=95]
# The shipped weights came from exactly this on the 2-core CPU of the build machine (8000 iterations, ~75 min).
# The model is packed pixel mode (architecture "fast"): no autoencoder stage. Microscopy and satellite folders are
# listed several times so that each domain gets a fair share of the crops (files are drawn uniformly).
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/default}; DEV=${3:-cpu}; MINUTES=${4:-95}
python -m training.recipes.split "$DATA" "$R/split" --only train --min-side 128
D="$R/split/train"
python -m training.finetune --init scratch --arch fast --mode packed \
  --data "$D/natural" $(printf "$D/microscopy %.0s" 1 2 3) $(printf "$D/satellite %.0s" 1 2 3 4 5 6 7 8) \
  --run "$R/den" --crop 128 --batch 16 --lr 5e-4 --min-lr 1e-5 --warmup 200 --ema 0.999 --clip 1.0 \
  --iterations 8000 --time-limit "$MINUTES" --val-fraction 0 --val-every 0 --workers 1 --no-tensorboard \
  --device "$DEV" --name default
