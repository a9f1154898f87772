"""`tadsr eval --lq clip.mp4 [--gt clip_hr.mp4]`: temporal stability of models beside bicubic, as a table + report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tadsr_cli.base.errors import ConfigError, InputError
from tadsr_cli.eval.temporal import (
    REFERENCE,
    FrameMethod,
    ModelSettings,
    evaluate_video,
    model_method,
    write_temporal_report,
)


def eval_video(lq: Path, gt: Path | None, models: list[str], steps: list[int], output: Path,
               settings: ModelSettings, max_frames: int | None, scale: int, use_stlpips: bool = True) -> None:
    """Measure each model (default: the embedded one) on every frame of `lq`; write temporal.json / temporal.md."""
    if gt is not None and not gt.is_file():
        raise InputError(f"--gt {gt}: with a video --lq, --gt must be the matching HR video file")
    if len(steps) > 1:
        raise ConfigError("--steps: give at most one value for a video")
    settings.steps = steps[0] if steps else None
    methods: dict[str, FrameMethod] = dict(model_method(m, settings) for m in (models or [None]))  # type: ignore[list-item]
    stlpips = None
    err = Console(stderr=True)
    if gt is not None and use_stlpips:
        from tadsr_cli.eval.stlpips import MetricUnavailable, STLPIPSMetric

        try:
            stlpips = STLPIPSMetric(device="cpu")
        except MetricUnavailable as exc:
            err.print(f"[yellow]ST-LPIPS unavailable:[/yellow] {escape(str(exc))}", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("frames", total=None)
        report = evaluate_video(lq, gt, methods, scale=scale, max_frames=max_frames, stlpips=stlpips,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    paths = write_temporal_report(report, output)
    table = Table(title=f"tadsr eval: {report.frames} frame(s), flow from {report.flow_source}")
    for col, justify in (("method", "left"), ("PSNR-Y ↑", "right"), ("ST-LPIPS ↓", "right"),
                         ("warping error ↓", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, row in report.summary().items():
        cells = ["—" if row[k] is None else f"{row[k]:.{d}f}" for k, d in
                 (("psnr_y", 2), ("st_lpips", 4), ("warp_error", 3))]
        table.add_row(f"{name} ({report.flow_source} frames)" if name == REFERENCE else name, *cells)
    Console().print(table)
    for note in report.notes:
        err.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    Console().print(f"report: {paths['json']}, {paths['markdown']}", highlight=False)
