"""`--ray ADDRESS` for `upscale`, `batch` and `eval`: the options, and a file run on a Ray cluster with the local
run's progress, summary and exit codes (`file_runs.run_files` is the local twin)."""

from __future__ import annotations

import os
import traceback
from typing import Any

import typer
from rich.console import Console

from tadsr_cli.base.interrupts import sigterm_as_interrupt
from tadsr_cli.commands.file_runs import finish_run, say, setup_logging
from tadsr_cli.pipeline.batch import FileResult, Interrupted, Job
from tadsr_cli.pipeline.progress import Reporter
from tadsr_cli.pipeline.ray_cluster import ClusterInfo, WorkerShape, connected, import_ray, worker_shape
from tadsr_cli.pipeline.session import Session
from tadsr_cli.pipeline.settings import RunSettings


def ray_option() -> Any:
    return typer.Option(None, "--ray", metavar="ADDRESS",
                        help="Run on a Ray cluster: HOST:PORT of its head node, or auto (RAY_ADDRESS or a running "
                             "`ray start` here, else a local cluster for this run). pip install 'tadsr[ray]'.")


def ray_workers_option() -> Any:
    return typer.Option(None, "--ray-workers", min=1,
                        help="Model workers on the Ray cluster. Default: one per GPU, else one per CPU (CPU "
                             "workers share the cluster's CPUs evenly).")


def cluster_line(info: ClusterInfo, shape: WorkerShape) -> str:
    return f"using {info.describe()}; {shape.describe()}"


def run_files_on_ray(jobs: list[Job], session: Session, settings: RunSettings, address: str,
                     workers: int | None, always_table: bool = False) -> None:
    """Process `jobs` on the cluster at `address`; exit 1 when a file failed, 130 when interrupted."""
    from tadsr_cli.pipeline.ray_batch import Callbacks, ClusterRun

    ray = import_ray()  # before connecting: without Ray, one line says how to install it
    console = Console(stderr=True)
    setup_logging(console)
    debug = bool(os.environ.get("TADSR_DEBUG"))
    results: list[FileResult] = []
    interrupted = False
    with connected(address) as info:
        shape = worker_shape(info, settings.model.device, workers)
        say(settings, cluster_line(info, shape))
        reporter = Reporter(settings.progress, console=console)  # type: ignore[arg-type]
        shown: dict[str, Any] = {}  # the file whose frames the progress line follows: the latest started

        def on_start(job: Job, index: int, total: int) -> None:
            reporter.file_start(job, index, total)
            shown.update(job=job, frames=reporter.unit_callback("frame"))

        def on_frames(job: Job, done: int, total: int | None) -> None:
            if shown.get("job") is job:
                shown["frames"](done, total)

        def on_error(job: Job, exc: BaseException) -> None:
            if debug:
                console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)

        def on_cluster(engines: dict[str, dict[str, str]]) -> None:
            reporter.emit(event="cluster", address=info.address, nodes=info.nodes, cpus=info.cpus, gpus=info.gpus,
                          workers=shape.count, engines=engines)

        callbacks = Callbacks(on_start=on_start, on_result=reporter.file_end, on_frames=on_frames,
                              on_error=on_error, on_cluster=on_cluster)
        with reporter:
            reporter.begin(len(jobs))
            if not jobs:
                reporter.note("no image or video files to process")
            try:
                with sigterm_as_interrupt():
                    results = ClusterRun(ray, session, shape, callbacks).run(jobs)
            except Interrupted as stop:
                results, interrupted = stop.results, True
        finish_run(reporter, results, interrupted, always_table)
