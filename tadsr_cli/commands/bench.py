"""`tadsr bench`: time every available backend/precision on a fixed input, as JSON (`engines/bench.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from tadsr_cli.base.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


def bench_command(
    models: str = typer.Option("default,official", "--models", help="Comma list: default, official."),
    backends: str = typer.Option("torch,onnx,tensorrt", "--backends", help="Comma list of backends to try."),
    precisions: str = typer.Option("fp32,bf16,fp16", "--precisions", help="Comma list of precisions to try."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    size: int = typer.Option(64, "--size", help="LQ tile size (output is 4x)."),
    batch: int = typer.Option(1, "--batch", help="Tiles per call."),
    repeats: int = typer.Option(3, "--repeats", help="Timed calls per variant (after one warm-up)."),
    compile_fast: bool = typer.Option(False, "--compile", help="Also time torch.compile of the bf16 fast path."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the JSON to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
) -> None:
    """Time every available backend/precision on a fixed input; prints JSON (throughput, latency, memory, error)."""
    from tadsr_cli.engines.bench import dumps, run_bench

    console = Console(stderr=True)

    def split(text: str) -> list[str]:
        return [t.strip().lower() for t in text.split(",") if t.strip()]

    if size < 1 or batch < 1 or repeats < 1:
        raise ConfigError("--size, --batch and --repeats must be >= 1")
    report = run_bench(split(models), device=device, size=size, batch=batch, repeats=repeats,
                       backends=split(backends), precisions=split(precisions), compile_fast=compile_fast,
                       threads=threads, log=None if quiet else (lambda m: console.print(m, highlight=False)))
    text = dumps(report)
    sys.stdout.write(text + "\n")
    if output is not None:
        from tadsr_cli.base.atomic import atomic_write_path

        with atomic_write_path(output) as tmp:
            tmp.write_text(text + "\n")
