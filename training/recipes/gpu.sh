#!/usr/bin/env bash
# Ten minutes on a lent GPU: a further stage of a model, started from its weights, with GPU-sized batches; the
# weights come back under OUT. The training files travel with the repository, copied into an ignored folder first:
#   here:   python -m training.recipes.split ../shared/data .devcarry/split --only train --min-side 192 --copy
#           (and, to continue a model, copy its model.safetensors (+ .json) to .devcarry/)
#   device: bash training/recipes/gpu.sh clean|default .devcarry/MODEL.safetensors "$OUT" [MINUTES=9] [DEVICE=cuda]
# On the device, carry .devcarry. The stage is the recipe's own (bicubic and the L1 loss for clean, the blind mixture
# for default) at 4 times the batch; DEVICE=cpu runs the same few seconds' worth here, to check the script.
# It trains at the recipes' kappa 0.02; the package samples at 0.002 (scripts/ship_model.py --kappa 0.002).
set -euo pipefail
KIND=$1; INIT=$2; OUT=$3; MINUTES=${4:-9}; DEV=${5:-cuda}
T=.devcarry/split/train
case "$KIND" in
  clean) LOSS=l1 DATA=($(printf "$T/natural %.0s" {1..6}) $(printf "$T/microscopy %.0s" {1..12})
                       $(printf "$T/satellite %.0s" {1..4})) ;;
  default) LOSS=mse DATA=("blind-natural=$T/natural" $(printf "blind-microscopy=$T/microscopy %.0s" {1..3})
                   $(printf "blind-satellite=$T/satellite %.0s" {1..8})) ;;
  *) echo "error: the first argument is clean or default, not $KIND" >&2; exit 2 ;;
esac
RUN=$(mktemp -d)/run
python3 -m training.finetune --init "$INIT" --kappa 0.02 --degradation bicubic --loss "$LOSS" --data "${DATA[@]}" \
  --val-fraction 0 --val-every 0 --crop 192 --batch 32 --lr 2e-4 --min-lr 1e-6 --warmup 100 --ema 0.999 --clip 1.0 \
  --rollout 0.75 --iterations 20000 --time-limit "$MINUTES" --checkpoint-every 1000 --workers 6 --no-tensorboard \
  --device "$DEV" --name "$KIND" --run "$RUN"
cp "$RUN/model.safetensors" "$RUN/model.json" "$RUN/metrics.csv" "$OUT/"
