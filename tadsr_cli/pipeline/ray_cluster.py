"""`--ray ADDRESS`: the optional Ray import, connecting to a cluster (or starting one for the run), worker shape.

ADDRESS is `auto` (the cluster that `RAY_ADDRESS` or a running `ray start` on this machine names, else a local one
started for this run and stopped after it) or `host:port` of a head node (also `ray://host:port` for Ray Client).
Ray itself is optional (`pip install 'tadsr[ray]'`): without it, `--ray` is a one-line `EngineUnavailableError`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError

INSTALL_HINT = "--ray needs Ray, which is not installed: pip install 'tadsr[ray]'"
CONNECT_TIMEOUT_S = 5.0  # a TCP probe first: Ray itself retries an unreachable head for minutes
_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def import_ray() -> Any:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EngineUnavailableError(INSTALL_HINT) from None
    return ray


def check_address(address: str) -> str:
    """`auto`, `host:port` or `ray://host:port`, else a `ConfigError`."""
    text = (address or "").strip()
    if text.lower() == "auto":
        return "auto"
    m = _HOST_PORT.match(text)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ConfigError(f"--ray {address!r}: expected auto or HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379)")
    return text


@dataclass(frozen=True)
class ClusterInfo:
    """What the run is using: where, how big, and whether tadsr started it (then it stops it too)."""

    address: str
    nodes: int
    cpus: float
    gpus: float
    started_here: bool

    def describe(self) -> str:
        where = "a local Ray cluster started for this run" if self.started_here else f"Ray cluster {self.address}"
        gpus = f", {self.gpus:g} GPU{'s' if self.gpus != 1 else ''}" if self.gpus else ""
        return (f"{where}: {self.nodes} node{'s' if self.nodes != 1 else ''}, {self.cpus:g} "
                f"CPU{'s' if self.cpus != 1 else ''}{gpus}")


def _probe(address: str) -> None:
    """Fail in seconds, with one line, when nothing listens at `host:port`."""
    m = _HOST_PORT.match(address)
    assert m is not None
    host, port = m.group(1).strip("[]"), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EngineUnavailableError(f"--ray {address}: no Ray head node answers there ({exc.strerror or exc}); "
                                     "start one with `ray start --head --port PORT`") from None


def _init(ray: Any, address: str | None) -> None:
    # Ray's own INFO lines (and its token-auth notice) are not the user's business here; errors still show.
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": True}
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address is None:
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError:
        raise
    except Exception as exc:  # authentication, version mismatch, ...: Ray's first line says which
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = address or "a local cluster"
        hint = ""
        if "auth" in type(exc).__name__.lower() or "auth" in str(exc).lower():
            hint = "; a cluster with token authentication needs RAY_AUTH_MODE=token (and its token) here"
        raise EngineUnavailableError(f"--ray: cannot connect to {where} ({first}){hint}") from exc
    finally:
        if main and sigterm is not None:
            # ray.init makes SIGTERM exit at once; keep ours (finish the file's cleanup, summary, status 130)
            signal.signal(signal.SIGTERM, sigterm)


def _describe(ray: Any, address: str, started_here: bool) -> ClusterInfo:
    total = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(address=address, nodes=len(nodes), cpus=float(total.get("CPU", 0.0)),
                       gpus=float(total.get("GPU", 0.0)), started_here=started_here)


@contextlib.contextmanager
def connected(address: str) -> Iterator[ClusterInfo]:
    """Connect for the duration of the block (reusing a connection the caller already holds)."""
    ray = import_ray()
    address = check_address(address)
    if ray.is_initialized():  # e.g. `eval` connects once around several methods
        yield _describe(ray, address, started_here=False)
        return
    started_here = False
    if address == "auto":
        try:
            _init(ray, "auto")
        except ConnectionError:  # no RAY_ADDRESS and no `ray start` here: a cluster of this machine, for this run
            _init(ray, None)
            started_here = True
    else:
        if not address.startswith("ray://"):
            _probe(address)
        try:
            _init(ray, address)
        except ConnectionError as exc:
            raise EngineUnavailableError(f"--ray {address}: cannot connect ({exc})") from None
    try:
        yield _describe(ray, address, started_here)
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class WorkerShape:
    """How many model workers (Ray actors) run, and what each asks Ray for."""

    count: int
    cpus: int
    gpus: int

    def describe(self) -> str:
        each = f"{self.gpus} GPU" if self.gpus else f"{self.cpus} CPU{'s' if self.cpus != 1 else ''}"
        return f"{self.count} worker{'s' if self.count != 1 else ''} ({each} each)"


def worker_shape(info: ClusterInfo, device: str, workers: int | None) -> WorkerShape:
    """One worker per GPU where the cluster has GPUs (and `--device` allows them); else one per CPU, or
    `workers` workers sharing the CPUs evenly (each runs torch with that many threads)."""
    if workers is not None and workers < 1:
        raise ConfigError("--ray-workers must be >= 1")
    dev = (device or "auto").strip().lower()
    if info.gpus >= 1 and dev != "cpu" and not dev.startswith("mps"):
        return WorkerShape(count=workers or int(info.gpus), cpus=1, gpus=1)
    if dev.startswith("cuda"):
        raise EngineUnavailableError(f"--device {device} with --ray: the cluster has no GPU")
    cpus = max(1, int(info.cpus))
    count = workers or cpus
    return WorkerShape(count=count, cpus=max(1, cpus // count), gpus=0)

