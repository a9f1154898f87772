"""`upscale` / `batch` on a Ray cluster: every job's work spread over the model workers, results written here.

* Images: one task per file. Videos: one task per range of frames (`ray_video`), so a single long video keeps every
  worker busy too. Tasks are handed out as workers free up (`ray_pool`), in the order of the jobs.
* Inputs travel as bytes through Ray's object store and outputs come back the same way; the driver writes every
  output (atomically) as it arrives, so skipping existing outputs, a re-run after an interruption (or a dead
  driver) and the summary behave as in a local run (`batch.run_jobs`'s checks decide what runs).
* Progress counts finished files across the cluster, and a video's frames as its segments arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import InputError, OutputError, TadsrError
from tadsr_cli.models.catalog import DEFAULT_ALIAS, REGISTRY, model_name
from tadsr_cli.models.checkpoints import read_model_config
from tadsr_cli.pipeline.batch import FileResult, Interrupted, Job, error_line, precheck
from tadsr_cli.pipeline.ray_cluster import WorkerShape
from tadsr_cli.pipeline.ray_files import ShippedFile, put_file
from tadsr_cli.pipeline.ray_pool import Unit, WorkerPool
from tadsr_cli.pipeline.ray_video import ClusterVideo
from tadsr_cli.pipeline.ray_video_chunk import ChunkResult, warmup_frames
from tadsr_cli.pipeline.session import Session
from tadsr_cli.pipeline.settings import RunSettings
from tadsr_cli.pipeline.video import VideoOptions


@dataclass
class Callbacks:
    """How a run reports (the command wires these to its `Reporter`)."""

    on_start: Callable[[Job, int, int], None] | None = None  # a file's first task was handed out
    on_result: Callable[[FileResult, int, int], None] | None = None  # (result, files finished - 1, files)
    on_frames: Callable[[Job, int, int | None], None] | None = None  # a video's frames done so far
    on_error: Callable[[Job, BaseException], None] | None = None
    on_cluster: Callable[[dict[str, dict[str, str]]], None] | None = None  # the engines the workers built


def model_to_ship(session: Session) -> Path | None:
    """The model file the workers need from here: None when every kind runs an embedded model (each worker has
    those in its own installation), else the one `--model` file (a released model pulled here, or a path)."""
    chosen = session.settings.model.model
    if chosen is None or model_name(chosen) == DEFAULT_ALIAS:
        return None
    entry = REGISTRY.get(model_name(chosen))
    if entry is not None and entry.embedded_file:
        return None
    return session.model_paths["image"]


def worker_settings(session: Session, shipped: bool) -> RunSettings:
    """The settings workers run: a shipped model is named by the worker's local copy, so its steps are fixed here
    (as the name would have set them)."""
    s = session.settings
    if not shipped:
        return s
    return replace(s, model=replace(s.model, steps=session.steps["image"]))


@dataclass
class _Video:
    job: Job
    plan: ClusterVideo
    tasks: int
    shipped: ShippedFile | None = None
    failed: bool = False


@dataclass
class ClusterRun:
    ray: Any
    session: Session
    shape: WorkerShape
    callbacks: Callbacks = field(default_factory=Callbacks)
    results: list[FileResult] = field(default_factory=list)
    _total: int = 0
    _jobs: dict[int, Job] = field(default_factory=dict)
    _started: dict[int, float] = field(default_factory=dict)
    _videos: dict[int, _Video] = field(default_factory=dict)

    def run(self, jobs: list[Job]) -> list[FileResult]:
        """Run the jobs on the cluster; raises `Interrupted` (with the results so far) on Ctrl-C/SIGTERM."""
        settings = self.session.settings
        self._total = len(jobs)
        todo: list[tuple[int, Job]] = []
        claimed: dict[Path, Path] = {}
        for i, job in enumerate(jobs):
            try:
                res = precheck(job, claimed, settings.output.overwrite)
            except TadsrError as exc:
                res = FileResult(job.src, job.dst, "failed", error_line(exc), kind=job.kind)
            if res is None:
                todo.append((i, job))
            else:
                self._finish(res)
        if not todo:
            return self.results
        self._jobs = dict(todo)
        model = model_to_ship(self.session)
        shipped_model = None if model is None else put_file(self.ray, model, f"model:{model.resolve()}")
        kinds = sorted({job.kind for _, job in todo})
        pool = WorkerPool(self.ray, self.shape, worker_settings(self.session, model is not None), kinds,
                          shipped_model)
        done = False
        try:
            engines = pool.start()
            if self.callbacks.on_cluster:
                self.callbacks.on_cluster(engines)
            for unit, value, exc in pool.map_unordered(self._units(todo)):
                self._handle(unit, value, exc)
            done = True
        except KeyboardInterrupt:
            raise Interrupted(self.results) from None
        finally:
            pool.close(graceful=done)
            for video in self._videos.values():
                video.plan.abandon()
        return self.results

    # ---- handing out work ----------------------------------------------------------------------------------------
    def _units(self, todo: list[tuple[int, Job]]) -> Iterator[Unit]:
        for i, job in todo:
            self._started[i] = time.perf_counter()
            if self.callbacks.on_start:
                self.callbacks.on_start(job, i, self._total)
            if job.kind == "image":
                try:
                    data = job.src.read_bytes()
                except OSError as exc:
                    self._fail(i, job, InputError(f"{job.src}: cannot read ({exc.strerror or exc})"))
                    continue
                yield Unit((i, None), "image", (data, job.src.name, job.dst.suffix))
            else:
                yield from self._video_units(i, job)

    def _video_units(self, i: int, job: Job) -> Iterator[Unit]:
        s = self.session.settings
        options = VideoOptions(**s.video, outscale=s.image.outscale, resume=True, restart=s.output.overwrite,
                               resume_key=self.session.resume_key())
        scale = read_model_config(self.session.model_paths["video"]).scale
        plan = ClusterVideo(job.src, job.dst, options, scale, warmup_frames(s.temporal_smoothing))
        try:
            plan.prepare()
            tasks = [] if plan.complete else plan.tasks(self.shape.count)
        except TadsrError as exc:
            self._fail(i, job, exc)
            plan.abandon()
            return
        video = _Video(job, plan, len(tasks))
        self._videos[i] = video
        self._frames(i)
        if not tasks:  # every segment was done by an earlier run: only the join is left
            self._video_done(i)
            return
        video.shipped = put_file(self.ray, job.src, f"video:{i}:{job.src.resolve()}")
        for n, task in enumerate(tasks):
            if video.failed:
                return
            yield Unit((i, n), "chunk", (video.shipped, task))

    # ---- results -------------------------------------------------------------------------------------------------
    def _handle(self, unit: Unit, value: Any, exc: BaseException | None) -> None:
        i, part = unit.key
        job = self._jobs[i]
        if part is None:  # an image
            if exc is not None:
                self._fail(i, job, exc)
                return
            data, detail = value
            try:
                with atomic_write_path(job.dst) as tmp:
                    tmp.write_bytes(data)
            except (OSError, TadsrError) as err:
                self._fail(i, job, err if isinstance(err, TadsrError) else
                           OutputError(f"{job.dst}: cannot write ({err.strerror or err})"))
                return
            self._finish(FileResult(job.src, job.dst, "done", seconds=self._seconds(i), kind="image",
                                    detail=detail))
            return
        video = self._videos[i]
        if exc is not None:
            if not video.failed:
                video.failed = True
                self._fail(i, job, exc)
            return
        assert isinstance(value, ChunkResult)
        try:
            video.plan.add(value)  # kept for a resume even when another range of the video failed
        except TadsrError as err:
            if not video.failed:
                video.failed = True
                self._fail(i, job, err)
            return
        video.tasks -= 1
        if video.failed:
            return
        self._frames(i)
        if video.tasks == 0:
            self._video_done(i)

    def _video_done(self, i: int) -> None:
        video = self._videos[i]
        try:
            detail = video.plan.finish()
        except TadsrError as exc:
            video.failed = True
            self._fail(i, video.job, exc)
            return
        self._finish(FileResult(video.job.src, video.job.dst, "done", seconds=self._seconds(i), kind="video",
                                detail=detail))
        del self._videos[i]

    def _frames(self, i: int) -> None:
        video = self._videos[i]
        if self.callbacks.on_frames:
            self.callbacks.on_frames(video.job, video.plan.frames_done, video.plan.frames_total)

    def _seconds(self, i: int) -> float:
        return time.perf_counter() - self._started.get(i, time.perf_counter())

    def _fail(self, i: int, job: Job, exc: BaseException) -> None:
        if self.callbacks.on_error:
            self.callbacks.on_error(job, exc)
        self._finish(FileResult(job.src, job.dst, "failed", error_line(exc), seconds=self._seconds(i),
                                kind=job.kind))

    def _finish(self, res: FileResult) -> None:
        self.results.append(res)
        if self.callbacks.on_result:
            self.callbacks.on_result(res, len(self.results) - 1, self._total)
