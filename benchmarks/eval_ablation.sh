#!/usr/bin/env bash
# One student ablation on the three held-out sets (issue 21's campaign, docs/CAMPAIGN.md):
#   bash benchmarks/eval_ablation.sh NAME MODEL_FILE
# needs `python benchmarks/make_heldout_sets.py --out runs/heldout` (base sets + the web-like set) first; writes
# runs/eval-abl/NAME-{web,realistic,clean}/ (web and realistic with --save-sr, for benchmarks/crop_sheet.py) and
# appends one summary line per set to runs/eval-abl/summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
N=$1; M=$2; H=runs/heldout; O=runs/eval-abl
mkdir -p $O
.venv/bin/tadsr eval --lq $H/web_lq --gt $H/web_gt --model "$M" --no-niqe --save-sr -o $O/$N-web > /dev/null
.venv/bin/tadsr eval --lq $H/lq_realesrgan --gt $H/gt --model "$M" --no-niqe --save-sr -o $O/$N-realistic > /dev/null
.venv/bin/tadsr eval --lq $H/lq_bicubic --gt $H/gt --model "$M" --no-niqe -o $O/$N-clean > /dev/null
for s in web realistic clean; do echo "$N $s: $(grep -m1 '(1 step)' $O/$N-$s/report.md)"; done | tee -a $O/summary.txt
