"""`tadsr eval`: measure models, baselines and ready outputs with the field's conventions; write a report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tadsr_cli.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    lq: Path = typer.Option(..., "--lq", help="Folder of low-resolution input images."),
    gt: Path | None = typer.Option(None, "--gt", help="Folder of ground-truth HR images (paired by file stem)."),
    model: list[str] = typer.Option([], "--model", "-m", help="Model name or file; repeat for several."),
    steps: list[int] = typer.Option(
        [], "--steps", help="Sampling steps (1 = one-step, or the model's T); repeat to compare. Default: the model's."
    ),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="Baselines: bicubic, lanczos, realesrgan (Real-ESRGAN x4plus; comma list).",
    ),
    sr: list[str] = typer.Option([], "--sr", help="Ready outputs to measure, NAME=DIR (repeatable)."),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (report.json, report.md, figure.png)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (models and metrics)."),
    precision: str = typer.Option("fp32", "--precision", help="Model precision: fp32, bf16 or fp16."),
    sampler: str = typer.Option(
        "deterministic", "--sampler", help="Teacher sampler (--steps T): deterministic or ancestral."
    ),
    tile: int = typer.Option(128, "--tile", help="LQ tile size for models (0 = whole image)."),
    tile_overlap: int = typer.Option(16, "--tile-overlap", help="Tile overlap in LQ pixels."),
    tile_batch: int = typer.Option(4, "--tile-batch", help="Tiles per model call."),
    seed: int = typer.Option(0, "--seed", help="Seed of the prior noise field."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N paired images (by name)."),
    scale: int = typer.Option(4, "--scale", help="SR factor; also the PSNR/SSIM border crop."),
    figure_images: int = typer.Option(3, "--figure-images", help="Images shown as crops in figure.png."),
    save_sr: bool = typer.Option(False, "--save-sr", help="Also save each method's outputs under REPORT/sr/."),
    no_lpips: bool = typer.Option(False, "--no-lpips", help="Skip true LPIPS even if the lpips package is present."),
    no_niqe: bool = typer.Option(False, "--no-niqe", help="Skip NIQE (slow on very large images)."),
) -> None:
    """Evaluate models / baselines / ready outputs: PSNR-Y, SSIM-Y, ST-LPIPS, LPIPS, NIQE, time; write a report."""
    from tadsr_cli.eval.report import write_report
    from tadsr_cli.eval.runner import METRICS, EvalConfig, parse_baselines, parse_sr_option, run_eval

    try:
        sr_dirs = [parse_sr_option(s) for s in sr]
        baselines = parse_baselines(baseline)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    cfg = EvalConfig(
        lq_dir=lq, gt_dir=gt, out_dir=output, models=list(model), steps=list(steps), baselines=baselines,
        sr_dirs=sr_dirs, device=device, precision=precision, sampler=sampler, tile=tile, tile_overlap=tile_overlap,
        tile_batch=tile_batch, seed=seed,
        limit=limit, scale=scale, figure_images=figure_images, save_sr=save_sr, use_lpips=not no_lpips,
        use_niqe=not no_niqe,
    )
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(method: str, done: int, total: int) -> None:
            if method not in tasks:
                tasks[method] = bar.add_task(method, total=total)
            bar.update(tasks[method], completed=done)

        result = run_eval(cfg, progress=progress)
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
