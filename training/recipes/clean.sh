#!/usr/bin/env bash
# Train the `clean` preset (clean bicubic-like data) from scratch: a packed-mode ConvDenoiser, one stage.
# Usage: bash training/recipes/clean.sh [DATA=../shared/data] [RUNS=runs/clean] [DEVICE=auto]
# Files of at least 192 px of the training split; microscopy listed 3 times and satellite 8 times, so that each
# domain gets a fair share of the crops (files are drawn uniformly). Validation: 12 crops of the held-out split.
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/clean}; DEV=${3:-auto}
python -m training.recipes.split "$DATA" "$R/split192" --min-side 192 > /dev/null
T="$R/split192/train"; V="$R/split192/val"
python -m training.finetune --init scratch --arch conv --mode packed --kappa 0.02 --degradation bicubic \
  --data "$T/natural" "$T/microscopy" "$T/microscopy" "$T/microscopy" $(printf "$T/satellite %.0s" {1..8}) \
  --val-data "$V/natural" "$V/microscopy" "$V/satellite" --val-fraction 0 --val-images 12 --val-size 192 \
  --crop 192 --batch 8 --lr 4e-4 --min-lr 1e-6 --warmup 200 --ema 0.999 --clip 1.0 --rollout 0.75 \
  --iterations 9000 --time-limit 55 --checkpoint-every 250 --val-every 1500 --workers 0 --no-tensorboard \
  --device "$DEV" --name clean --run "$R/train"
