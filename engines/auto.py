"""`--backend auto`: on the CPU, the fastest of torch, OpenVINO and ONNX Runtime for the model, by a cached measurement.

Candidates for the one-step graph on the CPU at fp32 or bf16: the torch engine at the requested precision, OpenVINO
at the same precision (bf16 only where the CPU runs it natively, else f32), and ONNX Runtime in fp32 (its CPU
provider has no fast reduced precision). The first use per model exports the ONNX graph both runtimes read (one
warning line while it is made) and times the candidates (`compare`: one more line; seconds for the tiny default,
about a minute for the official architecture); the verdict is cached beside the exported graph as
`<graph>.speed.json`, keyed by the library versions, thread count and CPU, so later runs decide instantly.
A candidate that cannot be built (not installed, a compile error, a full disk while exporting) is left out with
one warning line. Everything else (CUDA, MPS, teacher sampling, fp16) runs torch.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import TadsrError
from tadsr_cli.engines import torch_engine

log = logging.getLogger(__name__)

PROBE = 512  # the largest probe side
MIN_PROBE_SECONDS = 0.4
REPEATS = 3
TORCH_MARGIN = 0.95
VERDICT_VERSION = 5
GRAPH_BACKENDS = ("openvino", "onnx")  # engines that run the exported graph, in order of preference on a tie


def graph_candidate(device: torch.device, precision: str, steps: int) -> bool:
    """Whether a graph runtime (ONNX Runtime, OpenVINO) may run this configuration at all: CPU, one-step, fp32 or
    bf16."""
    return device.type == "cpu" and int(steps) == 1 and precision in ("fp32", "bf16")


def _installed(module: str) -> str | None:
    """The version of an installed runtime, else None."""
    try:
        if module == "openvino":
            from tadsr_cli.engines.openvino_engine import import_openvino

            mod = import_openvino()
        else:
            mod = __import__(module)
    except (ImportError, TadsrError):
        return None
    return str(getattr(mod, "__version__", "?"))


def _machine_key(precision: str, candidates: list[str]) -> dict[str, Any]:
    return {"version": VERDICT_VERSION, "torch": torch.__version__, "onnxruntime": _installed("onnxruntime"),
            "openvino": _installed("openvino"), "threads": torch.get_num_threads(), "cpu": _cpu_name(),
            "torch_precision": precision, "candidates": sorted(candidates)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _inputs(engine: Any, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, side, side, generator=gen) * 2 - 1
    return lq, torch.randn(1, int(engine.latent_channels), side, side, generator=gen)


def seconds_per_call(engine: Any, side: int, repeats: int = 1, clock: Any = time.perf_counter) -> float:
    """Best time of `engine.run` on one `side` x `side` input (`side` a multiple of the engine's)."""
    lq, noise = _inputs(engine, side)
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        engine.run(lq, noise)
        best = min(best, clock() - t0)
    return best


def _cpu_seconds(engine: Any, side: int) -> float:
    """Process CPU time of one call per torch thread: the probe size does not depend on other jobs' load."""
    lq, noise = _inputs(engine, side)
    t0 = time.process_time()
    engine.run(lq, noise)
    return (time.process_time() - t0) / max(1, torch.get_num_threads())


def compare(engines: dict[str, Any]) -> tuple[dict[str, float], int]:
    """({name: seconds}, probe side) for the candidate engines (the first is torch, which sets the probe): the
    probe grows from 64 px while a torch call takes under `MIN_PROBE_SECONDS` of CPU time (up to `PROBE` px: whole
    images are large, and the per-pixel cost of the engines diverges with size), then the engines take turns
    `REPEATS` times (one busy moment of a shared machine does not decide) and each keeps its best time."""
    first = next(iter(engines.values()))
    multiple = int(first.lq_multiple)
    side = -(-64 // multiple) * multiple
    seconds_per_call(first, side)  # warm-up
    while side * 2 <= PROBE and _cpu_seconds(first, side) < MIN_PROBE_SECONDS:
        side *= 2
    for eng in engines.values():
        seconds_per_call(eng, side)  # warm-ups at the probe size
    # Single-threaded engines: process CPU time is their exact work whatever else runs on the machine; with
    # thread pools (spinning workers count as CPU time) wall time is the fair measure.
    single = torch.get_num_threads() == 1 and all(int(getattr(e, "threads", 1)) == 1 for e in engines.values())
    clock = time.process_time if single else time.perf_counter
    best = {name: float("inf") for name in engines}
    for _ in range(REPEATS if seconds_per_call(first, side) < 2.0 else 1):
        for name, eng in engines.items():
            best[name] = min(best[name], seconds_per_call(eng, side, clock=clock))
    return best, side


def choose(seconds: dict[str, float]) -> str:
    """The fastest; a graph runtime must beat torch clearly (it runs a separate copy of the model, and torch is
    the reference), and OpenVINO wins a tie with ONNX Runtime."""
    fastest = min(seconds, key=lambda n: (seconds[n], GRAPH_BACKENDS.index(n) if n in GRAPH_BACKENDS else -1))
    if fastest != "torch" and "torch" in seconds and seconds["torch"] < seconds[fastest] / TORCH_MARGIN:
        return "torch"
    return fastest


def _verdicts(path: Path) -> list[dict[str, Any]]:
    """Every verdict cached for this graph: one per machine key (thread count, precision, versions), so runs with
    different settings (e.g. 1-thread cluster workers beside a 2-thread local run) do not re-time each other's."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    entries = data.get("verdicts") if isinstance(data, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _read_verdict(path: Path, key: dict[str, Any]) -> str | None:
    for entry in _verdicts(path):
        if entry.get("key") == key and entry.get("choice") in ("torch", *GRAPH_BACKENDS):
            return str(entry["choice"])
    return None


MAX_VERDICTS = 16  # per graph; the oldest go first


def _write_verdict(path: Path, key: dict[str, Any], record: dict[str, Any]) -> None:
    kept = [e for e in _verdicts(path) if e.get("key") != key][-(MAX_VERDICTS - 1):]
    try:
        with atomic_write_path(path) as tmp:
            tmp.write_text(json.dumps({"verdicts": [*kept, {"key": key, **record}]}, indent=1))
    except OSError as exc:  # a read-only cache only costs a new measurement next time
        log.debug("could not cache the backend choice in %s: %s", path, exc)


def _graph_precision(backend: str, precision: str) -> str:
    """ONNX Runtime runs fp32; OpenVINO runs the requested precision where the CPU has native bf16."""
    if backend == "openvino" and precision == "bf16":
        from tadsr_cli.engines.openvino_engine import cpu_has_native_bf16

        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def _build_graph_engine(name: str, model: Any, precision: str, sampler: str, opts: dict[str, Any]) -> Any | None:
    """`name`'s engine, or None (with one warning line saying why) where it cannot be built here."""
    from tadsr_cli.engines import create_engine
    from tadsr_cli.engines.onnx_engine import OPTIONS

    try:
        return create_engine(name, model, device="cpu", precision=_graph_precision(name, precision), steps=1,
                             sampler=sampler, **{k: v for k, v in opts.items() if k in OPTIONS})
    except (TadsrError, OSError) as exc:
        log.warning("--backend auto: %s unavailable for this model (%s); not considered", name, _first_line(exc))
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _graph_file(model: Any, opts: dict[str, Any]) -> Any | None:
    """The exported graph both runtimes read (made once), or None with one warning line (e.g. a full disk)."""
    from tadsr_cli.engines.onnx_engine import ensure_onnx

    keys = ("model_path", "opset", "tile", "cache_dir", "verify")
    try:
        path, _ = ensure_onnx(model, dynamic=True, **{k: opts[k] for k in keys if k in opts})
    except (TadsrError, OSError) as exc:  # OSError: e.g. no space left while the graph is written
        log.warning("--backend auto: could not export the model's graph (%s); using torch", _first_line(exc))
        return None
    return path


def create(model: Any, *, device: str = "auto", precision: str = "fp32", steps: int = 1,
           sampler: str = "deterministic", **opts: Any) -> Any:
    """`engines.create_engine("auto", ...)`. Options: those of the graph engines (`model_path`, `cache_dir`, ...)
    and `seed`; torch gets `seed` only."""
    dev = resolve_device(device)
    seed = opts.get("seed", 0)

    def make_torch() -> Any:
        return torch_engine.create(model, device=str(dev), precision=precision, steps=steps, sampler=sampler,
                                   seed=seed)

    names = [n for n in GRAPH_BACKENDS if _installed("onnxruntime" if n == "onnx" else n) is not None]
    if not graph_candidate(dev, precision, steps) or not names:
        return make_torch()
    graph = _graph_file(model, opts)
    if graph is None:
        return make_torch()
    verdict_path = graph.with_name(graph.name + ".speed.json")
    key = _machine_key(precision, ["torch", *names])
    choice = _read_verdict(verdict_path, key)
    if choice is not None:  # decided before: build only the winner
        engine = None if choice == "torch" else _build_graph_engine(choice, model, precision, sampler, opts)
        return engine if engine is not None else make_torch()
    graphs = {n: e for n in names if (e := _build_graph_engine(n, model, precision, sampler, opts)) is not None}
    if not graphs:
        return make_torch()
    torch_eng = make_torch()
    log.warning("--backend auto: timing %s on this CPU for this model (one time)", ", ".join(["torch", *graphs]))
    seconds, side = compare({"torch": torch_eng, **graphs})
    choice = choose(seconds)
    log.info("--backend auto: %s per %d px input -> %s",
             ", ".join(f"{n} {t:.3f} s" for n, t in seconds.items()), side, choice)
    precisions = {"torch": precision, **{n: e.precision for n, e in graphs.items()}}
    _write_verdict(verdict_path, key, {"choice": choice, "seconds": seconds, "probe": side, "precisions": precisions})
    return torch_eng if choice == "torch" else graphs[choice]
