"""Many files in one run: discovery, output naming, sharding, skip/overwrite, per-file failures, interruption.

Used by `tadsr upscale` (a list of files) and `tadsr batch` (a folder tree). The runner never stops on a failed
file: each failure becomes one `FileResult` with a one-line message; only interruption (Ctrl-C / SIGTERM) stops
it, after the current file's partial output has been discarded (outputs are atomic), so a re-run skips the
finished files and redoes the interrupted one.
"""

from __future__ import annotations

import logging
import os
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tadsr_cli.base.errors import ConfigError, TadsrError
from tadsr_cli.pipeline.image_read import IMAGE_EXTENSIONS, INPUT_EXTENSIONS
from tadsr_cli.pipeline.paths import (
    check_input_folder,
    check_output_file,
    ensure_output_folder,
    is_within,
    reason,
    resolve,
)

__all__ = ["ensure_output_folder"]  # re-exported for callers that import it from here
log = logging.getLogger(__name__)

Status = Literal["done", "skipped", "failed"]
Kind = Literal["image", "video"]

# Used when the video module cannot be imported; the real list lives in `pipeline.video_probe`.
_FALLBACK_VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
DEFAULT_NAME = "{stem}_x{scale}"


def video_extensions() -> frozenset[str]:
    try:
        from tadsr_cli.pipeline.video_probe import VIDEO_EXTENSIONS
    except ImportError:
        return _FALLBACK_VIDEO_EXTENSIONS
    return frozenset(VIDEO_EXTENSIONS)


@dataclass
class Job:
    src: Path
    dst: Path
    kind: Kind = "image"


@dataclass
class FileResult:
    src: Path
    dst: Path | None
    status: Status
    message: str = ""
    seconds: float = 0.0
    kind: Kind = "image"
    detail: dict[str, Any] = field(default_factory=dict)


# ---- discovery and naming --------------------------------------------------------------------------------------
def find_inputs(root: Path, exclude: Path | None = None, videos: bool = True) -> list[tuple[Path, Kind]]:
    """Image (and video) files under `root`, recursively, sorted; hidden files/folders and non-media ignored.

    `exclude`: a folder to leave out with everything below it (the output folder when it lies inside the input
    folder). Symlinked folders are not followed (no loops); unreadable subfolders are skipped with a warning.
    """
    root = check_input_folder(root)
    if exclude is not None and is_within(root, exclude):
        exclude = None  # the output folder is the input folder (or above it): `plan_folder` drops its outputs
    vids = video_extensions() if videos else frozenset()
    found: list[tuple[Path, Kind]] = []

    def unreadable(exc: OSError) -> None:
        log.warning("%s: cannot list the folder (%s); skipped", exc.filename, reason(exc))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if exclude is not None and is_within(here / d, exclude):
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith(".") or name.lower() in IGNORED_NAMES:
                continue
            ext = Path(name).suffix.lower()
            if ext in INPUT_EXTENSIONS:
                found.append((here / name, "image"))
            elif ext in vids:
                found.append((here / name, "video"))
    found.sort(key=lambda item: item[0].relative_to(root).as_posix())
    return found


def check_template(template: str) -> str:
    """Validate an output name template: fields `{stem}`, `{ext}`, `{scale}` only, no path separators."""
    if not template or "/" in template or "\\" in template or template in (".", ".."):
        raise ConfigError(f"--name {template!r}: must be a plain file name (no folders)")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"--name {template!r}: {exc}") from exc
    bad = sorted({f for f in fields if f not in ("stem", "ext", "scale")})
    if bad:
        raise ConfigError(f"--name {template!r}: unknown field(s) {bad}; use {{stem}}, {{ext}}, {{scale}}")
    return template


def format_scale(scale: float) -> str:
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


def output_name(src: Path, template: str, scale: float, out_ext: str | None) -> str:
    """`{stem}_x4` + extension (`out_ext` like ".png", or the input's own)."""
    ext = src.suffix
    name = template.format(stem=src.stem, ext=ext.lstrip("."), scale=format_scale(scale))
    return name + (out_ext if out_ext else ext)


def ext_for_kind(kind: Kind, ext: str | None) -> str | None:
    """`--ext` for one file: an image format applies to images, a video container to videos; else None (default)."""
    if ext is None:
        return None
    return ext if (kind == "video") == (ext in video_extensions()) else None


def plan_folder(root: Path, out_root: Path, template: str, scale: float, image_ext: str | None,
                videos: bool = True) -> list[Job]:
    """Jobs for a folder tree; the output tree mirrors the input tree. `image_ext` applies to images only."""
    root, out_root = Path(root), Path(out_root)
    jobs = []
    for src, kind in find_inputs(root, exclude=out_root, videos=videos):
        rel = src.relative_to(root).parent
        ext = ext_for_kind(kind, image_ext)
        if kind == "image" and ext is None and src.suffix.lower() not in IMAGE_EXTENSIONS:
            ext = ".png"  # read-only formats (GIF) are written as PNG
        jobs.append(Job(src, out_root / rel / output_name(src, template, scale, ext), kind))
    if is_within(out_root, root):
        # The output tree is (inside) the input tree: what this plan writes is output, never input, so a re-run
        # does not upscale its own results.
        outputs = {resolve(job.dst) for job in jobs}
        jobs = [job for job in jobs if resolve(job.src) not in outputs]
    return jobs


# ---- sharding --------------------------------------------------------------------------------------------------
def parse_shard(spec: str | None, environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """`--shard K/N` (1 <= K <= N) -> (K-1, N); without it, torchrun's RANK/WORLD_SIZE; None = no sharding."""
    if spec:
        try:
            k_text, n_text = spec.split("/")
            k, n = int(k_text), int(n_text)
        except ValueError:
            raise ConfigError(f"--shard {spec!r}: expected K/N, e.g. 1/4") from None
        if n < 1 or not 1 <= k <= n:
            raise ConfigError(f"--shard {spec!r}: need 1 <= K <= N")
        return k - 1, n
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        except ValueError:
            raise ConfigError("RANK / WORLD_SIZE environment variables are not integers") from None
        if world > 1:
            if not 0 <= rank < world:
                raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
            return rank, world
    return None


def select_shard(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    """Round-robin over the sorted list (balances sizes), independent of which outputs already exist."""
    if shard is None:
        return jobs
    index, count = shard
    return jobs[index::count]


# ---- the runner ------------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """Raised by `run_jobs` after Ctrl-C/SIGTERM; carries the results so far."""

    def __init__(self, results: list[FileResult]) -> None:
        super().__init__("interrupted")
        self.results = results


def error_line(exc: BaseException) -> str:
    """One line for a per-file failure: typed errors as they are, anything else with its type."""
    if isinstance(exc, TadsrError):
        text = str(exc)
    elif isinstance(exc, MemoryError):
        text = "out of memory (try a smaller --tile or --max-pixels)"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def precheck(job: Job, claimed: dict[Path, Path], overwrite: bool) -> FileResult | None:
    """A result without running the job (clash, skip), None when it must run; raises for unusable outputs.

    Shared by `run_jobs` and the Ray driver (`ray_batch.py`), so both skip and refuse the same outputs."""
    key = resolve(job.dst)
    if key in claimed:
        return FileResult(job.src, job.dst, "failed", f"output {job.dst} would also be written from "
                          f"{claimed[key]}; use --name '{{stem}}_{{ext}}_x{{scale}}' to tell them apart",
                          kind=job.kind)
    claimed[key] = job.src
    check_output_file(job.dst, job.src)
    if os.path.lexists(job.dst) and not overwrite:
        return FileResult(job.src, job.dst, "skipped", "output exists (use --overwrite to replace it)",
                          kind=job.kind)
    return None


def run_jobs(
    jobs: list[Job],
    process: Callable[[Job], dict[str, Any] | None],
    *,
    overwrite: bool = False,
    prepare: Callable[[Kind], None] | None = None,
    on_start: Callable[[Job, int, int], None] | None = None,
    on_result: Callable[[FileResult, int, int], None] | None = None,
    on_error: Callable[[Job, BaseException], None] | None = None,
) -> list[FileResult]:
    """Run `process(job)` for each job; skip existing outputs unless `overwrite`; never stop on a failure.

    `prepare(kind)` runs once per job kind ("image", "video": each may have its own model), before the first job
    of that kind that needs work (model loading); its errors are fatal (they propagate). `on_error(job, exc)`
    sees each per-file exception (tracebacks with --debug).
    Raises `Interrupted` (with the results so far) on KeyboardInterrupt.
    """
    results: list[FileResult] = []
    prepared: set[str] = set()
    claimed: dict[Path, Path] = {}
    total = len(jobs)
    for i, job in enumerate(jobs):
        try:
            res = precheck(job, claimed, overwrite)
        except TadsrError as exc:  # a folder/device in the way, the input itself, a loop: this file fails
            res = FileResult(job.src, job.dst, "failed", error_line(exc), kind=job.kind)
        if res is not None:
            results.append(res)
            if on_result:
                on_result(res, i, total)
            continue
        if job.kind not in prepared:
            if prepare is not None:
                prepare(job.kind)
            prepared.add(job.kind)
        if on_start:
            on_start(job, i, total)
        t0 = time.perf_counter()
        try:
            detail = process(job) or {}
            res = FileResult(job.src, job.dst, "done", seconds=time.perf_counter() - t0, kind=job.kind,
                             detail=detail)
        except KeyboardInterrupt:
            raise Interrupted(results) from None
        except Exception as exc:  # one bad file must not stop the run
            if on_error:
                on_error(job, exc)
            res = FileResult(job.src, job.dst, "failed", error_line(exc), seconds=time.perf_counter() - t0,
                             kind=job.kind)
        results.append(res)
        if on_result:
            on_result(res, i, total)
    return results
