"""`tadsr models list|pull|convert|info`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn
from rich.table import Table

from tadsr_cli.base.errors import CheckpointError, InputError, ModelNotFoundError
from tadsr_cli.models import catalog, download, model_cache
from tadsr_cli.pipeline.paths import check_input_file, check_output_file


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="List, download and convert models.", no_args_is_help=True)
    models_app.command("list")(list_models)
    models_app.command("pull")(pull_model)
    models_app.command("convert")(convert_model)
    models_app.command("info")(model_info)
    app.add_typer(models_app, name="models")


def _status(entry: catalog.RegistryEntry) -> str:
    ready = model_cache.model_path(entry).is_file()
    if entry.embedded_file:
        return "embedded" if ready else "missing"
    return "ready" if ready else "not pulled"


def _short(description: str) -> str:
    """The first clause of a registry description (the rest is shown by `tadsr models info NAME`)."""
    for mark in (" (", ": ", ", "):
        description = description.split(mark)[0] if mark != ": " else description.split(mark)[-1]
    return description


def list_models() -> None:
    """Show the embedded default and the released checkpoints (details: `tadsr models info NAME`)."""
    role = {catalog.default_model_for("image"): " (default)", catalog.default_model_for("video"): " (video default)"}
    rows = [(entry.name + role.get(entry.name, ""), str(entry.steps), _status(entry), _short(entry.description))
            for entry in catalog.REGISTRY.values()]
    console = Console()
    widths = [max(len(header), *(len(r[i]) for r in rows)) for i, header in enumerate(("name", "steps", "status"))]
    # The first three columns are never shortened; the description gives way (3 = a column's padding + rule).
    room = max(12, console.width - sum(widths) - 3 * len(widths) - 2)
    table = Table(title="tadsr models", show_edge=False)
    for header, width in zip(("name", "steps", "status"), widths, strict=True):
        table.add_column(header, no_wrap=True, width=width)
    table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=room)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"details: tadsr models info NAME; cache: {model_cache.cache_dir()} (TADSR_HOME moves it)",
                  highlight=False)


def _offline_hint(name: str) -> str:
    entry = catalog.REGISTRY[name]
    files = [f for f in (entry.denoiser, entry.autoencoder) if f is not None]
    urls = " and ".join(f.url for f in files)
    return (f"the download failed (offline?). On a machine with internet access fetch {urls}, put the files in "
            f"one folder and run `tadsr models pull {name} --from FOLDER`")


def pull_model(
    name: str = typer.Argument(..., help="Model name from `tadsr models list`."),
    from_dir: Path | None = typer.Option(
        None, "--from", help="Folder that already holds the released .pth files (offline machines)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Convert again even if the model file exists."),
    force: bool = typer.Option(False, "--force", hidden=True),  # the old spelling of --overwrite
) -> None:
    """Download (or take from --from) a released checkpoint, verify it, convert it to a model file."""
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=Console(stderr=True),
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(filename: str, done: int, total: int | None) -> None:
            if filename not in tasks:
                tasks[filename] = bar.add_task(filename, total=total)
            bar.update(tasks[filename], completed=done)

        try:
            path = download.pull(name, local_dir=from_dir, progress=progress, force=overwrite or force)
        except ModelNotFoundError as exc:
            if from_dir is None and isinstance(exc.__cause__, OSError):  # network failure, not a missing file
                raise ModelNotFoundError(f"{name}: {_offline_hint(name)} ({exc.__cause__})") from exc
            raise
    Console().print(f"{name}: ready at {path}", highlight=False)


def convert_model(
    denoiser: Path = typer.Option(..., "--denoiser", help="Released denoiser .pth (ResShift / SinSR)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model file to write (.safetensors)."),
    autoencoder: Path | None = typer.Option(None, "--autoencoder", help="autoencoder_vq_f4.pth"),
    like: str = typer.Option("resshift-realsr-x4-v1", "--like", help="Registry entry whose config to use."),
) -> None:
    """Convert local official checkpoints into one self-describing model file."""
    from tadsr_cli.models.checkpoints import load_official, save_model

    entry = catalog.REGISTRY.get(like)
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
    """A model's details: description, files and sources; once available, its embedded config and sha256."""
    from tadsr_cli.models.checkpoints import read_model_config, sha256_file

    console = Console()
    name = catalog.model_name(model)
    entry = catalog.REGISTRY.get(name)
    if entry is not None:
        console.print(f"name: {entry.name}\ndescription: {entry.description}\nsteps: {entry.steps}\n"
                      f"status: {_status(entry)}", highlight=False)
        for label, remote in (("denoiser", entry.denoiser), ("autoencoder", entry.autoencoder)):
            if remote is not None:
                console.print(f"{label}: {remote.url}", highlight=False)
        if not model_cache.model_path(entry).is_file():
            console.print(f"not pulled yet: tadsr models pull {entry.name}", highlight=False)
            return
    path = model_cache.resolve_model_path(model)
    config = read_model_config(path)
    console.print(f"file: {path}\nsha256: {sha256_file(path)}", highlight=False)
    console.print_json(config.to_json())
