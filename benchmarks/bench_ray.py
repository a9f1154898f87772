"""Speed-up of Ray workers on this machine: a folder of images and one long video, 1 worker vs 2 (prints JSON).

Starts a local Ray cluster (2 CPUs unless --cpus), then runs the same jobs locally (in this process, 1 torch
thread) and on the cluster with 1 and with 2 workers of 1 CPU each, through the library calls `tadsr batch/upscale
--ray` use. Inputs are made from held-out photos in ../shared/data (a random photo pattern without them):

* folder: `--images` crops of `--size` px (PNG);
* video: a slow camera pan over a held-out photo (as benchmarks/bench_video_stability.py renders it), downscaled
  x4 to `--video-size` px, `--frames` frames, H.264 + AAC audio.

Per run: `wall_s` (connect excluded, worker start-up included) and `work_s` (from the first worker being ready to
the last output written: what a long run approaches); the 1- and 2-worker runs take turns `--repeats` times and
each keeps its best (a shared machine's load drifts); `speedup` = best 1-worker time / best 2-worker time. The
load average is printed: on a machine where other jobs run, the figures say what was left for these runs. For the
video, `psnr_vs_local` is the mean PSNR (RGB, 8-bit) of the cluster's frames against the local run's (and the
lowest frame's): segments start on other workers, after `warmup_frames` frames of warm-up for the smoothing;
`..._no_smoothing`: the same with `--temporal-smoothing 0` (no state, so no warm-up needed).

    python benchmarks/bench_ray.py [--images 32] [--size 128] [--frames 240] [--video-size 64] [--cpus 2]
        [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_video_stability import DEFAULT_PHOTOS, camera_frames  # noqa: E402

from tadsr_cli.pipeline.batch import Job, run_jobs  # noqa: E402
from tadsr_cli.pipeline.ray_batch import Callbacks, ClusterRun  # noqa: E402
from tadsr_cli.pipeline.ray_cluster import WorkerShape  # noqa: E402
from tadsr_cli.pipeline.ray_video_chunk import warmup_frames  # noqa: E402
from tadsr_cli.pipeline.session import Session  # noqa: E402
from tadsr_cli.pipeline.settings import ModelSettings, OutputSettings, RunSettings  # noqa: E402


def photo() -> np.ndarray:
    for path in DEFAULT_PHOTOS:
        if path.is_file():
            return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(0)  # no ../shared: a smooth random pattern
    return cv2.resize((rng.random((64, 64, 3)) * 255).astype(np.uint8), (1024, 1024), interpolation=cv2.INTER_CUBIC)


def make_folder(folder: Path, count: int, size: int) -> None:
    img = photo()
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for i in range(count):
        y, x = rng.integers(0, img.shape[0] - 4 * size), rng.integers(0, img.shape[1] - 4 * size)
        crop = cv2.resize(img[y:y + 4 * size, x:x + 4 * size], (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"img{i:03d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


def make_video(path: Path, frames: int, size: int) -> None:
    hr = camera_frames(photo(), frames, 4 * size)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=24)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        v.codec_context.options = {"crf": "10", "preset": "fast"}
        a = c.add_stream("aac", rate=48000, layout="mono")
        for i, f in enumerate(hr):
            lq = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(lq), format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        t = np.arange(int(48000 * frames / 24), dtype=np.float32) / 48000
        af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t))[None], format="fltp", layout="mono")
        af.sample_rate, af.pts = 48000, 0
        for p in list(a.encode(af)) + list(a.encode()):
            c.mux(p)


def settings(smoothing: float | None = None) -> RunSettings:
    # torch named: `auto` could pick another engine for another thread count or a contended probe
    s = RunSettings(model=ModelSettings(backend="torch"), output=OutputSettings(overwrite=True))
    if smoothing is not None:
        s.temporal_smoothing = smoothing
    s.progress = "quiet"
    return s.validate()


def local_run(jobs: list[Job], smoothing: float | None = None) -> dict[str, float]:
    session = Session(settings(smoothing))
    for kind in {j.kind for j in jobs}:
        session.prepare(kind)  # model loading stays out of the time, as worker start-up does in work_s
    t0 = time.perf_counter()
    results = run_jobs(jobs, lambda job: session.process(job, lambda unit: None), overwrite=True)
    assert all(r.status == "done" for r in results), [r.message for r in results]
    return {"wall_s": round(time.perf_counter() - t0, 2)}


def cluster_run(ray: Any, jobs: list[Job], workers: int, smoothing: float | None = None) -> dict[str, float]:
    ready: dict[str, float] = {}
    callbacks = Callbacks(on_cluster=lambda engines: ready.setdefault("t", time.perf_counter()))
    t0 = time.perf_counter()
    shape = WorkerShape(count=workers, cpus=1, gpus=0)
    results = ClusterRun(ray, Session(settings(smoothing)), shape, callbacks).run(jobs)
    end = time.perf_counter()
    assert all(r.status == "done" for r in results), [r.message for r in results]
    return {"wall_s": round(end - t0, 2), "work_s": round(end - ready["t"], 2)}


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.float64) for f in c.decode(c.streams.video[0])]


def psnr_vs(a: Path, b: Path) -> dict[str, float]:
    values = []
    for x, y in zip(frames_of(a), frames_of(b), strict=True):
        mse = float(np.mean((x - y) ** 2))
        values.append(100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
    return {"mean": round(float(np.mean(values)), 2), "lowest_frame": round(float(np.min(values)), 2)}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: min(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--video-size", type=int, default=64)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    import ray
    import torch

    torch.set_num_threads(1)  # the local run: one CPU, like one worker
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        print(json.dumps(measure(args, ray, torch, tmp), indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, ray: Any, torch: Any, tmp: Path) -> dict[str, Any]:
    make_folder(tmp / "imgs", args.images, args.size)
    make_video(tmp / "clip.mp4", args.frames, args.video_size)
    folder_jobs = {w: [Job(src, tmp / f"out{w}" / src.name, "image") for src in sorted((tmp / "imgs").iterdir())]
                   for w in ("local", 1, 2)}
    video_jobs = {w: [Job(tmp / "clip.mp4", tmp / f"clip_{w}.mp4", "video")] for w in ("local", 1, 2, "s0", "s0l")}
    out: dict[str, Any] = {"machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(),
                                       "ray": ray.__version__, "torch": torch.__version__,
                                       "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
                           "settings": vars(args) | {"warmup_frames": warmup_frames(settings().temporal_smoothing)}}
    out["folder_local"] = local_run(folder_jobs["local"])
    out["video_local"] = local_run(video_jobs["local"])
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    try:
        for kind, jobs in (("folder", folder_jobs), ("video", video_jobs)):
            tries: dict[int, list[dict[str, float]]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for w in (1, 2):
                    tries[w].append(cluster_run(ray, jobs[w], w))
            runs = {w: best(r) for w, r in tries.items()}
            out[kind] = {f"{w}_worker{'s' if w > 1 else ''}": r for w, r in runs.items()}
            out[kind]["speedup_work"] = round(runs[1]["work_s"] / runs[2]["work_s"], 2)
            out[kind]["speedup_wall"] = round(runs[1]["wall_s"] / runs[2]["wall_s"], 2)
        local_run(video_jobs["s0l"], smoothing=0.0)  # without temporal smoothing there is no state to warm up
        cluster_run(ray, video_jobs["s0"], 2, smoothing=0.0)
    finally:
        ray.shutdown()
    out["video"]["psnr_vs_local_1_worker"] = psnr_vs(tmp / "clip_local.mp4", tmp / "clip_1.mp4")
    out["video"]["psnr_vs_local_2_workers"] = psnr_vs(tmp / "clip_local.mp4", tmp / "clip_2.mp4")
    out["video"]["psnr_vs_local_2_workers_no_smoothing"] = psnr_vs(tmp / "clip_s0l.mp4", tmp / "clip_s0.mp4")
    out["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


if __name__ == "__main__":
    main()
