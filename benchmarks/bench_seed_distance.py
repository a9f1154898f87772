"""How much the prior noise decides: PSNR between outputs of the same input under two seeds (prints JSON).

A one-step student that follows the image gives nearly the same output for any seed (high PSNR); one that passes its
noise through gives grain that changes with the seed (and flickers in video). Default settings otherwise.

    python benchmarks/bench_seed_distance.py [--lq runs/heldout/lq_realesrgan] [--model default] [--limit 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from tadsr_cli.pipeline.image_read import read_samples
from tadsr_cli.train.data_files import list_images

ROOT = Path(__file__).resolve().parents[1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lq", type=Path, default=ROOT / "runs" / "heldout" / "lq_realesrgan")
    parser.add_argument("--model", action="append", default=None, help="model name or file (default: embedded)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs=2, default=[1, 2])
    args = parser.parse_args()

    from tadsr_cli.engines import create_engine
    from tadsr_cli.models.model_cache import resolve_model
    from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

    files = list_images(args.lq)[: args.limit]
    report: dict[str, object] = {"images": len(files), "seeds": args.seeds, "steps": args.steps}
    for name in args.model or ["default"]:
        model = resolve_model(None if name == "default" else name, device="cpu")
        outs = []
        for seed in args.seeds:
            engine = create_engine("torch", model, device="cpu", precision="fp32", steps=args.steps, seed=seed)
            up = Upscaler(engine, TileOptions(), seed=seed)
            outs.append([up.upscale(read_samples(f).astype(np.float32) / 255.0) for f in files])
        values = [psnr(a, b) for a, b in zip(*outs, strict=True)]
        report[name] = {"median_psnr_db": statistics.median(values), "per_image": dict(
            zip([f.stem for f in files], [round(v, 2) for v in values], strict=True))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
