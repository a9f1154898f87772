#!/usr/bin/env bash
# Regenerates the README's quality table and crop figures on the 20 held-out whole photos, default settings:
#   bicubic, Real-ESRGAN x4plus, the embedded teacher at 15 and 1 steps  -> benchmarks/results/heldout-teacher/
#   the students: full TAD-SR (run of recipes/tadsr-tiny-x4.yaml), regression-only (recipes/tadsr-tiny-x4-regonly.yaml,
#   shipped as the embedded default) and without D (recipes/tadsr-tiny-x4.yaml --set loss.gan=0
#   --out runs/tadsr-tiny-x4-nod)  -> benchmarks/results/heldout-students/
# Usage: bash benchmarks/eval_embedded.sh   (from the repository root, with .venv set up)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
SETS=runs/heldout
[ -d "$SETS/gt" ] || "$BIN/python" benchmarks/make_heldout_sets.py --out "$SETS"
"$BIN/tadsr" eval --lq "$SETS/lq_realesrgan" --gt "$SETS/gt" --baseline bicubic,realesrgan \
  --model tadsr-tiny-x4-teacher --steps 15 --steps 1 -o benchmarks/results/heldout-teacher
mkdir -p runs/ablations
cp runs/tadsr-tiny-x4-regonly/model.safetensors runs/ablations/regression-only.safetensors
cp runs/tadsr-tiny-x4-nod/model.safetensors runs/ablations/without-D.safetensors
cp runs/tadsr-tiny-x4/model.safetensors runs/ablations/tadsr-full.safetensors
"$BIN/tadsr" eval --lq "$SETS/lq_realesrgan" --gt "$SETS/gt" \
  --model runs/ablations/tadsr-full.safetensors --model runs/ablations/regression-only.safetensors --model runs/ablations/without-D.safetensors \
  -o benchmarks/results/heldout-students
