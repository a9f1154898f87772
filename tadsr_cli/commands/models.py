"""`tadsr models list|pull|convert|info`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from tadsr_cli.base.errors import CheckpointError, InputError
from tadsr_cli.models import registry
from tadsr_cli.pipeline.paths import check_input_file, check_output_file


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="List, download and convert models.", no_args_is_help=True)
    models_app.command("list")(list_models)
    models_app.command("pull")(pull_model)
    models_app.command("convert")(convert_model)
    models_app.command("info")(model_info)
    app.add_typer(models_app, name="models")


def list_models() -> None:
    """Show the embedded default and the released checkpoints, with where they are."""
    table = Table(title="tadsr models")
    width = max(len(name) for name in registry.REGISTRY)
    table.add_column("name", no_wrap=True, min_width=width)
    table.add_column("steps", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("description", ratio=2)
    table.add_column("source", ratio=1, overflow="fold")
    for entry in registry.REGISTRY.values():
        path = registry.model_path(entry)
        if entry.embedded_file:
            status = "embedded" if path.is_file() else "missing"
            source = "package data"
        else:
            status = "ready" if path.is_file() else "not pulled"
            source = entry.denoiser.filename if entry.denoiser else ""
        table.add_row(entry.name, str(entry.steps), status, entry.description, source)
    Console().print(table)
    Console().print(f"cache: {registry.cache_dir()}  (set TADSR_HOME to move it)")


def pull_model(
    name: str = typer.Argument(..., help="Model name from `tadsr models list`."),
    from_dir: Path | None = typer.Option(
        None, "--from", help="Folder that already holds the released .pth files (offline machines)."
    ),
    force: bool = typer.Option(False, "--force", help="Convert again even if the model file exists."),
) -> None:
    """Download (or take from --from) a released checkpoint, verify it, convert it to a model file."""
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(filename: str, done: int, total: int | None) -> None:
            if filename not in tasks:
                tasks[filename] = bar.add_task(filename, total=total)
            bar.update(tasks[filename], completed=done)

        path = registry.pull(name, local_dir=from_dir, progress=progress, force=force)
    Console().print(f"{name}: ready at {path}")


def convert_model(
    denoiser: Path = typer.Option(..., "--denoiser", help="Released denoiser .pth (ResShift / SinSR)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model file to write (.safetensors)."),
    autoencoder: Path | None = typer.Option(None, "--autoencoder", help="autoencoder_vq_f4.pth"),
    like: str = typer.Option("resshift-realsr-x4-v1", "--like", help="Registry entry whose config to use."),
) -> None:
    """Convert local official checkpoints into one self-describing model file."""
    from tadsr_cli.models.checkpoints import load_official, save_model

    entry = registry.REGISTRY.get(like)
    if entry is None or entry.embedded_file:
        raise typer.BadParameter(f"--like must name a released model, got {like!r}")
    if output.suffix != ".safetensors":
        raise typer.BadParameter(f"-o {output}: the model file must end in .safetensors")
    check_output_file(output)  # a folder/device in the way: refused before anything is read
    for path in (denoiser, autoencoder):
        if path is not None:
            try:
                check_input_file(path)
            except InputError as exc:
                raise CheckpointError(str(exc)) from None
    # load_official checks names and shapes against the config (meta device) before building the network.
    save_model(load_official(entry.make_config(), denoiser, autoencoder), output)
    Console().print(f"wrote {output}")


def model_info(model: str = typer.Argument(..., help="Model name or file.")) -> None:
    """Print a model file's embedded config and parameter counts."""
    from tadsr_cli.models.checkpoints import read_model_config, sha256_file

    path = registry.resolve_model_path(model)
    config = read_model_config(path)
    console = Console()
    console.print(f"file: {path}\nsha256: {sha256_file(path)}")
    console.print_json(config.to_json())
