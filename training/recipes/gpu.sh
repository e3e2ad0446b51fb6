#!/usr/bin/env bash
# Ten minutes on a lent GPU: a further stage of a model, started from its weights, with GPU-sized batches; the
# weights come back under OUT. The training files travel packed, in an ignored folder, under the device's 64 MiB:
#   here:   python -m training.recipes.split ../shared/data runs/split192 --min-side 192
#           python scripts/pack_training_data.py runs/split192/train .devcarry/train.tar.gz --min-side 192 \
#             --max-side 512   (natural, microscopy, satellite: 49 MB; with the tree and a model < 64 MiB)
#           cp napari_resshift/weights/clean.safetensors napari_resshift/weights/clean.json .devcarry/
#   device: bash training/recipes/gpu.sh clean|default .devcarry/MODEL.safetensors "$OUT" [MINUTES=9] [DEVICE=cuda]
# On the device, carry .devcarry. The stage is the recipe's own at 4 times the batch: for clean, its last stage (the
# whole chain trained at kappa 0.002 on the L1 of the sampled result, --loss chain, with the scaled copies of the
# natural photos made there); for default, the blind mixture at kappa 0.02 (the package samples it at 0.002:
# scripts/ship_model.py --kappa 0.002). DEVICE=cpu runs the same few seconds' worth here, to check the script.
set -euo pipefail
KIND=$1; INIT=$2; OUT=$3; MINUTES=${4:-9}; DEV=${5:-cuda}
T=.devcarry/split/train
[ -d "$T" ] || { mkdir -p .devcarry/split && tar xzf .devcarry/train.tar.gz -C .devcarry/split; }
times() { local n=$1; shift; for _ in $(seq "$n"); do printf '%s ' "$@"; done; }
case "$KIND" in
  clean) LOSS=chain KAPPA=0.002 LR=6e-5
         for scales in "0.6 0.8" "0.4 0.5 0.7"; do
           [ -d "$T/natural_x${scales// /_}" ] || python3 -m training.recipes.scaled_copies "$T/natural" \
             "$T/natural_x${scales// /_}" --scales $scales --min-side 192 > /dev/null
         done
         DATA=($(times 4 "$T/natural") $(times 2 "$T/natural_x0.6_0.8") $(times 2 "$T/natural_x0.4_0.5_0.7")
               $(times 14 "$T/microscopy") $(times 4 "$T/satellite")) ;;
  default) LOSS=mse KAPPA=0.02 LR=2e-4
           DATA=("blind-natural=$T/natural" $(times 3 "blind-microscopy=$T/microscopy")
                 $(times 8 "blind-satellite=$T/satellite")) ;;
  *) echo "error: the first argument is clean or default, not $KIND" >&2; exit 2 ;;
esac
RUN=$(mktemp -d)/run
python3 -m training.finetune --init "$INIT" --kappa "$KAPPA" --degradation bicubic --loss "$LOSS" --data "${DATA[@]}" \
  --val-fraction 0 --val-every 0 --crop 192 --batch 32 --lr "$LR" --min-lr 1e-6 --warmup 100 --ema 0.999 --clip 1.0 \
  --rollout 0.75 --iterations 20000 --time-limit "$MINUTES" --checkpoint-every 1000 --workers 6 --no-tensorboard \
  --device "$DEV" --name "$KIND" --run "$RUN"
cp "$RUN/model.safetensors" "$RUN/model.json" "$RUN/metrics.csv" "$OUT/"
