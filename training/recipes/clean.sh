#!/usr/bin/env bash
# Train the `clean` preset (clean bicubic-like data) from scratch: a packed-mode ConvDenoiser in stages.
# Usage: bash training/recipes/clean.sh [DATA=../shared/data] [RUNS=runs/clean] [DEVICE=auto]
# Files of at least 192 px of the training split; files are drawn uniformly, so a folder listed k times gets k times
# its share. Stage 1 learns from all domains (microscopy x3, satellite x8); stage 2 leans on microscopy (x6) at half
# the learning rate; stage 3 leans on natural photos (x3), the domain furthest from its target (the shipped chain
# stopped it at 3,500 of its 8,000 iterations, for time). Stages 4 and 5 make it cheaper for #14's speed: stage 3
# with 5 of its 8 LR-encoder blocks (scripts/reshape_blocks.py), fine-tuned 5,000 iterations on stage 3's mixture, then
# 20,000 more with microscopy x9 (stopped by its time limit at 18,105); stage 6 leans on natural photos again (x6,
# 76% of the crops); stage 7 lists microscopy 12 times; stage 9 goes on from stage 7 with an L1 loss (LOSS=l1) on
# stage 7's mixture, stage 10 with natural photos listed 9 times (stopped at 8,000 of its 40,000 iterations); stage
# 12 gives each of the 4 steps its own copy of the step blocks (scripts/reshape_blocks.py --untie-steps: the same
# function and work per upscale, 4x the step blocks' parameters) and trains on stage 10's mixture (stopped at 15,000
# of its 20,000 iterations); stage 13 adds the natural photos shrunk to 0.6x and 0.8x (training/recipes/
# scaled_copies.py) and stops at 10,000 of its 20,000 iterations (shipped at 7,500 until stage 14); stage 14 adds
# them at 0.4x, 0.5x and 0.7x too and stops at 10,000 of its 20,000 iterations; stage 15 trains the whole 4-step
# chain at kappa 0.002 on the L1 of its sampled result (--loss chain), on stage 14's mixture, stopped at 3,500 of 4,000;
# stage 16 goes on with the chain at a higher learning rate (5e-5 against 3e-5), 3,600 iterations; stage 17 trains
# the chain on 256-px crops (wider than its receptive field) of the files of at least 256 px, stopped at 2,000 of 2,400;
# stage 18 moves to the split by sources (training/recipes/split.py --by sources) and its new sources, each source
# its own --data entries drawn alike (--draw entries): 6 per natural source, 3 per microscopy source and 1 per
# satellite source (43% / 27% / 30% of the crops), the chain loss at kappa 0.002 on 192-px crops. Stage 18 is in
# training and not shipped: the shipped weights are stage 17's.
# Stages 1-14 train at kappa 0.02 and sample better at 0.002 (the sampler's noise costs PSNR), where 15-17 train.
# Validation: 12 crops of the held-out split. STOP=N stops a stage at iteration N of its schedule (--stop-at), where
# the shipped chain stopped it. Stage 7 ends at 7,500 of its 40,000 iterations; an annealed stage 8 of 22,000 more
# with the MSE loss measured the same, so it is not here.
set -euo pipefail
DATA=${1:-../shared/data}; R=${2:-runs/clean}; DEV=${3:-auto}
python -m training.recipes.split "$DATA" "$R/split192" --min-side 192 > /dev/null
T="$R/split192/train"; V="$R/split192/val"
times() { local n=$1; shift; for _ in $(seq "$n"); do printf '%s ' "$@"; done; }
stage() {  # NAME INIT LR ITERATIONS SEED DATA...
  local name=$1 init=$2 lr=$3 its=$4 seed=$5 warmup=100; shift 5
  [ "$init" = scratch ] && warmup=200
  python -m training.finetune --init "$init" --arch conv --mode packed --kappa "${KAPPA:-0.02}" --degradation bicubic \
    --data "$@" --val-data "${VAL:-$V}/natural" "${VAL:-$V}/microscopy" "${VAL:-$V}/satellite" --val-fraction 0 \
    --val-images 12 \
    --val-size 192 --crop "${CROP:-192}" --batch 8 --lr "$lr" --min-lr 1e-6 --warmup "$warmup" --ema 0.999 --clip 1.0 \
    --rollout 0.75 --iterations "$its" --seed "$seed" --checkpoint-every 250 --val-every 2000 --workers 0 \
    --no-tensorboard --device "$DEV" --name clean --run "$R/$name" ${STOP:+--stop-at "$STOP"} ${LOSS:+--loss "$LOSS"} \
    ${DRAW:+--draw "$DRAW"}
}
stage stage1 scratch 4e-4 8412 0 "$T/natural" $(times 3 "$T/microscopy") $(times 8 "$T/satellite")
stage stage2 "$R/stage1/model.safetensors" 2e-4 4000 0 "$T/natural" $(times 6 "$T/microscopy") $(times 4 "$T/satellite")
STOP=3500 stage stage3 "$R/stage2/model.safetensors" 1.5e-4 8000 0 $(times 3 "$T/natural") $(times 6 "$T/microscopy") \
  $(times 4 "$T/satellite")
python scripts/reshape_blocks.py "$R/stage3/model.safetensors" "$R/stage4_init.safetensors" --encoder-keep 5
stage stage4 "$R/stage4_init.safetensors" 1e-4 5000 7 $(times 3 "$T/natural") $(times 6 "$T/microscopy") \
  $(times 4 "$T/satellite")
STOP=18105 stage stage5 "$R/stage4/model.safetensors" 1.5e-4 20000 8 $(times 3 "$T/natural") \
  $(times 9 "$T/microscopy") $(times 4 "$T/satellite")
stage stage6 "$R/stage5/model.safetensors" 1e-4 21000 9 $(times 6 "$T/natural") $(times 9 "$T/microscopy") \
  $(times 4 "$T/satellite")
STOP=7500 stage stage7 "$R/stage6/model.safetensors" 1e-4 40000 10 $(times 6 "$T/natural") \
  $(times 12 "$T/microscopy") $(times 4 "$T/satellite")
LOSS=l1 stage stage9 "$R/stage7/model.safetensors" 5e-5 20000 13 $(times 6 "$T/natural") \
  $(times 12 "$T/microscopy") $(times 4 "$T/satellite")
LOSS=l1 STOP=8000 stage stage10 "$R/stage9/model.safetensors" 8e-5 40000 14 $(times 9 "$T/natural") \
  $(times 12 "$T/microscopy") $(times 4 "$T/satellite")
python scripts/reshape_blocks.py "$R/stage10/model.safetensors" "$R/stage12_init.safetensors" --untie-steps
LOSS=l1 STOP=15000 stage stage12 "$R/stage12_init.safetensors" 8e-5 20000 17 $(times 9 "$T/natural") \
  $(times 12 "$T/microscopy") $(times 4 "$T/satellite")
python -m training.recipes.scaled_copies "$T/natural" "$T/natural_scaled" --scales 0.6 0.8 --min-side 192
LOSS=l1 STOP=10000 stage stage13 "$R/stage12/model.safetensors" 5e-5 20000 18 $(times 5 "$T/natural") \
  $(times 2 "$T/natural_scaled") $(times 12 "$T/microscopy") $(times 4 "$T/satellite")
python -m training.recipes.scaled_copies "$T/natural" "$T/natural_scaled2" --scales 0.4 0.5 0.7 --min-side 192
mix14() { times 4 "$1/natural"; times 2 "$1/natural_scaled"; times 2 "$1/natural_scaled2"; times 14 "$1/microscopy"
  times 4 "$1/satellite"; }  # stage 14's mixture, kept by stages 15-17
MIX14=$(mix14 "$T")
LOSS=l1 STOP=10000 stage stage14 "$R/stage13/model.safetensors" 5e-5 20000 19 $MIX14
LOSS=chain KAPPA=0.002 STOP=3500 stage stage15 "$R/stage14/model.safetensors" 3e-5 4000 20 $MIX14
LOSS=chain KAPPA=0.002 stage stage16 "$R/stage15/model.safetensors" 5e-5 3600 21 $MIX14
python -m training.recipes.split "$DATA" "$R/split256" --min-side 256 > /dev/null
T256="$R/split256/train"
python -m training.recipes.scaled_copies "$T256/natural" "$T256/natural_scaled" --scales 0.6 0.8 --min-side 256
python -m training.recipes.scaled_copies "$T256/natural" "$T256/natural_scaled2" --scales 0.4 0.5 0.7 --min-side 256
LOSS=chain KAPPA=0.002 CROP=256 STOP=2000 stage stage17 "$R/stage16/model.safetensors" 5e-5 2400 22 $(mix14 "$T256")
python -m training.recipes.split "$DATA" "$R/sources192" --by sources --min-side 192 > /dev/null
S="$R/sources192/train"
LOSS=chain KAPPA=0.002 DRAW=entries VAL="$R/sources192/val" stage stage18 "$R/stage17/model.safetensors" 5e-5 4000 23 \
  $(for f in "$S"/natural/*; do times 6 "$f"; done) $(for f in "$S"/microscopy/*; do times 3 "$f"; done) "$S"/satellite/*
