#!/usr/bin/env bash
# Regenerates the README's quality table and crop figures on the 20 held-out whole photos, default settings
# (what `tadsr upscale` does: --precision auto, --color-fix wavelet, --tile auto):
#   bicubic, Real-ESRGAN x4plus, the embedded teacher at 15 and 1 steps   -> benchmarks/results/heldout-teacher/
#   the embedded default (full TAD-SR, recipes/tadsr-tiny-x4.yaml) and its ablations from the same warm start,
#   data, seed and iterations: regression only and without the discriminator (the `--set` lines in that recipe),
#   beside bicubic                                                         -> benchmarks/results/heldout-students/
# The ablation models are read from runs/ (train them first with the recipe's ablation lines).
# Usage: bash benchmarks/eval_embedded.sh   (from the repository root, with .venv set up)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
SETS=runs/heldout
[ -d "$SETS/gt" ] || "$BIN/python" benchmarks/make_heldout_sets.py --out "$SETS"
"$BIN/tadsr" eval --lq "$SETS/lq_realesrgan" --gt "$SETS/gt" --baseline bicubic,realesrgan \
  --model tadsr-tiny-x4-teacher --steps 15 --steps 1 -o benchmarks/results/heldout-teacher
mkdir -p runs/ablations
cp runs/tadsr-tiny-x4-reg/model.safetensors runs/ablations/regression-only.safetensors
cp runs/tadsr-tiny-x4-nod/model.safetensors runs/ablations/without-D.safetensors
"$BIN/tadsr" eval --lq "$SETS/lq_realesrgan" --gt "$SETS/gt" --baseline bicubic \
  --model default --model runs/ablations/regression-only.safetensors --model runs/ablations/without-D.safetensors \
  -o benchmarks/results/heldout-students
"$BIN/python" benchmarks/bench_seed_distance.py --model default > benchmarks/results/seed_distance.json
cat benchmarks/results/seed_distance.json
