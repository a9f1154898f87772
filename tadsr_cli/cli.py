"""The `tadsr` command line: a thin Typer app.

Each command lives in `tadsr_cli/commands/<name>.py` and exposes `register(app)`. Library code raises typed
errors (`tadsr_cli.errors`); this module alone turns them into one-line messages and exit codes:
0 ok, 1 some inputs failed, 2 usage/configuration error, 130 interrupted (Ctrl-C/SIGTERM; a second
Ctrl-C waits for the cleanup, see `base.interrupts`).
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from tadsr_cli import __version__
from tadsr_cli.base.allocator import keep_freed_memory
from tadsr_cli.base.errors import TadsrError
from tadsr_cli.base.interrupts import graceful_interrupts, interrupted
from tadsr_cli.base.messages import terminal_safe

# Command modules, registered in this order (help lists them so).
COMMAND_MODULES: tuple[str, ...] = (
    "upscale",
    "batch",
    "models",
    "eval",
    "distill",
    "export",
    "bench",
)

app = typer.Typer(
    name="tadsr",
    help="One-step diffusion super-resolution (TAD-SR): upscale images and video x4, distill, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tadsr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["TADSR_DEBUG"] = "1"


for _name in COMMAND_MODULES:
    importlib.import_module(f"tadsr_cli.commands.{_name}").register(app)


def _error(console: Console, text: str) -> None:
    console.print(f"[red]error:[/red] {escape(terminal_safe(text))}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()  # torch's CPU activations are reused instead of page-faulted in at every call
    err = Console(stderr=True)
    with graceful_interrupts():
        try:
            app(args=argv, standalone_mode=True)
        except TadsrError as exc:
            if os.environ.get("TADSR_DEBUG"):
                raise
            _error(err, str(exc))
            sys.exit(2)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]", highlight=False)
            sys.exit(130)
        except SystemExit as exc:
            if interrupted() and exc.code not in (130, 2):
                sys.exit(130)  # interrupted while exiting for another reason: still an interrupt
            raise


if __name__ == "__main__":
    main()
