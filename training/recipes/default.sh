#!/usr/bin/env bash
# Train the package's default model from ../shared/data: the held-out split, then three denoiser stages on the CPU.
# Usage: bash training/recipes/default.sh [DATA=../shared/data] [RUNS=runs/default] [DEVICE=cpu]
# The model is packed pixel mode (architecture "fast"): no autoencoder stage. Microscopy and satellite folders are
# listed several times so that each domain gets a fair share of the crops (files are drawn uniformly).
# The shipped model came from three stages on 2 cores (about 70 min in all): kappa 0.5 (stopped by its time limit at
# iteration 4000 of an 8000-iteration schedule), kappa 0.1 (stopped at 1200 of 3000), then kappa 0.02 (2200). The
# noise scale went down because each later step of the 4-step chain lost PSNR against the first step's prediction
# (measured on 12 natural validation images: 0.5 dB at kappa 0.5, 0.4 dB at kappa 0.1); low kappa keeps the output
# at the posterior mean, which is what measurements need. Stages 4 and 5 train on 256-px crops (64-px LR tiles) of the
# files of at least 256 px, so that large tiles keep working (GroupNorm statistics follow the tile size), and stage 5
# adds --rollout 0.75: three quarters of the non-final steps see x_t built from the model's own first estimate, so the
# later steps learn to correct it instead of losing PSNR. The time limits stop each stage about where the shipped
# one stopped (stage 4 at iteration 1000, stage 5 at 6000 of their 9000-iteration schedules).
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/default}; DEV=${3:-cpu}
domains() {  # the training folders of a split, microscopy x3 and satellite x8
  local D="$1/train"
  echo "$D/natural" "$D/microscopy" "$D/microscopy" "$D/microscopy" "$D/satellite" "$D/satellite" "$D/satellite" \
       "$D/satellite" "$D/satellite" "$D/satellite" "$D/satellite" "$D/satellite"
}
python -m training.recipes.split "$DATA" "$R/split" --only train --min-side 128
python -m training.recipes.split "$DATA" "$R/split256" --only train --min-side 256
SHARED=(--min-lr 1e-5 --ema 0.999 --clip 1.0 --val-fraction 0 --val-every 0 --workers 1 --no-tensorboard
        --device "$DEV" --name default)
COMMON=(--data $(domains "$R/split") --crop 128 --batch 16 "${SHARED[@]}")
LARGE=(--data $(domains "$R/split256") --crop 256 --batch 4 "${SHARED[@]}" --lr 2e-4 --iterations 9000)
python -m training.finetune "${COMMON[@]}" --init scratch --arch fast --mode packed --run "$R/stage1" --lr 5e-4 \
  --warmup 200 --iterations 8000 --time-limit 36
python -m training.finetune "${COMMON[@]}" --init "$R/stage1/model.safetensors" --kappa 0.1 --run "$R/stage2" \
  --lr 3e-4 --warmup 50 --iterations 3000 --time-limit 11
python -m training.finetune "${COMMON[@]}" --init "$R/stage2/model.safetensors" --kappa 0.02 --run "$R/stage3" \
  --lr 2e-4 --warmup 50 --iterations 2200 --ema 0.998
python -m training.finetune "${LARGE[@]}" --init "$R/stage3/model.safetensors" --run "$R/stage4" --warmup 100 \
  --time-limit 11
python -m training.finetune "${LARGE[@]}" --init "$R/stage4/model.safetensors" --run "$R/stage5" --warmup 50 \
  --rollout 0.75 --time-limit 82
