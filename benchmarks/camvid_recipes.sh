#!/usr/bin/env bash
# Issue 15 on CamVid: a temporal recipe against its per-frame twin at equal training FLOPs, on clean and
# corrupted val (docs/benchmarks.md, "Issue 15 on CamVid"). Both start from the same per-frame checkpoint (B1 of
# benchmarks/camvid_twins.sh: vanilla-none-small-deep after 40 minutes) and see the same data options:
#   per-frame: 526 more steps of vanilla-none-small-deep;
#   temporal:  366 steps of residual vanilla-crnn-small-deep, units starting at zero (the per-frame model exactly);
#   memory:    525 steps of vanilla-none-small-deep with model.output_memory (vidseg.models.memory): the per-frame
#              network, its output a learned running average of its probabilities; the gate costs 0.3% more FLOPs
#              per frame that has a memory (3 of a 4-frame window's), 526 / 1.00225 = 525 (add
#              --set loss.memory_gradient=false after --temporal to train the network as the twin is trained; the
#              network alone, memory-off.pt, is scored too: with that option it is the twin at 525 steps);
# 526 = 366 x 1.436, the ratio of their training FLOPs at 180x240 (vidseg.demo.plan.training_flops).
# Usage: benchmarks/camvid_recipes.sh CAMVID_ROOT PRETRAINED_PT OUT [--set KEY=VALUE ...] [--temporal --set ...]
#   options before --temporal go to both runs, options after it to the temporal run only (a later train.steps wins);
#   RUNS=temporal (or RUNS=per-frame, RUNS=memory) trains and scores that model only, e.g. a further temporal recipe
#   against a twin already trained; options after --temporal go to the memory run too.
#   e.g. benchmarks/camvid_recipes.sh ../shared/camvid runs/camvid-twins/B1-none-40/last.pt runs/c03 \
#        --set data.corrupt.rate=0.3 --temporal --set model.temporal_kernel=1 --set train.steps=502
set -euo pipefail
root=${1:?usage: $0 CAMVID_ROOT PRETRAINED_PT OUT [--set KEY=VALUE ...] [--temporal --set KEY=VALUE ...]}
pretrained=${2:?missing PRETRAINED_PT}
out=${3:?missing OUT}
shift 3
both=() temporal=()
while (($#)); do
  if [[ $1 == --temporal ]]; then shift; temporal=("$@"); break; fi
  both+=("$1"); shift
done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
common=(--set "data.root=$root" --set eval.every_epochs=0 --set train.tensorboard=false --set train.minutes=600
  --set "train.init_from=$pretrained" ${both[@]+"${both[@]}"})

read -r -a runs <<< "${RUNS:-per-frame temporal}"
for run in "${runs[@]}"; do
  case $run in
    per-frame)
      vidseg train configs/camvid/vanilla-none-small-shallow-half.yaml "${common[@]}" \
        --set model.name=vanilla-none-small-deep --set train.steps=526 --out "$out/per-frame" & ;;
    temporal)
      vidseg train configs/camvid/vanilla-crnn-small-shallow-warm-half.yaml "${common[@]}" \
        --set model.name=vanilla-crnn-small-deep --set model.temporal_residual=true --set train.steps=366 \
        ${temporal[@]+"${temporal[@]}"} --out "$out/temporal" & ;;
    memory)
      vidseg train configs/camvid/vanilla-none-small-shallow-half.yaml "${common[@]}" \
        --set model.name=vanilla-none-small-deep --set model.output_memory=true --set train.steps=525 \
        ${temporal[@]+"${temporal[@]}"} --out "$out/memory" & ;;
    *) echo "RUNS: expected per-frame, temporal and/or memory, found '$run'" >&2; exit 2 ;;
  esac
done
wait

for run in "${runs[@]}"; do
  vidseg evaluate --checkpoint "$out/$run/last.pt" --data "$root" --split val --out "$out/$run-clean.json"
  vidseg evaluate --checkpoint "$out/$run/last.pt" --data "$root" --split val --corrupt 0.3 --per-position off \
    --out "$out/$run-C.json"
done
# A memory run trained with loss.memory_gradient=false holds its per-frame twin at the same step count: its network
# (benchmarks/without_memory.py), scored the same way, is the reference without the noise of a second run.
if [[ " ${runs[*]} " == *" memory "* ]]; then
  python "$(dirname "$0")/without_memory.py" "$out/memory/last.pt" "$out/memory-off.pt"
  vidseg evaluate --checkpoint "$out/memory-off.pt" --data "$root" --split val --out "$out/memory-off-clean.json"
  vidseg evaluate --checkpoint "$out/memory-off.pt" --data "$root" --split val --corrupt 0.3 --per-position off \
    --out "$out/memory-off-C.json"
fi
