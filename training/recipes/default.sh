#!/usr/bin/env bash
# Train the package's `default` model, the blind real-world one: the `clean` recipe's model, then fine-tuned on the
# blind mixture of degradations drawn per crop (training/degradations.py): natural photos through the Real-ESRGAN
# second-order model with the ResShift paper's ranges, microscopy through PSF blur, binning and Poisson-Gaussian noise
# from 5 to 10,000 photons, satellite through MTF blur, sensor noise and mild JPEG; 30% of the crops of each
# domain stay clean bicubic, so that clean inputs are not over-smoothed.
# Usage: bash training/recipes/default.sh [DATA=../shared/data] [RUNS=runs/default] [DEVICE=auto] [CLEAN=runs/clean]
# CLEAN: a finished run of training/recipes/clean.sh (made first if it is missing).
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/default}; DEV=${3:-auto}; CLEAN=${4:-runs/clean}
[ -f "$CLEAN/train/model.safetensors" ] || bash training/recipes/clean.sh "$DATA" "$CLEAN" "$DEV"
T="$CLEAN/split192/train"; V="$CLEAN/split192/val"
python -m training.finetune --init "$CLEAN/train/model.safetensors" --degradation bicubic \
  --data "blind-natural=$T/natural" $(printf "blind-microscopy=$T/microscopy %.0s" {1..3}) \
         $(printf "blind-satellite=$T/satellite %.0s" {1..8}) \
  --val-data "blind-natural=$V/natural" "blind-microscopy=$V/microscopy" "blind-satellite=$V/satellite" \
  --val-fraction 0 --val-images 12 --val-size 192 \
  --crop 192 --batch 8 --lr 2e-4 --min-lr 1e-6 --warmup 100 --ema 0.999 --clip 1.0 --rollout 0.75 \
  --iterations 8000 --time-limit 55 --checkpoint-every 250 --val-every 2000 --workers 0 --no-tensorboard \
  --device "$DEV" --name default --run "$R/train"
