"""`tadsr eval --lq clip.mp4 [--gt clip_hr.mp4]`: what `tadsr upscale clip.mp4` makes, measured frame by frame
(PSNR-Y, ST-LPIPS, flicker) beside bicubic; a table + temporal.json / temporal.md."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tadsr_cli.base.errors import ConfigError, InputError, OutputError
from tadsr_cli.commands.file_runs import setup_logging
from tadsr_cli.commands.upscale import plan_inputs
from tadsr_cli.eval.display import DisplaySet, FramePicker
from tadsr_cli.eval.report_html import write_video_html
from tadsr_cli.eval.runner import parse_baselines, slug
from tadsr_cli.eval.temporal import (
    REFERENCE,
    TemporalReport,
    VideoRun,
    evaluate_video,
    run_label,
    write_temporal_report,
)
from tadsr_cli.models.checkpoints import read_model_config
from tadsr_cli.pipeline.progress import TaskProgress
from tadsr_cli.pipeline.session import Session, looks_like_video
from tadsr_cli.pipeline.settings import RunSettings


def refuse_image_options(**given: bool) -> None:
    """One line naming the image-only options given with a video --lq (never silently ignored)."""
    names = [f"--{name.replace('_', '-')}" for name, on in given.items() if on]
    if names:
        raise ConfigError(f"{', '.join(names)}: not for a video --lq (images only: ready outputs, NIQE, figure.png);"
                          f" drop {'it' if len(names) == 1 else 'them'}")


def plan_runs(models: list[str], steps: list[int], settings: RunSettings, scale: int) -> dict[str, Session]:
    """A session per model and step count, by label, checked now (model files, --steps, --scale), before any work."""
    planned: dict[str, Session] = {}
    for model in models:
        for n in steps or [None]:
            session = Session(replace(settings, model=replace(settings.model, model=model, steps=n)))  # headers only
            model_scale = read_model_config(session.model_paths["video"]).scale
            if model_scale != scale:
                raise ConfigError(f"model {session.settings.model.model_for('video')} is x{model_scale} but --scale "
                                  f"is {scale}")
            planned.setdefault(run_label(session), session)
    return planned


def output_path(lq: Path, label: str, session: Session, folder: Path) -> Path:
    """Where `tadsr upscale LQ -o FOLDER/LABEL/` writes the video (same name and container)."""
    return plan_inputs([lq], f"{folder / slug(label)}/", session.settings, session.scale, session.config.scale)[0].dst


def eval_video(lq: Path, gt: Path | None, models: list[str], steps: list[int], output: Path, settings: RunSettings,
               baseline: list[str], max_frames: int | None, scale: int, save_sr: bool,
               use_stlpips: bool = True) -> None:
    """Measure each model (default: the embedded video one) as `tadsr upscale` runs it on `lq`; write the report.

    With `save_sr` each model's video stays under REPORT/sr/LABEL/, named as `tadsr upscale` names it; without, it
    is written to a hidden folder in REPORT and deleted (the measured frames are the encoder's input either way).
    """
    if not looks_like_video(lq):
        raise InputError(f"--lq {lq}: neither a folder of images nor a video")
    if gt is not None and not gt.is_file():
        raise InputError(f"--gt {gt}: with a video --lq, --gt must be the matching HR video file")
    if max_frames is not None and max_frames < 1:
        raise ConfigError("--limit must be >= 1")
    baselines = parse_baselines(baseline)
    planned = plan_runs(models, steps, settings, scale)
    if save_sr and not planned:
        raise ConfigError("--save-sr: a video saves each model's upscaled video, and --no-model runs none")
    stlpips = None
    err = Console(stderr=True)
    setup_logging(err)  # the video pipeline's warnings (streams not copied, damaged input) as upscale shows them
    if gt is not None and use_stlpips:
        from tadsr_cli.eval.stlpips import MetricUnavailable, STLPIPSMetric

        try:
            stlpips = STLPIPSMetric(device="cpu")
        except MetricUnavailable as exc:
            err.print(f"[yellow]ST-LPIPS unavailable:[/yellow] {escape(str(exc))}", highlight=False)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output}: cannot create the report folder ({exc.strerror or exc})") from exc
    with tempfile.TemporaryDirectory(prefix=".sr-", dir=output) as tmp, \
            TaskProgress(err, unit="frame") as bar:
        folder = output / "sr" if save_sr else Path(tmp)
        runs = [VideoRun(label, session.settings, output_path(lq, label, session, folder))
                for label, session in planned.items()]
        frames = FrameSamples(lq, max_frames, scale)
        report = evaluate_video(lq, gt, runs, baselines, scale=scale, max_frames=max_frames, stlpips=stlpips,
                                progress=lambda name, done, total: bar.update(name, done, total or done),
                                on_frame=frames.keep)
    if save_sr:
        for run in runs:
            report.runs[run.label]["video"] = str(run.dst)
    paths = write_temporal_report(report, output)
    paths["html"] = write_video_html(report.to_json(), output, frames.display_sets(gt))
    show(report, err)
    Console().print(f"report: {paths['json']}, {paths['markdown']}, {paths['html']}", highlight=False)


class FrameSamples:
    """A few frames of every method, each with the frame after it, for report.html: kept as the passes measure
    them (`keep` is evaluate_video's frame sink), then cropped beside the LQ and GT frames of the same index."""

    def __init__(self, lq: Path, max_frames: int | None, scale: int) -> None:
        from tadsr_cli.pipeline.video_probe import open_video, prescan

        container, stream = open_video(lq)
        try:
            total = prescan(lq, stream.index, stream).packets
        finally:
            container.close()
        total = min(total, max_frames) if max_frames else total
        self.lq, self.max_frames, self.scale = lq, max_frames, scale
        self.picker = FramePicker(total, scale=scale)
        self.wanted = {i + d for i in self.picker.picks for d in (0, 1)}
        self.outputs: dict[int, dict[str, np.ndarray]] = {}

    def keep(self, method: str, index: int, rgb: np.ndarray) -> None:
        if index in self.wanted:
            self.outputs.setdefault(index, {})[method] = rgb

    def display_sets(self, gt: Path | None) -> list[DisplaySet]:
        from tadsr_cli.pipeline.video_demux import read_frames

        last = max(self.outputs, default=-1)
        gts = read_frames(gt, self.max_frames) if gt is not None else None
        for index, lq_frame in enumerate(read_frames(self.lq, self.max_frames)):
            gt_frame = next(gts, None) if gts is not None else None
            if index > last:
                break
            if index in self.outputs:
                self.picker.offer(index, lq_frame, self.outputs[index], gt_frame)
        return self.picker.sets


def show(report: TemporalReport, err: Console) -> None:
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
