"""Runs planned file jobs for `upscale` and `batch`: progress, warnings as log lines, summary and exit code."""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from tadsr_cli.base.interrupts import sigterm_as_interrupt
from tadsr_cli.base.messages import terminal_safe
from tadsr_cli.pipeline.batch import FileResult, Interrupted, Job, run_jobs
from tadsr_cli.pipeline.progress import Reporter
from tadsr_cli.pipeline.session import Session
from tadsr_cli.pipeline.settings import RunSettings


def setup_logging(console: Console) -> None:
    root = logging.getLogger()
    if not root.handlers:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # e.g. the engine's one-time "fp16 produced NaN" warning, as a log line


def run_files(jobs: list[Job], session: Session, settings: RunSettings, always_table: bool = False) -> None:
    """Process `jobs`; exit 1 when a file failed, 130 when interrupted (finished outputs are kept)."""
    console = Console(stderr=True)
    setup_logging(console)
    debug = bool(os.environ.get("TADSR_DEBUG"))

    def on_error(job: Job, exc: BaseException) -> None:
        if debug:
            console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)

    results: list[FileResult] = []
    reporter = Reporter(settings.progress, console=console)  # type: ignore[arg-type]
    interrupted = False
    with reporter:
        reporter.begin(len(jobs))
        if not jobs:
            reporter.note("no image or video files to process")
        try:
            with sigterm_as_interrupt():
                results = run_jobs(
                    jobs,
                    lambda job: session.process(job, reporter.unit_callback),
                    overwrite=settings.output.overwrite,
                    prepare=session.prepare,
                    on_start=reporter.file_start,
                    on_result=reporter.file_end,
                    on_error=on_error,
                )
        except Interrupted as stop:
            results, interrupted = stop.results, True
    finish_run(reporter, results, interrupted, always_table)


def finish_run(reporter: Reporter, results: list[FileResult], interrupted: bool, always_table: bool) -> None:
    """The summary (a table for several files, a failure or an interruption) and the exit code: 130 when
    interrupted, 1 when a file failed. Shared by local and cluster runs."""
    failed = any(r.status == "failed" for r in results)
    reporter.summary(results, interrupted=interrupted,
                     table=always_table or interrupted or len(results) > 1 or failed)
    if interrupted:
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


def nothing_to_process(folder: Path, videos: bool = True) -> NoReturn:
    """An input folder without anything to process is a failed input: one error line naming it, exit 1.

    Called after planning and before any output folder is created, so a mistyped or empty folder leaves nothing
    behind (an empty FOLDER_x4 would read as a finished run)."""
    what = "image or video files" if videos else "image files (--no-videos)"
    Console(stderr=True).print(f"[red]error:[/red] {escape(terminal_safe(f'{folder}: no {what} to process'))}",
                               highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def say(settings: RunSettings, text: str) -> None:
    """A plain status line on stderr, unless the run is quiet or speaks JSON."""
    if settings.progress not in ("json", "quiet"):
        Console(stderr=True).print(text, highlight=False, markup=False)
