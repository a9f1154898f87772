"""Plumbing between the concurrent video stages: bounded channels that honour a stop flag, and safe joins."""

from __future__ import annotations

import queue
import threading
from typing import Any

PACKET_SLACK = 256  # small items (markers, packets) that may wait in a channel beside its frames
POLL_S = 0.1


class Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was interrupted."""


END = object()  # the last item a stage sends


class Channel:
    """A FIFO between two stages with separate bounds for frames (big) and other items (small); polls `stop`."""

    def __init__(self, max_frames: int, stop: threading.Event) -> None:
        self._q: queue.Queue[tuple[Any, threading.Semaphore]] = queue.Queue()
        self._frames = threading.Semaphore(max(1, max_frames))
        self._small = threading.Semaphore(PACKET_SLACK)
        self._stop = stop

    def put(self, item: Any, is_frame: bool) -> None:
        sem = self._frames if is_frame else self._small
        while not sem.acquire(timeout=POLL_S):
            if self._stop.is_set():
                raise Stopped
        self._q.put((item, sem))

    def get(self) -> Any:
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                item, sem = self._q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            sem.release()
            return item


def join_all(stop: threading.Event, *threads: threading.Thread) -> None:
    """Join the stage threads even if Ctrl-C arrives again meanwhile (then stop them and re-raise after)."""
    interrupted: BaseException | None = None
    for t in threads:
        while t.is_alive():
            try:
                t.join(POLL_S)
            except BaseException as exc:  # a second KeyboardInterrupt while waiting
                interrupted = interrupted or exc
                stop.set()
    if interrupted is not None:
        raise interrupted
