#!/usr/bin/env bash
# int8 vs fp32 accuracy of trained models (issue 14, item 3; docs/benchmarks.md, "int8 accuracy"):
#   1. `vidseg evaluate` at both precisions: the demo's two models on the demo's SynthCity val (its own protocol:
#      24-frame windows, every frame labelled, 64x128), and CamVid checkpoints on CamVid val (stream mode, scored
#      at 360x480); compare_evaluations.py puts each pair side by side;
#   2. drift: bench_int8_accuracy.py streams 1,000 frames (a 1,000-frame SynthCity video; CamVid val ping-pong).
# int8 calibrates on each checkpoint's own validation frames (the default). One thread per job.
# Usage: benchmarks/int8_accuracy.sh DEMO_DIR [CAMVID_ROOT CAMVID_CHECKPOINT ...]   (results in runs/int8-accuracy)
set -euo pipefail
demo=${1:?usage: $0 DEMO_DIR [CAMVID_ROOT CAMVID_CHECKPOINT ...]}
shift
out=runs/int8-accuracy
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

for run in baseline finetune; do
  for precision in fp32 int8; do
    vidseg evaluate --checkpoint "$demo/runs/$run/last.pt" --data "$demo/synthcity" --mode windows \
      --per-position labelled --num-frames 24 --gt-position last --size 64x128 --precision $precision --device cpu \
      --overwrite --out "$out/demo-$run-$precision.json" > /dev/null
  done
  python benchmarks/compare_evaluations.py "$out/demo-$run-fp32.json" "$out/demo-$run-int8.json" --tag "int8-demo-$run"
done
[ -d "$out/synth-long" ] || vidseg synth --out "$out/synth-long" --sequences 1 --val-sequences 1 --frames 1000 --seed 7
for run in baseline finetune; do
  python benchmarks/bench_int8_accuracy.py --checkpoint "$demo/runs/$run/last.pt" --data "$out/synth-long" \
    --tag "demo-$run"
done

if [ $# -gt 0 ]; then
  root=$1
  shift
  for checkpoint in "$@"; do
    name=$(basename "$(dirname "$checkpoint")")
    for precision in fp32 int8; do
      vidseg evaluate --checkpoint "$checkpoint" --data "$root" --split val --precision $precision --device cpu --overwrite \
        --out "$out/camvid-$name-$precision.json" > /dev/null
    done
    python benchmarks/compare_evaluations.py "$out/camvid-$name-fp32.json" "$out/camvid-$name-int8.json" \
      --tag "int8-camvid-$name"
    python benchmarks/bench_int8_accuracy.py --checkpoint "$checkpoint" --data "$root" --tag "camvid-$name"
  done
fi
