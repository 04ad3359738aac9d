#!/usr/bin/env bash
# CamVid: a per-frame UNet against its cRNN twin at equal training time (docs/benchmarks.md, "Real frames").
# Two jobs side by side, one thread each, 60 minutes in all per model:
#   A: vanilla-none-small-deep, 60 minutes;
#   B: the same per-frame model for 40 minutes, then its cRNN twin warm-started from it (identity cRNN) for 20.
# Then each last.pt is scored on CamVid val, clean and corrupted (CamVid-C), every frame at 360 x 480.
# Usage: benchmarks/camvid_twins.sh [CAMVID_ROOT] [OUT]   (defaults: ../shared/camvid runs/camvid-twins)
set -euo pipefail
root=${1:-../shared/camvid}
out=${2:-runs/camvid-twins}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
common=(--set "data.root=$root" --set eval.every_epochs=10 --set train.tensorboard=false)

vidseg train configs/camvid/vanilla-none-small-shallow-half.yaml "${common[@]}" \
  --set model.name=vanilla-none-small-deep --set train.minutes=60 --out "$out/A-none-60" &
(
  vidseg train configs/camvid/vanilla-none-small-shallow-half.yaml "${common[@]}" \
    --set model.name=vanilla-none-small-deep --set train.minutes=40 --out "$out/B1-none-40"
  vidseg train configs/camvid/vanilla-crnn-small-shallow-warm-half.yaml "${common[@]}" \
    --set model.name=vanilla-crnn-small-deep --set train.minutes=20 \
    --set "train.init_from=$out/B1-none-40/last.pt" --out "$out/B2-crnn-warm-20"
) &
wait

for run in A-none-60 B2-crnn-warm-20; do
  vidseg evaluate --checkpoint "$out/$run/last.pt" --data "$root" --split val --out "$out/$run-clean.json"
  vidseg evaluate --checkpoint "$out/$run/last.pt" --data "$root" --split val --corrupt --per-position off \
    --out "$out/$run-C.json"
done
