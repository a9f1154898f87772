"""Benchmark of the OpenVINO engine against torch (prints one JSON object; not a timed test).

* `cli`: wall time of the commands users run, default settings (`--backend auto`) against `--backend torch`, in
  the same run: a 96-frame 192x144 video (a camera pan over a held-out photo) and a batch of 32 images of 64x64
  (held-out photo crops) -> x4. One warm-up of each (it also makes the export, the compile cache and auto's
  verdict), then `--repeats` rounds with the two commands taking turns; the median per command. Once at the
  default precision (bf16 on a CPU with native bf16) and once with `--precision fp32` (what a CPU without bf16
  gets).
* `engines`: seconds per call of each engine on one LQ input (`--side`, default 128 -> 512), best of 5 after a
  warm-up, the engines taking turns; and the output's PSNR against torch fp32.
* `shapes`: OpenVINO with one dynamic-shape compile against a compile per static shape, on a video frame (LQ
  192x144) and a tile batch of 8 x 64x64.

    python benchmarks/bench_openvino.py [--repeats 3] [--side 128] [--skip-cli]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
HELD_OUT = ["train-hr/Dragonfly_by_Bolly.jpg", "train-hr/YellowFlower.jpg", "train-hr/life_by_Aitzol_Berasategi.jpg",
            "train-hr/Picture_0B_by_freespace.jpg"]
TADSR = [sys.executable, "-m", "tadsr_cli.cli"]


def held_out(rel: str, down: int = 2) -> np.ndarray:
    from PIL import Image

    img = Image.open(DATA / rel).convert("RGB")
    return np.asarray(img.resize((img.width // down, img.height // down), Image.BICUBIC))


def make_video(path: Path, frames: int = 96, size: tuple[int, int] = (192, 144)) -> None:
    """A slow diagonal camera pan over a held-out photo, H.264 at 24 fps."""
    import av

    photo = held_out(HELD_OUT[0], 4)
    w, h = size
    with av.open(str(path), "w") as box:
        stream = box.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(frames):
            x = int(i * (photo.shape[1] - w) / (2 * frames))
            y = int(i * (photo.shape[0] - h) / (2 * frames))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[y:y + h, x:x + w]), format="rgb24")
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)


def make_images(folder: Path, count: int = 32, side: int = 64) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = held_out(HELD_OUT[i % len(HELD_OUT)], 4)
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        Image.fromarray(photo[y:y + side, x:x + side]).save(folder / f"crop{i:02d}.png")


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def cli(repeats: int, work: Path) -> dict:
    clip, images = work / "clip.mp4", work / "images"
    make_video(clip)
    make_images(images)
    jobs = {
        "video_96x192x144": lambda extra: [*TADSR, "upscale", str(clip), "-o", str(work / "clip_x4.mp4"),
                                           "--overwrite", "-q", *extra],
        "batch_32x64x64": lambda extra: [*TADSR, "batch", str(images), "-o", str(work / "images_x4"),
                                         "--overwrite", "-q", *extra],
    }
    out: dict = {}
    for precision in ("auto", "fp32"):
        prec = [] if precision == "auto" else ["--precision", precision]
        for job, command in jobs.items():
            runs = {"default": command(prec), "torch": command(["--backend", "torch", *prec])}
            times: dict = {name: [] for name in runs}
            for cmd in runs.values():
                timed(cmd)  # warm-up: export, compile cache, auto's verdict
            for _ in range(repeats):
                for name, cmd in runs.items():
                    times[name].append(timed(cmd))
            med = {name: statistics.median(t) for name, t in times.items()}
            out[f"{job}_{precision}"] = {
                "default_seconds": round(med["default"], 2), "torch_seconds": round(med["torch"], 2),
                "speedup_default_vs_torch": round(med["torch"] / med["default"], 3),
                "runs": {name: [round(x, 2) for x in t] for name, t in times.items()},
            }
    return out


def _psnr(a, b) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return round(10 * np.log10(4.0 / max(mse, 1e-20)), 1)  # values in [-1, 1]


def engines(side: int) -> dict:
    import torch

    from tadsr_cli.engines import create_engine
    from tadsr_cli.models import model_cache

    path = model_cache.resolve_model_path(None)
    model = model_cache.resolve_model(str(path))
    threads = torch.get_num_threads()
    rows = {
        "torch-fp32": lambda: create_engine("torch", model, device="cpu", precision="fp32"),
        "onnx-fp32": lambda: create_engine("onnx", model, device="cpu", model_path=path, threads=threads),
        "openvino-fp32": lambda: create_engine("openvino", model, device="cpu", precision="fp32", model_path=path),
        "torch-bf16": lambda: create_engine("torch", model, device="cpu", precision="bf16"),
        "openvino-bf16": lambda: create_engine("openvino", model, device="cpu", precision="bf16", model_path=path),
    }
    built = {}
    for name, make in rows.items():
        try:
            built[name] = make()
        except Exception as exc:  # e.g. no native bf16: reported, not fatal
            built[name] = str(exc)
    gen = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, side, side, generator=gen) * 2 - 1
    noise = torch.randn(1, model.latent_channels, side, side, generator=gen)
    live = {k: v for k, v in built.items() if not isinstance(v, str)}
    best = {k: float("inf") for k in live}
    for eng in live.values():
        eng.run(lq, noise)
    for _ in range(5):
        for name, eng in live.items():
            t0 = time.perf_counter()
            eng.run(lq, noise)
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = live["torch-fp32"].run(lq, noise)
    base = best.get("torch-bf16", best["torch-fp32"])
    out = {"lq_side": side, "threads": threads}
    for name, eng in built.items():
        if isinstance(eng, str):
            out[name] = {"unavailable": eng}
            continue
        out[name] = {"seconds": round(best[name], 4), "vs_torch_bf16": round(base / best[name], 2),
                     "psnr_db_vs_torch_fp32": _psnr(eng.run(lq, noise), ref)}
    return out


def shapes() -> dict:
    """One dynamic compile (what the engine does) against a compile per static shape."""
    import openvino as ov
    import torch

    from tadsr_cli.engines import create_engine
    from tadsr_cli.engines.openvino_engine import cpu_has_native_bf16
    from tadsr_cli.models import model_cache

    path = model_cache.resolve_model_path(None)
    model = model_cache.resolve_model(str(path))
    engine = create_engine("openvino", model, device="cpu", precision="fp32", model_path=path)
    core = ov.Core()
    hint = "bf16" if cpu_has_native_bf16(core) else "f32"
    config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": torch.get_num_threads(),
              "PERFORMANCE_HINT": "LATENCY"}
    dynamic = core.compile_model(str(engine.onnx_path), "CPU", config)
    out: dict = {"precision": hint}
    m = int(model.lq_multiple)  # the upscaler pads to it: a 192x144 frame runs as 192x160
    for label, (b, h, w) in {"video_frame_192x144": (1, -(-144 // m) * m, 192), "tiles_8x64x64": (8, 64, 64)}.items():
        feed = {"lq": np.random.default_rng(0).uniform(-1, 1, (b, 3, h, w)).astype(np.float32),
                "noise": np.random.default_rng(1).standard_normal((b, model.latent_channels, h, w)).astype(np.float32)}
        graph = core.read_model(str(engine.onnx_path))
        graph.reshape({"lq": [b, 3, h, w], "noise": [b, model.latent_channels, h, w]})
        static = core.compile_model(graph, "CPU", config)
        requests = {"dynamic": dynamic.create_infer_request(), "static": static.create_infer_request()}
        best = {k: float("inf") for k in requests}
        for req in requests.values():
            req.infer(feed)
        for _ in range(5):
            for name, req in requests.items():
                t0 = time.perf_counter()
                req.infer(feed)
                best[name] = min(best[name], time.perf_counter() - t0)
        out[label] = {"dynamic_seconds": round(best["dynamic"], 4), "static_seconds": round(best["static"], 4),
                      "static_speedup": round(best["dynamic"] / best["static"], 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    import openvino
    import torch

    from engines.bench import cpu_model_name

    report: dict = {"cpu": cpu_model_name(), "machine": platform.machine(), "torch": torch.__version__,
                    "openvino": openvino.__version__, "torch_threads": torch.get_num_threads()}
    report["engines"] = engines(args.side)
    report["shapes"] = shapes()
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as tmp:
            report["cli"] = cli(args.repeats, Path(tmp))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
