"""Progress for file runs: rich bars on a terminal, plain lines on stderr otherwise, or JSON lines on stdout.

Modes: `rich` (bars on stderr), `lines` (stderr is not a terminal: CI, pipes, nohup, notebooks; a progress line
every `LINE_INTERVAL_S` seconds per long file, and `[i/N]` with the run's ETA on each finished file), `json`
(`--json`), `quiet`; `auto` = `rich` on a terminal, else `lines`.

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
from rich.table import Column, Table
from rich.text import Text

from tadsr_cli.base.messages import terminal_safe
from tadsr_cli.pipeline.batch import FileResult, Job

Mode = Literal["auto", "rich", "lines", "json", "quiet"]
LINE_INTERVAL_S = 5.0  # plain-line mode: at most one progress line per file this often


def resolve_mode(mode: Mode, console: Console) -> Mode:
    """`auto` -> `rich` when the console is a terminal, else `lines`."""
    if mode != "auto":
        return mode
    return "rich" if console.is_terminal else "lines"


def format_duration(seconds: float) -> str:
    """`42 s`, `5m07s`, `2h03m`: short and fixed in form, for progress lines."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def rate_label(unit: str) -> str:
    return "fps" if unit == "frame" else f"{unit}s/s"


def _fixed(template: str, width: int) -> TextColumn:
    """A text column of exactly `width` cells (cut with an ellipsis), so the line's length is known in advance."""
    return TextColumn(template, table_column=Column(width=width, no_wrap=True, overflow="ellipsis"))


def training_columns(width: int, description: str, loss_names: list[str], total: int) -> list[ProgressColumn]:
    """Columns of `distill`'s bar that fit a `width`-cell terminal on one line.

    Always: description (<= 24 cells), iterations done/total, it/s and the ETA; then each loss while it fits
    (leaving 16 cells for a bar on wide terminals), the elapsed time, and a bar in what is left (<= 24 cells,
    dropped below 8).
    """
    desc_w = min(24, max(8, len(description)))
    count_w = 2 * len(str(total)) + 1
    time_w = 7  # 0:12:34
    head = [(_fixed("[bold]{task.description}", desc_w), desc_w), (MofNCompleteColumn(), count_w),
            (_fixed("{task.fields[rate]}", 10), 10)]
    used = sum(w for _, w in head) + len(head) + time_w  # one space between columns
    losses: list[ProgressColumn] = []
    bar_reserve = 17 if width >= 100 else 0
    for name in loss_names:
        w = len(name) + 10  # "name 1.234e-05"
        if used + w + 1 > width - 1 - bar_reserve:
            break
        losses.append(_fixed(f"{name} {{task.fields[{name}]}}", w))
        used += w + 1
    elapsed: list[ProgressColumn] = []
    if used + time_w + 1 <= width - 1 - bar_reserve:
        elapsed.append(TimeElapsedColumn())
        used += time_w + 1
    bar_w = min(24, width - 1 - used - 1)
    bar: list[ProgressColumn] = [BarColumn(bar_width=bar_w)] if bar_w >= 8 else []
    return [head[0][0], *bar, head[1][0], head[2][0], *losses, *elapsed, TimeRemainingColumn()]


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
        self.console = console or Console(stderr=True)
        self.mode = resolve_mode(mode, self.console)
        self.stdout = stdout or sys.stdout
        self.show_overall = show_overall
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._file_task: TaskID | None = None
        self._current: Job | None = None
        self._file_t0 = 0.0
        self._last_emit = 0.0
        self._last_line = 0.0
        self._index = 0
        self._total = 0
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
        self._last_line = self._file_t0
        self._index, self._total = index, total
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
            now = time.perf_counter()
            last = total is not None and done >= total
            if self.mode == "json" and (last or now - self._last_emit >= 0.2):
                self._last_emit = now
                rate, eta = self._speed(done, total, now)
                self.emit(event="progress", input=str(self._current.src) if self._current else None, unit=unit,
                          done=done, total=total, rate=round(rate, 3), eta_s=None if eta is None else round(eta, 2))
            elif self.mode == "lines" and done and not last and now - self._last_line >= LINE_INTERVAL_S:
                self._last_line = now
                self.console.print(self.progress_line(unit, done, total, now), markup=False, highlight=False,
                                   soft_wrap=True)

        return callback

    def _speed(self, done: int, total: int | None, now: float) -> tuple[float, float | None]:
        elapsed = now - self._file_t0
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = (total - done) / rate if rate and total is not None else None
        return rate, eta

    def progress_line(self, unit: str, done: int, total: int | None, now: float) -> str:
        """`[2/5] clip.mp4: frame 120/900 (13%), 2.31 fps, ETA 5m37s` (plain-line mode)."""
        rate, eta = self._speed(done, total, now)
        name = terminal_safe(self._current.src.name) if self._current else ""
        count = f"{done}/{total} ({100 * done // total}%)" if total else str(done)
        parts = [f"[{self._index + 1}/{self._total}] {name}: {unit} {count}", f"{rate:.2f} {rate_label(unit)}"]
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return ", ".join(parts)

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
            if res.detail.get("resumed_frames"):  # a video continued from an interrupted run's segments
                extra += f", resumed after frame {res.detail['resumed_frames']}"
            where = f"[{index + 1}/{total}] " if self.mode == "lines" and total > 1 else ""
            if where and index + 1 < total:
                per_file = (time.perf_counter() - self._t0) / (index + 1)
                extra += f"; run ETA {format_duration(per_file * (total - index - 1))}"
            self.note(f"[green]done[/green] {escape(where)}{escape(_rel(res.src))} -> {escape(_rel(res.dst))} "
                      f"({res.seconds:.1f} s{extra})", markup=True)

    # ---- messages ----
    def note(self, text: str, markup: bool = False) -> None:
        if self.mode in ("rich", "lines"):
            text = terminal_safe(text)
            self.console.print(text if markup else escape(text), highlight=False, soft_wrap=True)

    def error(self, text: str) -> None:
        """Errors are always shown (stderr), even with --quiet / --json-progress."""
        self.console.print(f"[red]error:[/red] {escape(terminal_safe(text))}", highlight=False, soft_wrap=True)

    def summary(self, results: list[FileResult], interrupted: bool = False, table: bool = True) -> None:
        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        seconds = time.perf_counter() - self._t0
        self.emit(event="summary", **counts, seconds=round(seconds, 3), interrupted=interrupted)
        if self.mode not in ("rich", "lines") or not table:
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


class TaskProgress:
    """Progress of named, counted tasks (e.g. `eval`'s methods over images): rich bars on a terminal, plain lines
    on stderr otherwise (a task's first and last count, and at most one line per `LINE_INTERVAL_S` between)."""

    def __init__(self, console: Console, unit: str = "image", mode: Mode = "auto") -> None:
        self.console = console
        self.unit = unit
        self.mode = resolve_mode(mode, console)
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._last_line = 0.0

    def __enter__(self) -> TaskProgress:
        if self.mode == "rich":
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(self, name: str, done: int, total: int) -> None:
        now = time.perf_counter()
        first = name not in self._started
        if first:
            self._started[name] = now
        if self._bar is not None:
            if name not in self._tasks:
                self._tasks[name] = self._bar.add_task(escape(terminal_safe(name)), total=total)
            self._bar.update(self._tasks[name], completed=done)
            return
        if self.mode != "lines" or not (first or done >= total or now - self._last_line >= LINE_INTERVAL_S):
            return
        self._last_line = now
        elapsed = now - self._started[name]
        line = f"{terminal_safe(name)}: {done}/{total} {self.unit}s"
        if done and elapsed > 0:
            line += f", {done / elapsed:.2f} {self.unit}s/s"
            if done < total:
                line += f", ETA {format_duration((total - done) * elapsed / done)}"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
