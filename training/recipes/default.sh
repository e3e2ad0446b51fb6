#!/usr/bin/env bash
# Train the package's default model from ../shared/data: the held-out split, then three denoiser stages on the CPU.
# Usage: bash training/recipes/default.sh [DATA=../shared/data] [RUNS=runs/default] [DEVICE=cpu]
# The model is packed pixel mode (architecture "fast"): no autoencoder stage. Microscopy and satellite folders are
# listed several times so that each domain gets a fair share of the crops (files are drawn uniformly).
# The shipped model came from three stages on 2 cores (about 70 min in all): kappa 0.5 (stopped by its time limit at
# iteration 4000 of an 8000-iteration schedule), kappa 0.1 (stopped at 1200 of 3000), then kappa 0.02 (2200). The
# noise scale went down because each later step of the 4-step chain lost PSNR against the first step's prediction
# (measured on 12 natural validation images: 0.5 dB at kappa 0.5, 0.4 dB at kappa 0.1); low kappa keeps the output
# at the posterior mean, which is what measurements need. The time limits below stop stages 1 and 2 where they stopped.
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/default}; DEV=${3:-cpu}
python -m training.recipes.split "$DATA" "$R/split" --only train --min-side 128
D="$R/split/train"
DOMAINS=("$D/natural" "$D/microscopy" "$D/microscopy" "$D/microscopy" "$D/satellite" "$D/satellite" "$D/satellite"
         "$D/satellite" "$D/satellite" "$D/satellite" "$D/satellite" "$D/satellite")
COMMON=(--data "${DOMAINS[@]}" --crop 128 --batch 16 --min-lr 1e-5 --ema 0.999 --clip 1.0 --val-fraction 0
        --val-every 0 --workers 1 --no-tensorboard --device "$DEV" --name default)
python -m training.finetune "${COMMON[@]}" --init scratch --arch fast --mode packed --run "$R/stage1" --lr 5e-4 \
  --warmup 200 --iterations 8000 --time-limit 36
python -m training.finetune "${COMMON[@]}" --init "$R/stage1/model.safetensors" --kappa 0.1 --run "$R/stage2" \
  --lr 3e-4 --warmup 50 --iterations 3000 --time-limit 11
python -m training.finetune "${COMMON[@]}" --init "$R/stage2/model.safetensors" --kappa 0.02 --run "$R/stage3" \
  --lr 2e-4 --warmup 50 --iterations 2200 --ema 0.998
