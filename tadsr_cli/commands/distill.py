"""`tadsr distill --recipe FILE [--set a.b=value ...] [--resume] [-o DIR]`: teacher training or TAD-SR
distillation from a recipe; multi-process with `torchrun --nproc_per_node=N -m tadsr_cli distill ...`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)


def distill(
    recipe: Path = typer.Option(..., "--recipe", "-r", help="Recipe YAML (see recipes/)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe key: --set optim.g.lr=1e-4 (value parsed as YAML). Repeatable."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in the output folder."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Output folder (default: the recipe's, or runs/NAME)."),
    old_out: Path | None = typer.Option(None, "--out", hidden=True),  # the old spelling of --output
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (logs are still written)."),
    export_only: bool = typer.Option(
        False, "--export-only", help="Only write the EMA model of the newest checkpoint (e.g. of a running job)."
    ),
) -> None:
    """Train a ResShift teacher or distil a one-step TAD-SR student, as the recipe says.

    Writes checkpoints, log.jsonl / log.csv, validation images and, at the end, model.safetensors (the EMA model),
    which `tadsr upscale --model FILE` uses directly. Ctrl-C saves a checkpoint and exits; --resume continues.
    """
    from tadsr_cli.train.recipe import load_recipe
    from tadsr_cli.train.run import run_recipe

    console = Console(stderr=True)
    out = output if output is not None else old_out
    parsed = load_recipe(recipe, overrides)
    if export_only:
        from tadsr_cli.train.export import export_checkpoint

        export_checkpoint(parsed, out_dir=out, console=console)
        return
    result = run_recipe(parsed, out_dir=out, resume=resume, console=console, progress=not quiet)
    if result.model_path is not None:
        summary = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
        console.print(
            f"done: {result.step} iterations, {result.iterations_per_second:.2f} it/s; model {result.model_path}"
            + (f"; {summary}" if summary else ""),
            highlight=False,
        )
