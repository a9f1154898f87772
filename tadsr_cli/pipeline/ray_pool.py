"""Model workers as Ray actors, and a dynamic scheduler over them.

* Each worker (`ray_worker.Worker`) is an actor: the model loads once per worker process. Units of work (a file,
  a range of frames) go to the least busy worker as workers free up, `IN_FLIGHT` per worker (one running, one
  waiting, so a worker never idles while the driver reacts), so fast and slow machines share the load.
* Faults are Ray's to handle: a worker process that dies is restarted (`MAX_RESTARTS`) and the tasks it held are
  run again (`MAX_TASK_RETRIES`); only a unit that fails after that (or raises) comes back as an exception.
* `--backend auto` is decided once for the whole cluster: the first worker measures (or reads its cached verdict)
  and the others (started meanwhile) get its choice before their first task, so every output of a run comes from
  the same engine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tadsr_cli.base.errors import EngineUnavailableError, TadsrError
from tadsr_cli.pipeline.ray_cluster import WorkerShape
from tadsr_cli.pipeline.ray_files import ShippedFile
from tadsr_cli.pipeline.ray_worker import Worker
from tadsr_cli.pipeline.settings import RunSettings

log = logging.getLogger(__name__)

IN_FLIGHT = 2
MAX_RESTARTS = 4
MAX_TASK_RETRIES = 3
WAIT_S = 0.5  # ray.wait in slices: Ctrl-C is noticed between them
CLOSE_S = 5.0


@dataclass(frozen=True)
class Unit:
    """One task: `Worker.<method>(*args)`; `key` tells the caller what it was."""

    key: Any
    method: str
    args: tuple[Any, ...]


def cause(exc: BaseException) -> BaseException:
    """The exception a task raised, without Ray's wrapper (whose text holds the remote traceback)."""
    inner = getattr(exc, "cause", None)
    return inner if isinstance(inner, BaseException) else exc


def _start_error(exc: BaseException) -> TadsrError:
    inner = cause(exc)
    if isinstance(inner, TadsrError):
        return inner
    text = (str(inner).strip().splitlines() or [type(inner).__name__])[-1]
    return EngineUnavailableError(f"a Ray worker could not start ({text})")


class WorkerPool:
    """`start()`, then `map_unordered(units)`, then `close()` (also on errors)."""

    def __init__(self, ray: Any, shape: WorkerShape, settings: RunSettings, kinds: list[str],
                 model_file: ShippedFile | None = None) -> None:
        self.ray, self.shape, self.settings, self.kinds, self.model_file = ray, shape, settings, kinds, model_file
        self.actors: list[Any] = []
        self.ready: set[int] = set()  # indices into `actors` that take work
        self.load: dict[int, int] = {}
        self.starting: dict[Any, int] = {}  # `ready()` calls of workers still starting (or being checked)
        self.running: dict[Any, tuple[Unit, int]] = {}  # task -> (unit, worker)
        self.engines: dict[str, dict[str, str]] = {}

    def _make(self, settings: RunSettings) -> Any:
        cls = self.ray.remote(Worker).options(
            num_cpus=self.shape.cpus, num_gpus=self.shape.gpus, max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_TASK_RETRIES)
        actor = cls.remote(settings, self.shape.cpus, self.model_file)
        self.actors.append(actor)
        return actor

    def start(self) -> dict[str, dict[str, str]]:
        """Start the workers (all at once) and build the first one's engines (fails here, with one line, on a
        model or engine error); the others get the first one's backend before their first task. Returns what the
        engines resolved to, per kind."""
        for _ in range(self.shape.count):
            self._make(self.settings)
        first = self.actors[0]
        try:
            self.engines = self.ray.get(first.describe.remote(self.kinds))
        except Exception as exc:
            raise _start_error(exc) from None
        self.ready.add(0)
        self.load[0] = 0
        backends = {e["backend"] for e in self.engines.values()}
        pinned = backends.pop() if self.settings.model.backend == "auto" and len(backends) == 1 else None
        for slot, actor in enumerate(self.actors[1:], start=1):
            if pinned is not None:
                actor.use_backend.remote(pinned)  # runs before any task sent later (one caller: in order)
            self.starting[actor.ready.remote()] = slot
        return self.engines

    def _pick(self) -> int | None:
        free = [i for i in self.ready if self.load[i] < IN_FLIGHT]
        return min(free, key=lambda i: (self.load[i], i)) if free else None

    def map_unordered(self, units: Iterable[Unit]) -> Iterator[tuple[Unit, Any, BaseException | None]]:
        """(unit, result, None) or (unit, None, exception) for every unit, as they finish. `units` is read lazily,
        only when a worker can take the next one (so the caller may prepare each unit just in time)."""
        pending = iter(units)
        running = self.running
        exhausted = False
        while True:
            while not exhausted and (slot := self._pick()) is not None:
                unit = next(pending, None)
                if unit is None:
                    exhausted = True
                    break
                ref = getattr(self.actors[slot], unit.method).remote(*unit.args)
                running[ref] = (unit, slot)
                self.load[slot] += 1
            if exhausted and not running:
                return
            if not self.ready and not self.starting:
                raise EngineUnavailableError("every Ray worker has died; nothing is left to run the work")
            waiting = list(running) + list(self.starting)
            done, _ = self.ray.wait(waiting, num_returns=1, timeout=WAIT_S)
            if done:
                rest = [r for r in waiting if r not in done]
                more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
                done = list(done) + list(more)
            for ref in done:
                if ref in self.starting:
                    self._started(ref)
                    continue
                unit, slot = running.pop(ref)
                self.load[slot] -= 1
                try:
                    yield unit, self.ray.get(ref), None
                except Exception as exc:  # the unit failed: raised, or its worker died beyond the retries
                    if self._is_actor_error(exc):
                        self._check(slot)
                    yield unit, None, cause(exc)

    def _is_actor_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self.ray.exceptions.RayActorError)

    def _started(self, ref: Any) -> None:
        slot = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except Exception as exc:
            self.ready.discard(slot)
            log.warning("a Ray worker is gone: %s", _start_error(exc))
            return
        self.ready.add(slot)
        self.load.setdefault(slot, 0)

    def _check(self, slot: int) -> None:
        """A worker failed a task beyond its retries: take it out until it answers again (Ray may be restarting
        it), for good if it does not."""
        self.ready.discard(slot)
        self.starting[self.actors[slot].ready.remote()] = slot

    def close(self, graceful: bool = True) -> None:
        """End the workers: `graceful` (the work is done) lets each remove its temp folder first; otherwise (an
        interruption) unfinished tasks are cancelled and the workers ended at once (the next worker started on
        that machine removes what they left, see `ray_worker`)."""
        for ref in self.running:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self.running.clear()
        if graceful and self.actors:
            closing = [a.close.options(max_task_retries=0).remote() for a in self.actors]
            with contextlib.suppress(Exception):
                self.ray.wait(closing, num_returns=len(closing), timeout=CLOSE_S)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self.actors.clear()
        self.ready.clear()
        self.starting.clear()
