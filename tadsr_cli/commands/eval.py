"""`tadsr eval`: measure models, baselines and ready outputs with the field's conventions; write a report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.commands.options import ENGINE_OPTIONS, engine_settings, with_options
from tadsr_cli.commands.ray_runs import ray_option, ray_workers_option
from tadsr_cli.eval.metric_suite import METRICS
from tadsr_cli.eval.report import write_report
from tadsr_cli.eval.runner import EvalConfig, parse_baselines, parse_sr_option, run_eval
from tadsr_cli.models.catalog import DEFAULT_ALIAS
from tadsr_cli.pipeline.progress import TaskProgress
from tadsr_cli.pipeline.settings import RunSettings


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


@with_options(ENGINE_OPTIONS, engine_settings)
def eval_command(
    lq: Path = typer.Option(..., "--lq", help="Folder of low-resolution input images, or a video (then: what "
                             "`tadsr upscale VIDEO` makes of it, per-frame PSNR-Y/ST-LPIPS and flicker beside "
                             "bicubic; --sr, --no-niqe and --figure-images do not apply and are refused)."),
    gt: Path | None = typer.Option(None, "--gt", help="Folder of ground-truth HR images (paired by file stem); "
                                   "for a video, the HR video."),
    model: list[str] = typer.Option([], "--model", "-m", help="Model name or file; repeat for several. Default: the "
                                    "embedded model (`default`; for a video the video default), unless --no-model."),
    no_model: bool = typer.Option(False, "--no-model", help="Evaluate only --baseline / --sr methods."),
    steps: list[int] = typer.Option(
        [], "--steps", help="Sampling steps (1 = one-step, or the model's T); repeat to compare. Default: the model's."
    ),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="Baselines: bicubic, lanczos, realesrgan (Real-ESRGAN x4plus; comma list). A video "
        "always has bicubic.",
    ),
    sr: list[str] = typer.Option([], "--sr", help="Ready outputs to measure, NAME=DIR (repeatable; images only)."),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (report.json, report.md, figure.png, "
                                "report.html; for a video temporal.json, temporal.md, report.html)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N paired images (by name), or "
                                     "the first N frames of a video."),
    scale: int = typer.Option(4, "--scale", help="SR factor; also the PSNR/SSIM border crop."),
    figure_images: int | None = typer.Option(None, "--figure-images",
                                             help="Images shown as crops in figure.png (default 3; images only)."),
    save_sr: bool = typer.Option(False, "--save-sr", help="Also save each method's outputs under REPORT/sr/ (a "
                                 "video: each model's upscaled video, as `tadsr upscale` writes it)."),
    no_lpips: bool = typer.Option(False, "--no-lpips", help="Skip true LPIPS even if the lpips package is present "
                                  "(a video: skip ST-LPIPS, its only LPIPS)."),
    no_niqe: bool = typer.Option(False, "--no-niqe", help="Skip NIQE (slow on very large images; images only)."),
    ray: str | None = ray_option(),
    ray_workers: int | None = ray_workers_option(),
    settings: RunSettings | None = None,
) -> None:
    """Evaluate models / baselines / ready outputs: PSNR-Y, SSIM-Y, ST-LPIPS, LPIPS, NIQE, time; write a report.

    Models run as in `tadsr upscale` (same engine, tile, precision and colour-fix options); a video runs through
    upscale's own video path (reader, noise scale, temporal smoothing, encoder) and its frames are measured.
    """
    assert settings is not None
    if no_model and model:
        raise ConfigError("--no-model contradicts --model")
    models = [] if no_model else (list(model) or [DEFAULT_ALIAS])
    if lq.is_file() and ray is not None:
        raise ConfigError("--ray: eval of a video runs on this machine (upscale it on the cluster with "
                          "`tadsr upscale VIDEO --ray ADDRESS`, then compare)")
    if lq.is_file():  # a video: what `tadsr upscale` makes of it, frame by frame
        from tadsr_cli.commands.eval_video import eval_video, refuse_image_options

        refuse_image_options(sr=bool(sr), no_niqe=no_niqe, figure_images=figure_images is not None)
        eval_video(lq, gt, models, list(steps), output, settings, baseline, limit, scale, save_sr,
                   use_stlpips=not no_lpips)
        return
    try:
        sr_dirs = [parse_sr_option(s) for s in sr]
        baselines = parse_baselines(baseline)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    cfg = EvalConfig(
        lq_dir=lq, gt_dir=gt, out_dir=output, models=models, steps=list(steps), baselines=baselines,
        sr_dirs=sr_dirs, engine=settings.model, tiles=settings.tiles, color_fix=settings.color_fix,
        limit=limit, scale=scale, figure_images=3 if figure_images is None else figure_images, save_sr=save_sr,
        use_lpips=not no_lpips, use_niqe=not no_niqe, ray=ray, ray_workers=ray_workers,
    )
    err = Console(stderr=True)
    with TaskProgress(err, unit="image") as bar:
        result = run_eval(cfg, progress=bar.update)
    paths = write_report(result)

    out = Console()
    means = result.means()
    shown = [m for m in METRICS if result.metric_status.get(m.key) is None]
    table = Table(title=f"tadsr eval: {len(result.pairing.stems)} image(s)")
    table.add_column("method")
    for m in shown:
        table.add_column(f"{m.label} {'↑' if m.higher_is_better else '↓'}", justify="right")
    table.add_column("s/img", justify="right")
    table.add_column("MP/s", justify="right")
    for method in result.methods:
        row = means[method.name]
        cells = [method.name]
        for m in shown:
            v = row.get(m.key)
            cells.append("—" if v is None else (f"{v:.2f}" if m.key == "psnr_y" else f"{v:.4f}"))
        spi, mps = row["seconds_per_image"], row["megapixels_per_s"]
        cells += ["—" if spi is None else f"{spi:.3g}", "—" if mps is None else f"{mps:.3g}"]
        table.add_row(*cells)
    out.print(table)
    for m in METRICS:
        why = result.metric_status.get(m.key)
        if why:
            err.print(f"[yellow]{m.label} unavailable:[/yellow] {escape(why)}", highlight=False)
    p = result.pairing
    skipped = {
        "LQ without GT": p.lq_without_gt,
        "GT without LQ": p.gt_without_lq,
        **{f"missing from {k}": v for k, v in result.missing_sr.items() if v},
        **{f"in {k} without an LQ image": v for k, v in result.extra_sr.items() if v},
    }
    for label, stems in skipped.items():
        if stems:
            shown_stems = ", ".join(stems[:8]) + (f" (+{len(stems) - 8} more)" if len(stems) > 8 else "")
            err.print(f"[yellow]skipped {len(stems)} {escape(label)}:[/yellow] {escape(shown_stems)}", highlight=False)
    for e in result.errors:
        err.print(f"[red]error:[/red] {escape(e['error'])}", highlight=False)
    out.print(f"report: {paths['json']}, {paths['markdown']}, {paths['figure']}, {paths['html']}", highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
