"""The model worker of a Ray run: one per Ray actor, so the model is loaded once per worker process, not per task.

Inputs arrive as bytes (or `ShippedFile`s for videos) and outputs leave as bytes: the worker reads and writes only
a private temp folder of its own machine, never the driver's paths. Each task runs the local code path
(`image_io.upscale_image`, the session's video upscaler), so a worker writes what `tadsr upscale` would write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tadsr_cli.pipeline.batch import Job
from tadsr_cli.pipeline.ray_files import ShippedFile, fetch_file
from tadsr_cli.pipeline.ray_video_chunk import ChunkResult, ChunkTask, run_chunk
from tadsr_cli.pipeline.session import Session
from tadsr_cli.pipeline.settings import RunSettings

_PREFIX = "tadsr-ray-"


def _clear_stale(root: Path) -> None:
    """Remove the temp folders of workers that died (killed workers cannot clean up after themselves)."""
    for folder in root.glob(f"{_PREFIX}*"):
        pid = folder.name[len(_PREFIX):]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # alive, under another user


def _memory_share(settings: RunSettings, threads: int) -> RunSettings:
    """CPU workers on one machine share its RAM: `--tile auto` plans with this worker's share (its CPUs out of the
    machine's) instead of the half of all free RAM a lone process takes."""
    import torch

    from tadsr_cli.base.devices import resolve_device
    from tadsr_cli.pipeline.memory import budget_bytes

    tiles = settings.tiles
    cpus = os.cpu_count() or threads
    if tiles.memory_budget is not None or str(tiles.tile).lower() != "auto" or threads >= cpus:
        return settings
    if resolve_device(settings.model.device).type != "cpu":
        return settings
    budget = int(budget_bytes(torch.device("cpu")) * threads / cpus)
    return replace(settings, tiles=replace(tiles, memory_budget=budget))


def _ray() -> Any:
    import ray

    return ray


class Worker:
    """`settings`: the run's, with `model`/`steps` replaced by `model_file` (a model the workers cannot resolve
    by name: it travels through the object store). `threads`: torch threads (the CPUs Ray gave this worker)."""

    def __init__(self, settings: RunSettings, threads: int, model_file: ShippedFile | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        root = Path(tempfile.gettempdir())
        _clear_stale(root)
        self.tmp = root / f"{_PREFIX}{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        if model_file is not None:
            local = fetch_file(_ray(), model_file, self.tmp / "models" / model_file.name)
            settings = replace(settings, model=replace(settings.model, model=str(local)))
        self.settings = _memory_share(settings, threads)
        self.session = Session(self.settings)
        self._video: tuple[str, Path] | None = None  # the source video this worker holds a copy of
        self._warm = False

    def ready(self) -> str:
        """Where this worker runs (answers once the model header is read)."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def use_backend(self, backend: str) -> None:
        """Run `backend` instead of `auto` (the cluster's first worker decided it), before any engine is built."""
        self.session.settings.model.backend = backend

    def describe(self, kinds: list[str]) -> dict[str, dict[str, str]]:
        """Build the engines for `kinds` ("image", "video") now; what each resolved to (backend, precision)."""
        out = {}
        for kind in kinds:
            engine = self.session.upscaler_for(kind).engine
            out[kind] = {"backend": str(engine.name), "precision": str(getattr(engine, "precision", "")),
                         "device": str(getattr(engine, "device", ""))}
        return out

    def image(self, data: bytes, name: str, out_suffix: str) -> tuple[bytes, dict[str, Any]]:
        """One image file (its bytes) -> the output file's bytes, as `tadsr upscale` writes it."""
        t0 = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="img-", dir=self.tmp))
        try:
            src = folder / ("in" + Path(name).suffix)
            dst = folder / ("out" + out_suffix)
            src.write_bytes(data)
            detail = self.session.process(Job(src, dst, "image"), lambda unit: None)
            detail.update(worker=self.ready(), worker_s=round(time.perf_counter() - t0, 3))
            return dst.read_bytes(), detail
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def chunk(self, video: ShippedFile, task: ChunkTask) -> ChunkResult:
        """Frames of a long video -> encoded segments (`ray_video_chunk`)."""
        path = self._local_video(video)
        folder = Path(tempfile.mkdtemp(prefix="seg-", dir=self.tmp))
        try:
            return run_chunk(task, path, self.session.video_upscaler(), folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _local_video(self, video: ShippedFile) -> Path:
        """This worker's copy of `video` (fetched once; the previous video's copy is dropped)."""
        if self._video is not None and self._video[0] == video.key:
            return self._video[1]
        if self._video is not None:
            with contextlib.suppress(OSError):
                self._video[1].unlink()
            self._video = None
        path = fetch_file(_ray(), video, self.tmp / ("video" + Path(video.name).suffix))
        self._video = (video.key, path)
        return path

    def array(self, lq: np.ndarray) -> tuple[np.ndarray, float]:
        """An RGB float image -> (its upscaled image, seconds): `eval`'s model runs. The first call warms the
        engine up on a small crop first, so lazy initialisation stays out of the time (as eval does locally)."""
        upscaler = self.session.upscaler_for("image")
        upscaler.noise_scale = self.settings.model.noise_scale_for("image")
        if not self._warm:
            m = max(int(upscaler.engine.lq_multiple), 16)
            upscaler.upscale(np.ascontiguousarray(lq[:m, :m]))
            self._warm = True
        t0 = time.perf_counter()
        out = upscaler.upscale(lq)
        return out, time.perf_counter() - t0

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
