"""`tadsr eval`: measure models, baselines and ready outputs with the field's conventions; write a report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import ConfigError
from tadsr_cli.commands.options import ENGINE_OPTIONS, engine_settings, with_options
from tadsr_cli.eval.metric_suite import METRICS
from tadsr_cli.eval.report import write_report
from tadsr_cli.eval.runner import EvalConfig, parse_baselines, parse_sr_option, run_eval
from tadsr_cli.models.registry import DEFAULT_ALIAS
from tadsr_cli.pipeline.progress import TaskProgress
from tadsr_cli.pipeline.settings import RunSettings, resolve_precision


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


@with_options(ENGINE_OPTIONS, engine_settings)
def eval_command(
    lq: Path = typer.Option(..., "--lq", help="Folder of low-resolution input images, or a video "
                             "(then: per-frame PSNR/ST-LPIPS and flicker beside bicubic)."),
    gt: Path | None = typer.Option(None, "--gt", help="Folder of ground-truth HR images (paired by file stem)."),
    model: list[str] = typer.Option([], "--model", "-m", help="Model name or file; repeat for several. Default: the "
                                    "embedded model (`default`), unless --no-model."),
    no_model: bool = typer.Option(False, "--no-model", help="Evaluate only --baseline / --sr methods."),
    steps: list[int] = typer.Option(
        [], "--steps", help="Sampling steps (1 = one-step, or the model's T); repeat to compare. Default: the model's."
    ),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="Baselines: bicubic, lanczos, realesrgan (Real-ESRGAN x4plus; comma list).",
    ),
    sr: list[str] = typer.Option([], "--sr", help="Ready outputs to measure, NAME=DIR (repeatable)."),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (report.json, report.md, figure.png)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N paired images (by name)."),
    scale: int = typer.Option(4, "--scale", help="SR factor; also the PSNR/SSIM border crop."),
    figure_images: int = typer.Option(3, "--figure-images", help="Images shown as crops in figure.png."),
    save_sr: bool = typer.Option(False, "--save-sr", help="Also save each method's outputs under REPORT/sr/."),
    no_lpips: bool = typer.Option(False, "--no-lpips", help="Skip true LPIPS even if the lpips package is present."),
    no_niqe: bool = typer.Option(False, "--no-niqe", help="Skip NIQE (slow on very large images)."),
    settings: RunSettings | None = None,
) -> None:
    """Evaluate models / baselines / ready outputs: PSNR-Y, SSIM-Y, ST-LPIPS, LPIPS, NIQE, time; write a report.

    Models run as in `tadsr upscale` (same engine, tile, precision and colour-fix options).
    """
    assert settings is not None
    if no_model and model:
        raise ConfigError("--no-model contradicts --model")
    models = [] if no_model else (list(model) or [DEFAULT_ALIAS])
    run = settings.model
    if lq.is_file():  # a video: temporal stability (flicker) instead of the image table
        from tadsr_cli.commands.eval_video import eval_video
        from tadsr_cli.eval.temporal import ModelSettings

        frame_steps = steps[0] if steps else 1
        precision = resolve_precision(run.precision, resolve_device(run.device), run.backend, frame_steps)
        video_settings = ModelSettings(device=run.device, precision=precision, sampler=run.sampler, seed=run.seed,
                                       tile=settings.tiles.tile, tile_overlap=settings.tiles.overlap,
                                       tile_batch=settings.tiles.batch, noise_scale=run.noise_scale,
                                       color_fix=settings.color_fix,
                                       temporal_smoothing=settings.temporal_smoothing)
        eval_video(lq, gt, models, list(steps), output, video_settings, limit, scale, use_stlpips=not no_lpips)
        return
    try:
        sr_dirs = [parse_sr_option(s) for s in sr]
        baselines = parse_baselines(baseline)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    cfg = EvalConfig(
        lq_dir=lq, gt_dir=gt, out_dir=output, models=models, steps=list(steps), baselines=baselines,
        sr_dirs=sr_dirs, engine=run, tiles=settings.tiles, color_fix=settings.color_fix,
        limit=limit, scale=scale, figure_images=figure_images, save_sr=save_sr, use_lpips=not no_lpips,
        use_niqe=not no_niqe,
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
    out.print(f"report: {paths['json']}, {paths['markdown']}, {paths['figure']}", highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
