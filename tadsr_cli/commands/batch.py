"""`tadsr batch DIR -o OUT`: every image (and video) of a folder tree into a mirrored tree, optionally sharded."""

from __future__ import annotations

from pathlib import Path

import typer

from tadsr_cli.commands.file_runs import nothing_to_process, run_files, say
from tadsr_cli.commands.options import RUN_OPTIONS, build_run_settings, with_options
from tadsr_cli.commands.ray_runs import ray_option, ray_workers_option, run_files_on_ray
from tadsr_cli.pipeline.batch import parse_shard, plan_folder, select_shard
from tadsr_cli.pipeline.paths import check_input_folder, ensure_output_folder
from tadsr_cli.pipeline.session import Session
from tadsr_cli.pipeline.settings import RunSettings


def register(app: typer.Typer) -> None:
    app.command("batch")(batch_command)


@with_options(RUN_OPTIONS, build_run_settings)
def batch_command(
    folder: Path = typer.Argument(..., help="Input folder (searched recursively)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output folder; mirrors the input tree. "
                                       "Default: FOLDER_x4 next to the input folder."),
    shard: str | None = typer.Option(None, "--shard", help="Process only part K of N (K/N, 1-based); default from "
                                     "torchrun's RANK/WORLD_SIZE."),
    videos: bool = typer.Option(True, "--videos/--no-videos", help="Also upscale videos found in the folder."),
    ray: str | None = ray_option(),
    ray_workers: int | None = ray_workers_option(),
    settings: RunSettings | None = None,
) -> None:
    """Upscale every image (and video) under FOLDER into a mirrored tree. Example: tadsr batch ./imgs -o ./imgs_x4"""
    assert settings is not None
    check_input_folder(folder)
    shard_spec = parse_shard(shard)
    session = Session(settings)
    if output is None:
        output = folder.resolve().parent / f"{folder.resolve().name}_x{session.config.scale}"
    jobs = plan_folder(folder, output, settings.output.name, session.scale, settings.output.ext, videos=videos)
    if not jobs:
        nothing_to_process(folder, videos)
    ensure_output_folder(output)
    total_found = len(jobs)
    jobs = select_shard(jobs, shard_spec)
    if shard_spec is not None:
        say(settings, f"shard {shard_spec[0] + 1}/{shard_spec[1]}: {len(jobs)} of {total_found} files")
    if ray is not None:
        run_files_on_ray(jobs, session, settings, ray, ray_workers, always_table=True)
        return
    run_files(jobs, session, settings, always_table=True)
