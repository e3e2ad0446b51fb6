#!/usr/bin/env bash
# Train the package's `default` model, the blind real-world one: the `clean` recipe's stage-1 model, then fine-tuned
# on the blind mixture of degradations drawn per crop (training/degradations.py): natural photos through the
# Real-ESRGAN second-order model with the ResShift paper's ranges, microscopy through PSF blur, binning and
# Poisson-Gaussian noise from 5 to 10,000 photons, satellite through MTF blur, sensor noise and mild JPEG.
# Stage 1: 30% of each domain's crops stay clean bicubic (the blind mixtures' own share). Stage 2 lists each domain
# also as plain bicubic, which raises the clean share to about 55%, so that clean inputs are not over-smoothed.
# Stage 3 leans on clean microscopy and satellite (about 75% and 60% of their crops clean), where clean inputs still
# lost most, with microscopy weighted up (x8 listed) and a new seed (new crops). Stage 4 goes further on clean
# microscopy (x10 listed, about 86% of its crops clean). A stage 5 with stage 4's mixture levelled off (not part of the
# chain); stage 6 starts from stage 4 with microscopy at 95% clean crops (1 blind + 12 bicubic listed), stage 7 at 99%
# (1 + 20) with natural photos 3 blind + 1 bicubic, stage 8 (1 + 30) weights microscopy up to 70% of the crops.
# Stages 1-8 trained at kappa 0.02 and sample better at 0.002 (the sampler's noise costs PSNR). Stage 9 trains the
# whole 4-step chain at 0.002 on the L1 of its sampled result (--loss chain, as clean's last stages) with satellite
# weighted up (30 blind + 6 bicubic listed, 17% of the crops), where default's lead over clean on blind satellite
# was narrowest. The shipped weights are stage 9's.
# Usage: bash training/recipes/default.sh [DATA=../shared/data] [RUNS=runs/default] [DEVICE=auto] [CLEAN=runs/clean]
# CLEAN: a run of training/recipes/clean.sh (made first if it is missing). The shipped stage 1 started from clean's
# stage 1 at iteration 5500 of 8412.
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/default}; DEV=${3:-auto}; CLEAN=${4:-runs/clean}
[ -f "$CLEAN/stage1/model.safetensors" ] || bash training/recipes/clean.sh "$DATA" "$CLEAN" "$DEV"
T="$CLEAN/split192/train"; V="$CLEAN/split192/val"
times() { local n=$1; shift; for _ in $(seq "$n"); do printf '%s ' "$@"; done; }
stage() {  # NAME INIT LR ITERATIONS SEED DATA...
  local name=$1 init=$2 lr=$3 its=$4 seed=$5; shift 5
  python -m training.finetune --init "$init" --degradation bicubic --data "$@" \
    --val-data "blind-natural=$V/natural" "blind-microscopy=$V/microscopy" "blind-satellite=$V/satellite" \
    --val-fraction 0 --val-images 12 --val-size 192 --crop 192 --batch 8 --lr "$lr" --min-lr 1e-6 --warmup 100 \
    --ema 0.999 --clip 1.0 --rollout 0.75 --iterations "$its" --checkpoint-every 250 --val-every 2000 --workers 0 \
    --no-tensorboard --device "$DEV" --seed "$seed" --name default --run "$R/$name" ${LOSS:+--loss "$LOSS"} \
    ${KAPPA:+--kappa "$KAPPA"}
}
stage stage1 "$CLEAN/stage1/model.safetensors" 2e-4 8000 0 "blind-natural=$T/natural" \
  $(times 3 "blind-microscopy=$T/microscopy") $(times 8 "blind-satellite=$T/satellite")
stage stage2 "$R/stage1/model.safetensors" 1e-4 3000 0 $(times 2 "blind-natural=$T/natural") "bicubic=$T/natural" \
  $(times 3 "blind-microscopy=$T/microscopy") $(times 2 "bicubic=$T/microscopy") \
  $(times 4 "blind-satellite=$T/satellite") $(times 2 "bicubic=$T/satellite")
stage stage3 "$R/stage2/model.safetensors" 8e-5 4000 3 $(times 2 "blind-natural=$T/natural") "bicubic=$T/natural" \
  $(times 3 "blind-microscopy=$T/microscopy") $(times 5 "bicubic=$T/microscopy") \
  $(times 5 "blind-satellite=$T/satellite") $(times 4 "bicubic=$T/satellite")
stage stage4 "$R/stage3/model.safetensors" 8e-5 5000 4 $(times 2 "blind-natural=$T/natural") "bicubic=$T/natural" \
  $(times 2 "blind-microscopy=$T/microscopy") $(times 8 "bicubic=$T/microscopy") \
  $(times 5 "blind-satellite=$T/satellite") $(times 4 "bicubic=$T/satellite")
stage stage6 "$R/stage4/model.safetensors" 8e-5 4000 6 $(times 2 "blind-natural=$T/natural") "bicubic=$T/natural" \
  "blind-microscopy=$T/microscopy" $(times 12 "bicubic=$T/microscopy") \
  $(times 5 "blind-satellite=$T/satellite") $(times 4 "bicubic=$T/satellite")
stage stage7 "$R/stage6/model.safetensors" 8e-5 4000 7 $(times 3 "blind-natural=$T/natural") "bicubic=$T/natural" \
  "blind-microscopy=$T/microscopy" $(times 20 "bicubic=$T/microscopy") \
  $(times 5 "blind-satellite=$T/satellite") $(times 4 "bicubic=$T/satellite")
stage stage8 "$R/stage7/model.safetensors" 6e-5 2000 8 $(times 3 "blind-natural=$T/natural") "bicubic=$T/natural" \
  "blind-microscopy=$T/microscopy" $(times 30 "bicubic=$T/microscopy") \
  $(times 5 "blind-satellite=$T/satellite") $(times 4 "bicubic=$T/satellite")
LOSS=chain KAPPA=0.002 stage stage9 "$R/stage8/model.safetensors" 3e-5 2000 24 $(times 3 "blind-natural=$T/natural") \
  "bicubic=$T/natural" "blind-microscopy=$T/microscopy" $(times 30 "bicubic=$T/microscopy") \
  $(times 30 "blind-satellite=$T/satellite") $(times 6 "bicubic=$T/satellite")
