"""Ctrl-C / SIGTERM, in one place: every handler the package installs, main thread only, the previous ones restored.

* `graceful_interrupts` (the CLI, around every command): the first signal interrupts the work; later ones are held
  so that cleanup always finishes. A second Ctrl-C while temp files are being removed (or worker threads joined)
  would otherwise raise a fresh KeyboardInterrupt in the middle of the cleanup, leave half-written files behind and
  kill the process with a raw signal status instead of exit code 130. After the first signal, further
  SIGINT/SIGTERM only print a note; a third one leaves at once with status 130 (temp files may then remain), for a
  cleanup that really hangs.
* `sigterm_as_interrupt` (file runs called as a library): SIGTERM raises KeyboardInterrupt like Ctrl-C, so both
  stop a run the same clean way.
* `DeferredStop` (the training loop): the first SIGINT/SIGTERM only sets a flag that the loop checks between
  iterations (it then saves a checkpoint and stops); a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["DeferredStop", "active", "graceful_interrupts", "interrupted", "reset", "sigterm_as_interrupt"]

Handler = Callable[[int, Any], None]

_state = {"count": 0}
_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


def _main_thread() -> bool:
    """Signal handlers can only be installed from the main thread; elsewhere every helper here is a no-op."""
    return threading.current_thread() is threading.main_thread()


def _install(handler: Handler, signals: Iterable[int]) -> dict[int, Any]:
    """Install `handler` for `signals`; the previous handlers, for `_restore`."""
    return {s: signal.signal(s, handler) for s in signals}


def _restore(previous: dict[int, Any]) -> None:
    for s, h in previous.items():
        signal.signal(s, h)


# ---- the CLI: interrupt once, then let the cleanup finish ------------------------------------------------------
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
    if not _main_thread():
        yield
        return
    _state["count"] = 0
    old = _install(_handler, _SIGNALS)
    try:
        yield
    finally:
        if not interrupted():
            _restore(old)


def reset() -> None:
    """Forget a previous interrupt (for in-process callers that run several commands, e.g. tests)."""
    _state["count"] = 0


# ---- file runs: SIGTERM stops like Ctrl-C ----------------------------------------------------------------------
@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration (main thread only), so both stop cleanly."""
    if not _main_thread() or active():
        yield  # (the CLI's graceful handler already turns SIGTERM into one KeyboardInterrupt)
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = _install(handler, [signal.SIGTERM])
    try:
        yield
    finally:
        _restore(old)


# ---- training: stop at the end of the iteration ----------------------------------------------------------------
class DeferredStop:
    """Installed on creation (main thread only): the first SIGINT/SIGTERM sets `requested`, checked by the caller
    at its next safe point; after it a second Ctrl-C raises KeyboardInterrupt at once. `restore` puts the previous
    handlers back (whatever was installed before, e.g. the CLI's `graceful_interrupts`)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = _install(self._handler, (signal.SIGINT, signal.SIGTERM)) if _main_thread() else {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        # a second Ctrl-C raises KeyboardInterrupt immediately
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self) -> None:
        _restore(self._previous)
        self._previous = {}
