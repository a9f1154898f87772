"""Where the time of a training iteration goes: wall and CPU seconds per phase, per iteration.

Phases (what `benchmarks/bench_training.py` reports):

* ``data``: the main process waiting for the next micro-batch (the DataLoader workers prepare them);
* ``targets``: the teacher's T-step targets (inline, or the wait for the background computation);
* ``targets_ahead``: the background computation of the next batch's targets (another thread: off the critical path
  when a core is free);
* ``step``: the network step (encodings, forward, backward, optimiser step);
* ``bookkeeping``: EMA, the loss reduction, logging, validation, checkpoints.

CPU seconds are the measuring thread's own (`time.thread_time`): on a shared machine they say what an iteration
costs, where wall seconds also count the other processes' turns on the cores.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator

PHASES = ("data", "targets", "targets_ahead", "step", "bookkeeping")


class PhaseClock:
    """Accumulates (wall, cpu) seconds per phase for the current iteration; `end_iteration` files them."""

    def __init__(self, keep: int = 4096) -> None:
        self.current: dict[str, list[float]] = {}
        self.open: dict[str, tuple[float, float]] = {}
        self.last_end = (time.perf_counter(), time.thread_time())
        self.history: deque[dict[str, tuple[float, float]]] = deque(maxlen=keep)  # the last `keep` iterations

    def add(self, phase: str, wall: float, cpu: float) -> None:
        acc = self.current.setdefault(phase, [0.0, 0.0])
        acc[0] += wall
        acc[1] += cpu

    def start(self, name: str) -> None:
        self.open[name] = (time.perf_counter(), time.thread_time())

    def stop(self, name: str) -> None:
        w0, c0 = self.open.pop(name)
        self.add(name, time.perf_counter() - w0, time.thread_time() - c0)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - w0, time.thread_time() - c0)

    def end_iteration(self) -> None:
        """File the iteration's phases, with its whole wall and CPU time under ``iteration``."""
        now = (time.perf_counter(), time.thread_time())
        self.add("iteration", now[0] - self.last_end[0], now[1] - self.last_end[1])
        self.last_end = now
        self.history.append({k: (v[0], v[1]) for k, v in self.current.items()})
        self.current = {}

    def summary(self, skip: int = 0) -> dict[str, dict[str, float]]:
        """Mean wall and CPU seconds per iteration of each phase, leaving out the first `skip` iterations."""
        rows = list(self.history)[skip:]
        out: dict[str, dict[str, float]] = {}
        for name in (*PHASES, "iteration"):
            walls = [r[name][0] for r in rows if name in r]
            cpus = [r[name][1] for r in rows if name in r]
            n = max(len(rows), 1)
            out[name] = {"wall_s": sum(walls) / n, "cpu_s": sum(cpus) / n}
        return out


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """`(fn(*args, **kwargs), wall seconds, this thread's CPU seconds)`."""
    w0, c0 = time.perf_counter(), time.thread_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.thread_time() - c0
