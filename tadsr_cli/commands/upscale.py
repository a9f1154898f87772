"""`tadsr upscale PATH...`: images, videos and folders, next to the inputs or into `-o` (a file or a folder)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.commands.file_runs import nothing_to_process, run_files
from tadsr_cli.commands.options import RUN_OPTIONS, build_run_settings, with_options
from tadsr_cli.commands.ray_runs import ray_option, ray_workers_option, run_files_on_ray
from tadsr_cli.pipeline.batch import Job, ext_for_kind, output_name, plan_folder, video_extensions
from tadsr_cli.pipeline.image_io import normalize_ext, output_format
from tadsr_cli.pipeline.image_read import IMAGE_EXTENSIONS
from tadsr_cli.pipeline.paths import ensure_output_folder
from tadsr_cli.pipeline.session import Session, looks_like_video
from tadsr_cli.pipeline.settings import RunSettings


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale_command)


@with_options(RUN_OPTIONS, build_run_settings)
def upscale_command(
    inputs: list[Path] | None = typer.Argument(None, help="Images (PNG, JPEG, WebP, TIFF, BMP), videos and/or "
                                               "folders (searched recursively, as `tadsr batch`)."),
    more_inputs: list[Path] = typer.Option([], "--input", "-i", help="More inputs (Real-ESRGAN's spelling)."),
    output: str | None = typer.Option(None, "-o", "--output", help="Output file (one input file) or folder (when "
                                       "it exists or ends with /). Default: next to each input as {stem}_x4.{ext}; "
                                       "a folder FOLDER -> FOLDER_x4."),
    ray: str | None = ray_option(),
    ray_workers: int | None = ray_workers_option(),
    settings: RunSettings | None = None,
) -> None:
    """Upscale images, videos and folders x4 (videos are detected by content). Example: tadsr upscale photo.jpg

    Real-ESRGAN's spellings work too: -i/--input, -s/--outscale, -n/--model_name, --suffix, --fp32, --tile_pad,
    --ext auto.
    """
    assert settings is not None
    paths = list(inputs or []) + list(more_inputs)
    if not paths:
        raise ConfigError("no input: give image/video files or folders (or -i PATH)")
    session = Session(settings)
    jobs = plan_inputs(paths, output, settings, session.scale, session.config.scale)  # str: keeps a trailing /
    if ray is not None:
        run_files_on_ray(jobs, session, settings, ray, ray_workers, always_table=any(p.is_dir() for p in paths))
        return
    run_files(jobs, session, settings, always_table=any(p.is_dir() for p in paths))


def output_is_folder(text: str, inputs: list[Path]) -> bool:
    """-o is a folder when it exists as one, ends with /, has no extension or several inputs/a folder are given;
    a file name (with an extension) for several inputs is an error, not a folder named like a file."""
    output = Path(text)
    if output.is_dir() or text.endswith(("/", os.sep)):
        return True
    single_file = len(inputs) == 1 and not inputs[0].is_dir()
    if output.exists():
        if single_file:
            return False
        raise ConfigError(f"-o {output}: several inputs (or a folder) need an output folder, and this is a file")
    if output.suffix == "":
        return True
    if single_file:
        return False
    raise ConfigError(f"-o {output}: {len(inputs)} inputs need an output folder, but this names a file; "
                      f"end it with / to create a folder of that name")


def plan_inputs(inputs: list[Path], output_text: str | None, s: RunSettings, scale: float,
                model_scale: int) -> list[Job]:
    """Jobs for `tadsr upscale`: files next to themselves / into folder `output` / to file `output`; a folder's
    tree mirrored (into FOLDER_x4 next to it, `output` itself when it is the only input, else `output`/FOLDER)."""
    output = None if output_text is None else Path(output_text).expanduser()
    folder_out = output_text is not None and output_is_folder(output_text, inputs)
    folders: list[Path] = [output] if folder_out and output is not None else []  # created once all is planned
    jobs: list[Job] = []
    for src in inputs:
        if src.is_dir():
            if output is None:
                dest = src.resolve().parent / f"{src.resolve().name}_x{model_scale}"
            else:
                dest = output if len(inputs) == 1 else output / src.resolve().name
            found = plan_folder(src, dest, s.output.name, scale, s.output.ext)
            if not found:
                nothing_to_process(src)
            folders.append(dest)
            jobs += found
            continue
        kind = "video" if looks_like_video(src) else "image"
        if output is not None and not folder_out:
            jobs.append(_file_job(src, output, kind, s))
            continue
        out_ext = ext_for_kind(kind, s.output.ext)  # type: ignore[arg-type]
        if kind == "image" and out_ext is None and src.suffix.lower() not in IMAGE_EXTENSIONS:
            out_ext = ".png"  # e.g. photo.jfif or no extension: a lossless, widely readable default
        if kind == "video" and out_ext is None and src.suffix.lower() not in video_extensions():
            out_ext = ".mp4"  # a video named like an image (or without extension): MP4 container
        folder = src.parent if output is None else output
        jobs.append(Job(src, folder / output_name(src, s.output.name, scale, out_ext), kind))
    for folder in folders:
        ensure_output_folder(folder)
    return jobs


def _file_job(src: Path, output: Path, kind: str, s: RunSettings) -> Job:
    """One input to the output file `output`; its format is checked before any work."""
    if kind == "image":
        output_format(output)  # unknown extension: OutputError (exit 2) before any work
        if s.output.ext is not None and normalize_ext(output.suffix) != s.output.ext:
            raise ConfigError(f"--ext {s.output.ext} contradicts the output file name {output.name}")
    return Job(src, output, kind)  # type: ignore[arg-type]
