"""Video end-to-end fps vs upscaler-only fps on a synthetic 320x240 clip (prints one JSON object).

    python benchmarks/bench_video.py [--frames 24] [--device auto] [--tile 0] [--standin]

The upscaler is the real pipeline `Upscaler` over the torch engine with the tiny random-weight test model
(`tiny_test_config`), unless it cannot be imported or `--standin` is given: then a cv2 bicubic stand-in is used and
the JSON says so. "upscaler_only_fps" times `upscaler.upscale` on frames already decoded in memory;
"video_fps" times `upscale_video` (prescan + decode + upscale + encode + remux, H.264 CRF 18 preset medium);
"overhead" = 1 - video_fps / upscaler_only_fps is what the video pipeline costs on top of the model ("ratio" is
video_fps / upscaler_only_fps). A cv2 stand-in run is always included to show the pipeline's own ceiling, and
"serial_fps" is what decode + model + encode would give one after the other (1 / (1/model + 1/pipeline)): a
video_fps above it means the stages overlap. On a machine with few cores the stages also share the CPU (x264
runs its own threads), so the ratio is bounded by CPU time there, not by the overlap.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tadsr_cli.pipeline.video import VideoOptions, upscale_video  # noqa: E402

W, H, RATE = 320, 240, 24


class CubicStandIn:
    scale = 4

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        return np.clip(cv2.resize(rgb, (w * 4, h * 4), interpolation=cv2.INTER_CUBIC), 0, 1)


class OffloadedStandIn(CubicStandIn):
    """A network that runs elsewhere (a GPU) for `seconds` per frame and leaves the CPU and the GIL free meanwhile:
    shows how much of decoding and encoding hides behind the network, whatever else loads the CPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return super().upscale(rgb)


def make_clip(path: Path, n: int) -> None:
    """A moving-pattern H.264 clip with AAC audio."""
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=RATE)
    v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    v.codec_context.time_base = Fraction(1, RATE)
    v.codec_context.options = {"preset": "veryfast", "crf": "16"}
    a = c.add_stream("aac", rate=48000, layout="mono")
    y, x = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.stack([(x + 3 * i) % 256, (y * 2 + i) % 256, ((x + y) // 2 + 5 * i) % 256], axis=-1).astype(
            np.float32
        )
        img += rng.normal(0, 8, img.shape)  # some texture for the encoder
        f = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
        f.pts = i
        for p in v.encode(f):
            c.mux(p)
    for p in v.encode():
        c.mux(p)
    samples = int(48000 * n / RATE)
    t = np.arange(samples, dtype=np.float32) / 48000
    af = av.AudioFrame.from_ndarray(
        (0.1 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), format="fltp", layout="mono"
    )
    af.sample_rate, af.pts = 48000, 0
    for p in [*a.encode(af), *a.encode()]:
        c.mux(p)
    c.close()


def build_upscaler(device: str, tile: int) -> tuple[Any, str]:
    try:
        import torch

        from tadsr_cli.engines import create_engine
        from tadsr_cli.models.presets import tiny_test_config
        from tadsr_cli.models.sr_model import DiffusionSR
        from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler
    except Exception as exc:  # noqa: BLE001 - report and fall back
        return CubicStandIn(), f"cv2 bicubic stand-in (pipeline Upscaler not importable: {exc})"
    torch.manual_seed(0)
    model = DiffusionSR(tiny_test_config()).eval()
    engine = create_engine("torch", model, device=device, precision="fp32")
    up = Upscaler(engine, TileOptions(tile=tile), seed=0)
    dev = getattr(engine, "device", device)
    return (
        up,
        f"pipeline Upscaler, torch engine, tiny_test_config (random weights), device {dev}, tile {tile}",
    )


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.float32) / 255.0 for f in c.decode(video=0)]


def upscaler_only_fps(up: Any, frames: list[np.ndarray]) -> float:
    up.upscale(frames[0])  # warm-up (kernels, tile grid cache)
    t0 = time.perf_counter()
    for f in frames:
        up.upscale(f)
    return len(frames) / (time.perf_counter() - t0)


def video_run(up: Any, src: Path, dst: Path) -> dict[str, Any]:
    up.upscale(decoded_frames(src)[0])  # same warm-up as the model-only run
    rep = upscale_video(src, dst, up, VideoOptions())
    return {
        "fps": round(rep.fps, 3),
        "frames": rep.frames_out,
        "elapsed_s": round(rep.elapsed_s, 3),
        "out_size": list(rep.out_size),
        "copied_streams": rep.copied_streams,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tile", type=int, default=0, help="LQ tile size for the Upscaler (0 = whole frame)")
    ap.add_argument("--standin", action="store_true", help="only the stand-ins (no torch model)")
    ap.add_argument("--offload-s", type=float, default=1 / 3.15,
                    help="seconds per frame of the off-CPU stand-in (default: the model's 3.15 fps)")
    args = ap.parse_args()

    result: dict[str, Any] = {
        "clip": {"size": [W, H], "frames": args.frames, "fps": RATE, "codec": "h264+aac"},
        "machine": {"python": platform.python_version(), "pyav": av.__version__, "cpus": _cpus()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.mp4"
        make_clip(src, args.frames)
        frames = decoded_frames(src)

        runs: list[tuple[str, Any, str]] = [
            ("offloaded", OffloadedStandIn(args.offload_s), f"off-CPU network stand-in, {args.offload_s:.3f} s/frame"),
            ("standin", CubicStandIn(), "cv2 bicubic stand-in"),
        ]
        if not args.standin:
            up, desc = build_upscaler(args.device, args.tile)
            runs.insert(0, ("model", up, desc))
        for key, up, desc in reversed(runs):  # the stand-in first: its video fps is the pipeline's ceiling
            only = upscaler_only_fps(up, frames)
            vid = video_run(up, src, Path(tmp) / f"out_{key}.mp4")
            result[key] = {
                "upscaler": desc,
                "upscaler_only_fps": round(only, 3),
                "video_fps": vid["fps"],
                "ratio": round(vid["fps"] / only, 3) if only > 0 else None,
                "overhead": round(1.0 - vid["fps"] / only, 3) if only > 0 else None,
                "video": vid,
            }
        for key in ("model", "offloaded"):
            if key in result and result["standin"]["video_fps"] > 0:
                model_s = 1 / result[key]["upscaler_only_fps"]
                pipe_s = 1 / result["standin"]["video_fps"]
                result[key]["serial_fps"] = round(1 / (model_s + pipe_s), 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=2))


def _cpus() -> int | None:
    try:
        import os

        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    main()
