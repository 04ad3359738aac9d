#!/usr/bin/env bash
# CamVid's real-data target (issue 11): the best model trained in at most 60 minutes of the 2-core CPU, scored on
# val (101 frames at 360 x 480, void ignored). Run it on an otherwise idle machine: the budget is wall-clock.
#   per-frame vanilla-none-small-deep, configs/camvid/vanilla-none-small-deep-half.yaml (180 x 240, random scale
#   1.0-1.5, crop, flip, 4-frame windows, Adam 3e-3 cosine, 1/sqrt(frequency) weights); the runs in
#   docs/benchmarks.md used that config's recipe through vanilla-none-small-shallow-half.yaml + model.name.
# Usage: benchmarks/camvid_60min.sh [CAMVID_ROOT] [OUT] [THREADS] [MODEL]
#   (defaults: ../shared/camvid runs/camvid-60min 2 vanilla-none-small-deep)
#   STEPS=N replaces the 60-minute budget by N steps (the cosine schedule spans them), so that a start checkpoint
#   can be rebuilt on another CPU: e.g. STEPS=2089, what the 60 minutes bought on the AVX2 machine.
set -euo pipefail
root=${1:-../shared/camvid}
out=${2:-runs/camvid-60min}
threads=${3:-2}
model=${4:-vanilla-none-small-deep}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

budget=(--set train.minutes=60)
if [[ -n ${STEPS:-} ]]; then budget=(--set "train.steps=$STEPS" --set train.minutes=600); fi

# No evaluation inside the budget (eval.every_epochs beyond the run); the end-of-run evaluation is outside it.
vidseg train configs/camvid/vanilla-none-small-deep-half.yaml --set "data.root=$root" \
  --set "model.name=$model" "${budget[@]}" --set eval.every_epochs=1000 --set train.tensorboard=false \
  --out "$out"
vidseg evaluate --checkpoint "$out/last.pt" --data "$root" --split val --out "$out-clean.json"
