"""Benchmark of the image pipeline with the shipped default model (prints one JSON object; not a timed test).

* `speed`: a `--size` x `--size` photo crop (default 512) upscaled on the CPU as the command builds it, with the
  default settings (`--backend auto --tile auto --precision auto`),
  with `--tile 0` on torch and on ONNX Runtime, with the pre-auto default (`--backend torch --precision fp32
  --tile 128 --tile-overlap 16`, tile-local norms) and with explicit 128 px tiles (whole-image norms). Each row
  has the end-to-end time (best of `--repeats` rounds; each row in a fresh process per round, the rows taking
  turns; with `--threads 1` process CPU time, which other jobs on a shared machine barely change), the network alone on the very same tile batches with the same norms
  (`Upscaler.network_call`: explicit tiles run in lockstep with whole-image norms) and their ratio, and the default
  colour fix on top. The whole-image-norms row also gives the network with tile-local norms on those tiles: what
  the exact norms cost.
* `quality`: PSNR of `--tile 64` and `--tile 128` against `--tile 0` on real photos (held-out + realset65).
* `rss_960x540`: peak RSS of a fresh process that upscales a 960 x 540 PNG end to end with the defaults.

    OMP_NUM_THREADS=1 python benchmarks/bench_pipeline.py --threads 1 [--size 512] [--skip-quality] [--skip-rss]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
PHOTOS = [("train-hr/Dragonfly_by_Bolly.jpg", 4), ("train-hr/YellowFlower.jpg", 4),
          ("realset65/0003.jpg", 1), ("realset65/0015.jpg", 1)]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def photo(rel: str, down: int, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    img = Image.open(DATA / rel).convert("RGB")
    if down > 1:
        img = img.resize((img.width // down, img.height // down), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if size is not None:
        h, w = min(size[0], arr.shape[0]), min(size[1], arr.shape[1])
        y, x = (arr.shape[0] - h) // 2, (arr.shape[1] - w) // 2
        arr = arr[y:y + h, x:x + w]
    return np.ascontiguousarray(arr)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else round(10 * np.log10(1.0 / mse), 2)


THREADS: int | None = None  # --threads: torch and ONNX Runtime intra-op threads
CLOCK = time.perf_counter  # process CPU time with --threads 1: robust on a shared machine


def build(backend: str, precision: str, tiles, color_fix: str = "none"):
    """An upscaler as `tadsr upscale --backend B --precision P` builds it on the CPU (threads: `--threads`)."""
    import torch

    from tadsr_cli.engines import create_engine
    from tadsr_cli.models import model_cache
    from tadsr_cli.pipeline.color_fix import ColorFixedUpscaler
    from tadsr_cli.pipeline.settings import resolve_precision
    from tadsr_cli.pipeline.upscaler import Upscaler

    path = model_cache.resolve_model_path(None)
    opts: dict = {} if backend == "torch" else {"model_path": path}
    if THREADS and backend in ("onnx", "openvino", "auto"):
        opts["threads"] = THREADS
    engine = create_engine(backend, model_cache.resolve_model(str(path)), device="cpu",
                           precision=resolve_precision(precision, torch.device("cpu"), backend, 1), **opts)
    up = Upscaler(engine, tiles, seed=0)
    return up if color_fix == "none" else ColorFixedUpscaler(up, color_fix)


def best_times(fns: dict, repeats: int) -> dict:
    """Best time of each callable over `repeats` rounds, the callables taking turns within a round."""
    for fn in fns.values():
        fn()  # warm-up (kernels, caches, memory probe)
    best = {key: float("inf") for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = CLOCK()
            fn()
            best[key] = min(best[key], CLOCK() - t0)
    return best


def speed_rows():
    from tadsr_cli.pipeline.upscaler import TileOptions

    return {
        "default": ("auto", "auto", TileOptions()),
        "torch_tile0": ("torch", "auto", TileOptions(tile=0)),
        "onnx_tile0": ("onnx", "auto", TileOptions(tile=0)),
        "openvino_tile0": ("openvino", "auto", TileOptions(tile=0)),
        "old_default": ("torch", "fp32", TileOptions(tile=128, overlap=16, whole_image_norms=False)),
        "tile128_whole_image_norms": ("auto", "auto", TileOptions(tile=128, overlap=16)),
    }


def speed_child(label: str, size: int, out_file: str | None) -> dict:
    """Runs in a fresh process: one row, as a user runs it (one configuration per process): end to end and the
    network alone, taking turns (+ the extras of that row); with `out_file`, the output image for the PSNRs."""
    img = photo("train-hr/Dragonfly_by_Bolly.jpg", 2, (size, size))
    backend, precision, tiles = speed_rows()[label]
    up = build(backend, precision, tiles)
    fns: dict = {"e2e": lambda: up.upscale(img), "model": up.network_call(img)}
    if tiles.whole_image_norms and isinstance(tiles.tile, int) and tiles.tile > 0:
        local = build(backend, precision, dataclasses.replace(tiles, whole_image_norms=False))
        fns["tile_local"] = local.network_call(img)
    if label == "default":
        fixed = build(backend, precision, tiles, color_fix="wavelet")
        fns["color_fix"] = lambda: fixed.upscale(img)
    times = best_times(fns, 1)
    if out_file:
        np.save(out_file, up.upscale(img))
    return {"times": times, "backend": up.engine.name, "precision": getattr(up.engine, "precision", "fp32"),
            "tile": up.current_tile, "tiles": len(up.grid(*img.shape[:2]).tiles)}


def speed(size: int, repeats: int, threads: int | None) -> dict:
    """Every row in a fresh process per round, the rows taking turns round after round; the best of `repeats`
    rounds per row. On this shared virtual machine the speed drifts over minutes (the same run measured 1.7-2.9 s),
    and rows running side by side in one process slow each other (ONNX Runtime's end-to-end time rose 2.25 ->
    3.5 s next to four torch upscalers): fresh processes in turns expose every row to the same drift alone."""
    labels = list(speed_rows())
    best: dict = {label: {} for label in labels}
    meta: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for label in labels:
                out_file = str(Path(tmp) / f"{label}.npy") if r == 0 else ""
                cmd = [sys.executable, __file__, "--speed-child", label, "--size", str(size),
                       "--out-file", out_file] + (["--threads", str(threads)] if threads else [])
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                child = json.loads(proc.stdout.strip().splitlines()[-1])
                meta[label] = child
                for key, value in child["times"].items():
                    best[label][key] = min(best[label].get(key, float("inf")), value)
        ref = np.load(Path(tmp) / "default.npy")
        out: dict = {"lq_size": [size, size], "repeats": repeats}
        for label in labels:
            b, m = best[label], meta[label]
            row = {"backend": m["backend"], "precision": m["precision"], "tile": m["tile"], "tiles": m["tiles"],
                   "seconds": round(b["e2e"], 3), "model_only_seconds": round(b["model"], 3),
                   "end_to_end_vs_model_only": round(b["e2e"] / b["model"], 3)}  # >= 1: the pipeline's overhead
            if "tile_local" in b:
                row["model_only_tile_local_norms_seconds"] = round(b["tile_local"], 3)
            if "color_fix" in b:
                row["with_color_fix_seconds"] = round(b["color_fix"], 3)
            if label != "default":
                row["psnr_vs_default"] = psnr(np.load(Path(tmp) / f"{label}.npy"), ref)
            out[label] = row
    fastest = min(out[k]["seconds"] for k in ("torch_tile0", "onnx_tile0", "openvino_tile0"))
    out["default_vs_fastest_tile0"] = round(out["default"]["seconds"] / fastest, 3)
    out["speedup_vs_old_default"] = round(out["old_default"]["seconds"] / out["default"]["seconds"], 3)
    return out


def quality() -> dict:
    from tadsr_cli.pipeline.upscaler import TileOptions

    out = {}
    for rel, down in PHOTOS:
        img = photo(rel, down, (256, 320))
        ref = build("torch", "fp32", TileOptions(tile=0)).upscale(img)
        row = {"lq_size": list(img.shape[:2])}
        for tile in (64, 128):
            for norms in (True, False):
                up = build("torch", "fp32", TileOptions(tile=tile, overlap=16, whole_image_norms=norms))
                key = f"tile{tile}_{'whole_image' if norms else 'tile_local'}_norms_db"
                row[key] = psnr(up.upscale(img), ref)
        out[rel] = row
    return out


def rss_child() -> dict:
    """Runs in a fresh process: the default settings on a 960 x 540 PNG, end to end (read, model, write)."""
    from PIL import Image

    from tadsr_cli.pipeline.image_io import upscale_image
    from tadsr_cli.pipeline.upscaler import TileOptions

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        Image.fromarray((photo("train-hr/Dragonfly_by_Bolly.jpg", 2, (540, 960)) * 255).astype(np.uint8)).save(src)
        up = build("auto", "auto", TileOptions(), color_fix=os.environ.get("BENCH_COLOR_FIX", "wavelet"))
        before = _peak_rss_mb()
        t0 = time.perf_counter()
        res = upscale_image(src, Path(tmp) / "out.png", up)
        dt = time.perf_counter() - t0
    inner = getattr(up, "upscaler", up)
    return {"in_size": list(res.in_size), "out_size": list(res.out_size), "seconds": round(dt, 3),
            "backend": inner.engine.name, "tile": inner.current_tile,
            "rss_after_model_load_mb": round(before, 1), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="LQ side of the speed runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch/ORT threads (default: torch's)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--speed-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-file", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    from tadsr_cli.base.allocator import keep_freed_memory

    keep_freed_memory()  # as the `tadsr` command does

    global THREADS, CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
        THREADS = args.threads
        if args.threads == 1:
            CLOCK = time.process_time
    if args.rss_child:
        print(json.dumps(rss_child()))
        return
    if args.speed_child:
        print(json.dumps(speed_child(args.speed_child, args.size, args.out_file or None)))
        return
    result: dict = {"bench": "pipeline", "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "clock": "process CPU seconds" if CLOCK is time.process_time else "wall seconds"}
    if not args.skip_speed:
        result["speed"] = speed(args.size, args.repeats, args.threads)
    if not args.skip_quality:
        result["quality"] = quality()
    if not args.skip_rss:
        cmd = [sys.executable, __file__, "--rss-child"] + (["--threads", str(args.threads)] if args.threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            result["rss_960x540"] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            result["rss_960x540"] = {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
