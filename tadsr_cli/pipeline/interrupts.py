"""Ctrl-C / SIGTERM: the first signal interrupts the work; later ones are held so that cleanup always finishes.

A second Ctrl-C while temp files are being removed (or worker threads joined) would otherwise raise a fresh
KeyboardInterrupt in the middle of the cleanup, leave half-written files behind and kill the process with a raw
signal status instead of exit code 130. After the first signal, further SIGINT/SIGTERM only print a note; a third
one leaves at once with status 130 (temp files may then remain), for a cleanup that really hangs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_state = {"count": 0}
_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


def interrupted() -> bool:
    """True once a Ctrl-C/SIGTERM has been received under `graceful_interrupts`."""
    return _state["count"] > 0


def active() -> bool:
    """True while `graceful_interrupts` owns SIGINT in this process."""
    return signal.getsignal(signal.SIGINT) is _handler


def _handler(signum: int, frame: Any) -> None:
    _state["count"] += 1
    if _state["count"] == 1:
        raise KeyboardInterrupt
    if _state["count"] == 2:
        with contextlib.suppress(Exception):
            sys.stderr.write("stopping: finishing the cleanup (press Ctrl-C again to leave at once)\n")
            sys.stderr.flush()
        return
    os._exit(130)


@contextlib.contextmanager
def graceful_interrupts() -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM (main thread only; elsewhere a no-op).

    After an interrupt the handler stays installed until the process exits (cleanup can run after this block);
    otherwise the previous handlers are restored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["count"] = 0
    old = {s: signal.signal(s, _handler) for s in _SIGNALS}
    try:
        yield
    finally:
        if not interrupted():
            for s, h in old.items():
                signal.signal(s, h)


def reset() -> None:
    """Forget a previous interrupt (for in-process callers that run several commands, e.g. tests)."""
    _state["count"] = 0
