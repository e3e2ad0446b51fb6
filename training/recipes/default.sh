#!/usr/bin/env bash
# Train the package's default model from ../shared/data: split, autoencoder stage, latent scale, denoiser stage.
# Usage: bash training/recipes/default.sh [DATA=../shared/data] [RUNS=runs/default] [DEVICE=auto] [AE_MIN] [DEN_MIN]
# The shipped weights came from this recipe on an H200 (without SunHays80, to fit the transfer limit) (AE 2500 its in 1 min, denoiser 3629 its in 3.6 min, batch 32);
# on this 2-core CPU give it a few hours: --time-limit stops each stage with the weights exported.
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/default}; DEV=${3:-auto}; AE_MIN=${4:-60}; DEN_MIN=${5:-180}
python -m training.recipes.split "$DATA" "$R/split" --only train --min-side 128
D="$R/split/train"
python -m training.finetune --stage autoencoder --init scratch --arch small --no-quantize \
  --data "$D/natural" "$D/microscopy" "$D/satellite" --run "$R/ae" --crop 128 --batch 32 --lr 5e-4 --min-lr 1e-5 \
  --warmup 100 --iterations 2500 --time-limit "$AE_MIN" --val-fraction 0 --val-every 0 --device "$DEV" --name default-ae
python -m training.recipes.latent_scale "$R/ae/model.safetensors" "$D" "$R/small.json"
python -m training.finetune --init scratch --config "$R/small.json" --autoencoder "$R/ae/model.safetensors" \
  --data "$D/natural" "$D/microscopy" "$D/satellite" --run "$R/den" --crop 128 --batch 32 --lr 4e-4 --min-lr 1e-5 \
  --warmup 200 --ema 0.999 --clip 1.0 --iterations 4000 --time-limit "$DEN_MIN" --val-fraction 0 --val-every 0 \
  --device "$DEV" --name default
