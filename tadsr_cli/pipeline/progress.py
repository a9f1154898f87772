"""Progress for file runs: rich bars on stderr, or one JSON object per line on stdout (`--json-progress`).

Events (JSON mode), all with an `"event"` key:
  {"event": "start", "files": N}
  {"event": "file_start", "index": i, "total": N, "input": ..., "output": ..., "kind": "image"|"video"}
  {"event": "progress", "input": ..., "unit": "tile"|"frame", "done": d, "total": t|null, "rate": r, "eta_s": s|null}
  {"event": "file_end", "index": i, "total": N, "input": ..., "output": ..., "status": "done"|"skipped"|"failed",
   "message": ..., "seconds": s}
  {"event": "summary", "done": a, "skipped": b, "failed": c, "seconds": s, "interrupted": bool}
`progress` events are throttled (at most ~5 per second per file, plus the last one).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from tadsr_cli.messages import terminal_safe
from tadsr_cli.pipeline.batch import FileResult, Job

Mode = Literal["rich", "json", "quiet"]


class _RateColumn(ProgressColumn):
    """Units per second (fps for frames), from rich's own speed estimate."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "")
        if not speed or not unit:
            return Text("", style="progress.data.speed")
        label = "fps" if unit == "frame" else f"{unit}/s"
        return Text(f"{speed:.2f} {label}", style="progress.data.speed")


def _rel(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Reporter:
    """Reports a run of files. Use as a context manager; `unit_callback(unit)` gives the per-file callback."""

    def __init__(self, mode: Mode = "rich", console: Console | None = None, stdout: IO[str] | None = None,
                 show_overall: bool = True) -> None:
        self.mode = mode
        self.console = console or Console(stderr=True)
        self.stdout = stdout or sys.stdout
        self.show_overall = show_overall
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._file_task: TaskID | None = None
        self._current: Job | None = None
        self._file_t0 = 0.0
        self._last_emit = 0.0
        self._t0 = time.perf_counter()

    # ---- lifecycle ----
    def __enter__(self) -> Reporter:
        if self.mode == "rich":
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def emit(self, **event: Any) -> None:
        if self.mode == "json":
            self.stdout.write(json.dumps(event, default=str) + "\n")
            self.stdout.flush()

    def begin(self, total_files: int) -> None:
        self._t0 = time.perf_counter()
        self.emit(event="start", files=total_files)
        if self._progress is not None and self.show_overall and total_files > 1:
            self._overall = self._progress.add_task("files", total=total_files, unit="file")

    # ---- per file ----
    def file_start(self, job: Job, index: int, total: int) -> None:
        self._current = job
        self._file_t0 = time.perf_counter()
        self._last_emit = 0.0
        self.emit(event="file_start", index=index, total=total, input=str(job.src), output=str(job.dst),
                  kind=job.kind)
        if self._progress is not None:
            if self._file_task is not None:
                self._progress.remove_task(self._file_task)
            name = job.src.name if len(job.src.name) <= 40 else job.src.name[:37] + "..."
            self._file_task = self._progress.add_task(escape(terminal_safe(name)), total=None,
                                                      unit="frame" if job.kind == "video" else "tile")

    def unit_callback(self, unit: str) -> Any:
        """`callback(done, total)` for the current file (tiles of an image, frames of a video)."""

        def callback(done: int, total: int | None) -> None:
            if self._progress is not None and self._file_task is not None:
                self._progress.update(self._file_task, completed=done, total=total, unit=unit)
            if self.mode == "json":
                now = time.perf_counter()
                last = total is not None and done >= total
                if not last and now - self._last_emit < 0.2:
                    return
                self._last_emit = now
                elapsed = now - self._file_t0
                rate = done / elapsed if elapsed > 0 and done else 0.0
                eta = (total - done) / rate if rate and total is not None else None
                self.emit(event="progress", input=str(self._current.src) if self._current else None, unit=unit,
                          done=done, total=total, rate=round(rate, 3), eta_s=None if eta is None else round(eta, 2))

        return callback

    def file_end(self, res: FileResult, index: int, total: int) -> None:
        self.emit(event="file_end", index=index, total=total, input=str(res.src),
                  output=None if res.dst is None else str(res.dst), status=res.status, message=res.message,
                  seconds=round(res.seconds, 3), **({"kind": res.kind} if res.kind else {}))
        if self._progress is not None:
            if self._file_task is not None:
                self._progress.remove_task(self._file_task)
                self._file_task = None
            if self._overall is not None:
                self._progress.advance(self._overall)
        if res.status == "failed":
            self.error(res.message if str(res.src) in res.message else f"{_rel(res.src)}: {res.message}")
        elif res.status == "skipped":
            self.note(f"skipped {_rel(res.src)} -> {_rel(res.dst)}: {res.message}")
        else:
            extra = ""
            if res.detail.get("fps"):
                extra = f", {res.detail['fps']:.2f} fps"
            self.note(f"[green]done[/green] {escape(_rel(res.src))} -> {escape(_rel(res.dst))} "
                      f"({res.seconds:.1f} s{extra})", markup=True)

    # ---- messages ----
    def note(self, text: str, markup: bool = False) -> None:
        if self.mode == "rich":
            text = terminal_safe(text)
            self.console.print(text if markup else escape(text), highlight=False, soft_wrap=True)

    def error(self, text: str) -> None:
        """Errors are always shown (stderr), even with --quiet / --json-progress."""
        self.console.print(f"[red]error:[/red] {escape(terminal_safe(text))}", highlight=False, soft_wrap=True)

    def summary(self, results: list[FileResult], interrupted: bool = False, table: bool = True) -> None:
        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        seconds = time.perf_counter() - self._t0
        self.emit(event="summary", **counts, seconds=round(seconds, 3), interrupted=interrupted)
        if self.mode != "rich" or not table:
            return
        t = Table(title="tadsr summary", show_edge=False)
        t.add_column("status")
        t.add_column("files", justify="right")
        t.add_column("time", justify="right")
        for status, style in (("done", "green"), ("skipped", "yellow"), ("failed", "red")):
            secs = sum(r.seconds for r in results if r.status == status)
            t.add_row(f"[{style}]{status}[/{style}]", str(counts[status]), f"{secs:.1f} s" if secs else "")
        t.add_row("total", str(len(results)), f"{seconds:.1f} s")
        self.console.print(t)
        if interrupted:
            self.console.print("[yellow]interrupted[/yellow]: finished files are kept; re-run to continue "
                               "(existing outputs are skipped)")
