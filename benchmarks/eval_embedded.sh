#!/usr/bin/env bash
# Regenerates the README's quality tables and crop figures on the 20 held-out whole photos, default settings
# (what `tadsr upscale` does: --precision auto, --color-fix wavelet, --tile auto):
#   Real-ESRGAN-degraded LR: bicubic, Real-ESRGAN x4plus, the embedded teacher at 15 and 1 steps
#                                                                          -> benchmarks/results/heldout-teacher/
#   the embedded default (full TAD-SR, recipes/tadsr-tiny-x4.yaml) and its ablations from the same warm start,
#   data, seed and iterations: regression only and without the discriminator (the `--set` lines in that recipe),
#   and the video default (the same + fidelity, recipes/tadsr-tiny-x4-video.yaml), beside bicubic
#                                                                          -> benchmarks/results/heldout-students/
#   clean (bicubic-downscaled) LR: bicubic, Real-ESRGAN x4plus, teacher 15 steps, default, regression only,
#   video default                                                          -> benchmarks/results/heldout-clean/
#   web-image variant (each photo downscaled to ~500 px and JPEG-compressed as a web page's photo is, then 3
#   256x256 crops x 2 Real-ESRGAN degradation draws = 120 pairs; benchmarks/make_heldout_sets.py): bicubic,
#   Real-ESRGAN x4plus, teacher 15 steps, default, and a crop sheet of the 8 worst for the default
#                                                                          -> benchmarks/results/heldout-web/
#   realset65 (real LR photos, no GT: NIQE + a look): bicubic, Real-ESRGAN x4plus, default, and a crop sheet
#                                                                          -> benchmarks/results/realset65/
#   (both run with --save-sr into runs/heldout-web and runs/realset65, which keep the outputs and report.html for
#   more crop sheets: python benchmarks/crop_sheet.py runs/heldout-web --methods ... --of ...; only the report
#   files and the sheet are copied to benchmarks/results/)
#   seed-to-seed distance; video flicker and PSNR on three camera pans with the video default and the image
#   default at video settings, and the video default without temporal smoothing
#                                                                          -> benchmarks/results/*.json
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
  --model tadsr-tiny-x4-video -o benchmarks/results/heldout-students
"$BIN/tadsr" eval --lq "$SETS/lq_bicubic" --gt "$SETS/gt" --baseline bicubic,realesrgan \
  --model default --model tadsr-tiny-x4-teacher --model runs/ablations/regression-only.safetensors \
  --model tadsr-tiny-x4-video -o benchmarks/results/heldout-clean
# The teacher runs at its registry steps (15) and the default at 1: `--steps 15` would apply to every model and
# run the student at 15 steps too (its schedule has T = 15).
[ -d "$SETS/web_gt" ] || "$BIN/python" benchmarks/make_heldout_sets.py --out "$SETS" --only web
"$BIN/tadsr" eval --lq "$SETS/web_lq" --gt "$SETS/web_gt" --baseline bicubic,realesrgan \
  --model tadsr-tiny-x4-teacher --model default --save-sr -o runs/heldout-web
mkdir -p benchmarks/results/heldout-web
cp runs/heldout-web/report.json runs/heldout-web/report.md runs/heldout-web/figure.png benchmarks/results/heldout-web/
"$BIN/python" benchmarks/crop_sheet.py runs/heldout-web --methods bicubic,realesrgan,tadsr-tiny-x4-teacher,default \
  --worst 8 --by st_lpips --of default -o benchmarks/results/heldout-web/sheet.png
# realset65 has no ground truth: `tadsr eval` without --gt measures NIQE only (the sheet crops its most detailed area)
"$BIN/tadsr" eval --lq "${DATA:-../shared/data}/realset65" --baseline bicubic,realesrgan --model default --save-sr \
  -o runs/realset65
mkdir -p benchmarks/results/realset65
cp runs/realset65/report.json runs/realset65/report.md runs/realset65/figure.png benchmarks/results/realset65/
"$BIN/python" benchmarks/crop_sheet.py runs/realset65 --methods bicubic,realesrgan,default --worst 8 --by niqe \
  --of default -o benchmarks/results/realset65/sheet.png
"$BIN/python" benchmarks/compare_methods.py benchmarks/results/heldout-students/report.json \
  --a "tadsr-tiny-x4 (1 step)" --b "regression-only (1 step)" > benchmarks/results/full_vs_regression_only.json
"$BIN/python" benchmarks/bench_seed_distance.py --model default > benchmarks/results/seed_distance.json
"$BIN/python" benchmarks/bench_video_stability.py --model default --model tadsr-tiny-x4 \
  > benchmarks/results/video_stability.json
"$BIN/python" benchmarks/bench_video_stability.py --temporal-smoothing 0 > benchmarks/results/video_stability_no_smoothing.json
cat benchmarks/results/seed_distance.json
