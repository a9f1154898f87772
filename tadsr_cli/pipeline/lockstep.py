"""Runs the tiles of one image in lockstep so that every GroupNorm uses whole-image statistics.

Each tile batch runs its forward in its own thread with `TileNormState` in exchange mode
(`tadsr_cli.models.tile_norm`). At every norm call a thread hands in its tiles' moments and waits until every
batch has reached the same call; the merged moments give the whole-image mean and variance, and all batches go on
normalised alike. A baton lets one thread compute at a time, so the network's transient memory stays that of one
tile batch (and torch's intra-op threads are not oversubscribed); what grows with the image is the suspended
activations of the waiting batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tadsr_cli.models.tile_norm import GroupMoments, Rect, TileNormState


class LockstepAborted(RuntimeError):
    """Raised in the waiting threads when another batch of the same image failed."""


class NormExchange:
    """Barrier over `parties` threads at every norm call, plus the baton (one computing thread at a time)."""

    def __init__(self, parties: int) -> None:
        if parties < 1:
            raise ValueError("parties must be >= 1")
        self._parties = parties
        self._cond = threading.Condition()
        self._baton = threading.Lock()
        self._arrived = 0
        self._generation = 0
        self._moments = GroupMoments()
        self._result: np.ndarray | None = None
        self._failed: BaseException | None = None
        self.calls = 0  # norm calls completed by all parties

    def acquire(self) -> None:
        self._baton.acquire()
        if self._failed is not None:
            self._baton.release()
            raise LockstepAborted("another tile batch failed") from self._failed

    def release(self) -> None:
        self._baton.release()

    def abort(self, exc: BaseException) -> None:
        with self._cond:
            if self._failed is None:
                self._failed = exc
            self._cond.notify_all()

    def exchange(self, moments: Tensor) -> Tensor:
        """This batch's moments `[B, G, 3]` in, the whole-image `[G, 2]` (mean, variance) out, once all arrived."""
        host = moments.detach().to("cpu", torch.float64).numpy()
        self._baton.release()  # let the next batch compute up to this norm
        with self._cond:
            generation = self._generation
            self._moments.add(host)
            self._arrived += 1
            if self._arrived == self._parties:
                self._result = self._moments.mean_var()
                self._moments = GroupMoments()
                self._arrived = 0
                self._generation += 1
                self.calls += 1
                self._cond.notify_all()
            while generation == self._generation and self._failed is None:
                self._cond.wait()
            failed, result = self._failed, self._result
        if failed is not None:
            raise LockstepAborted("another tile batch failed") from failed
        self.acquire()
        assert result is not None
        return torch.from_numpy(result)


Work = Callable[[int, TileNormState], Any]


def run_lockstep(owned: Sequence[Sequence[Rect]], sizes: Sequence[tuple[int, int]], work: Work) -> list[Any]:
    """Calls `work(i, norms)` for every batch `i` in lockstep threads; returns their results.

    `owned[i]`: per tile of batch `i`, the rectangle it owns (tile coordinates); `sizes[i]`: its tiles' size.

    `work` runs the engine with `norms` and may post-process its output (it holds the baton, so nothing else
    computes meanwhile). The first real error of any batch is re-raised here (after all threads have stopped).
    """
    exchange = NormExchange(len(owned))
    results: list[Any] = [None] * len(owned)
    errors: list[BaseException] = []
    # A new thread starts with OpenMP's default team size, not the caller's `torch.set_num_threads`: without this
    # every batch thread would spin up (and spin-wait on) a full team of its own, which cost ~40 % more CPU time.
    intra_op_threads = torch.get_num_threads()

    def target(i: int) -> None:
        try:
            torch.set_num_threads(intra_op_threads)
            exchange.acquire()
            try:
                results[i] = work(i, TileNormState(owned=owned[i], exchange=exchange.exchange, size=sizes[i]))
            finally:
                exchange.release()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)
            exchange.abort(exc)

    threads = [threading.Thread(target=target, args=(i,), name=f"tadsr-lockstep-{i}", daemon=True)
               for i in range(len(owned))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = [e for e in errors if not isinstance(e, LockstepAborted)]
    if real or errors:
        raise (real or errors)[0]
    return results
