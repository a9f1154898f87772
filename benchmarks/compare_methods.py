"""Paired comparison of two methods of a `tadsr eval` report, per image (prints JSON).

Says whether a difference in a mean metric is more than the noise of the measurement: the per-image differences,
how many images each method wins, and a 95% bootstrap interval of the mean difference (10k resamples of the images,
fixed seed). An interval that excludes 0 means the ranking holds across the photos, not only on average.

    python benchmarks/compare_methods.py benchmarks/results/heldout-students/report.json \
        --a "tadsr-tiny-x4 (1 step)" --b "regression-only (1 step)" [--metric st_lpips]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LOWER_IS_BETTER = {"st_lpips", "lpips", "niqe", "seconds"}


def per_image(report: dict, method: str, metric: str) -> dict[str, float]:
    rows = {r["image"]: r[metric] for r in report["per_image"] if r["method"] == method and r.get(metric) is not None}
    if not rows:
        names = sorted({r["method"] for r in report["per_image"]})
        raise SystemExit(f"no {metric} for method {method!r}; methods in the report: {names}")
    return rows


def compare(a: dict[str, float], b: dict[str, float], metric: str, resamples: int = 10_000) -> dict[str, object]:
    images = sorted(set(a) & set(b))
    diff = np.array([a[i] - b[i] for i in images])
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    a_better = diff < 0 if metric in LOWER_IS_BETTER else diff > 0
    return {
        "metric": metric,
        "images": len(images),
        "mean_a": float(np.mean([a[i] for i in images])),
        "mean_b": float(np.mean([b[i] for i in images])),
        "mean_difference_a_minus_b": float(diff.mean()),
        "bootstrap_95": [float(low), float(high)],
        "a_wins": int(a_better.sum()),
        "b_wins": int((~a_better & (diff != 0)).sum()),
        "significant": bool(low > 0 or high < 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, nargs="+", help="report.json file(s); methods are looked up in all")
    parser.add_argument("--a", required=True, help="method name A")
    parser.add_argument("--b", required=True, help="method name B")
    parser.add_argument("--metric", action="append", default=None, help="metric(s) (default: st_lpips, psnr_y)")
    args = parser.parse_args()
    merged = {"per_image": [row for path in args.report for row in json.loads(path.read_text())["per_image"]]}
    out = [compare(per_image(merged, args.a, m), per_image(merged, args.b, m), m)
           for m in args.metric or ["st_lpips", "psnr_y"]]
    print(json.dumps({"a": args.a, "b": args.b, "comparisons": out}, indent=2))


if __name__ == "__main__":
    main()
