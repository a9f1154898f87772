"""`--backend auto`: ONNX Runtime on the CPU when it is installed and measured faster for the model, else torch.

Candidates: the torch engine at the requested precision, and, for the one-step graph on the CPU at fp32 or bf16,
ONNX Runtime in fp32 (its CPU provider has no fast reduced precision; fp32 is the more exact of the two). The
first use per model exports the ONNX graph (one warning line while it is made) and times both engines (`compare`:
one more line; seconds for the tiny default, about a minute for the official architecture); the verdict is cached beside the exported graph as
`<graph>.speed.json`, keyed by the library versions, thread count and CPU, so later runs decide instantly.
Everything else (CUDA, MPS, teacher sampling, fp16, no onnxruntime, a failed export) runs torch.
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
from tadsr_cli.engines import onnx_engine, torch_engine

log = logging.getLogger(__name__)

PROBE = 512  # the largest probe side
MIN_PROBE_SECONDS = 0.4
REPEATS = 3
TORCH_MARGIN = 0.95
VERDICT_VERSION = 4


def onnx_candidate(device: torch.device, precision: str, steps: int) -> bool:
    """Whether ONNX Runtime may run this configuration at all (installed, CPU, one-step, fp32 or bf16)."""
    if device.type != "cpu" or int(steps) != 1 or precision not in ("fp32", "bf16"):
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _machine_key(precision: str) -> dict[str, Any]:
    import onnxruntime

    return {"version": VERDICT_VERSION, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "threads": torch.get_num_threads(), "cpu": _cpu_name(), "torch_precision": precision}


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


def compare(torch_eng: Any, ort: Any) -> tuple[float, float, int]:
    """(torch seconds, onnx seconds, probe side): the probe grows from 64 px while a torch call takes under
    `MIN_PROBE_SECONDS` of CPU time (up to `PROBE` px: whole images are large, and the per-pixel cost of the two engines
    diverges with size), then the engines alternate `REPEATS` times (one busy moment of a shared machine does
    not decide) and each keeps its best time."""
    multiple = int(torch_eng.lq_multiple)
    side = -(-64 // multiple) * multiple
    seconds_per_call(torch_eng, side)  # warm-up
    while side * 2 <= PROBE and _cpu_seconds(torch_eng, side) < MIN_PROBE_SECONDS:
        side *= 2
    seconds_per_call(torch_eng, side)
    seconds_per_call(ort, side)  # warm-ups at the probe size
    # Both single-threaded: process CPU time is their exact work whatever else runs on the machine; with
    # thread pools (spinning workers count as CPU time) wall time is the fair measure.
    single = torch.get_num_threads() == 1 and int(getattr(ort, "threads", 0)) == 1
    clock = time.process_time if single else time.perf_counter
    t_torch = t_onnx = float("inf")
    for _ in range(REPEATS if seconds_per_call(torch_eng, side) < 2.0 else 1):
        t_torch = min(t_torch, seconds_per_call(torch_eng, side, clock=clock))
        t_onnx = min(t_onnx, seconds_per_call(ort, side, clock=clock))
    return t_torch, t_onnx, side


def _read_verdict(path: Path, key: dict[str, Any]) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key or data.get("choice") not in ("torch", "onnx"):
        return None
    return str(data["choice"])


def _write_verdict(path: Path, key: dict[str, Any], record: dict[str, Any]) -> None:
    try:
        with atomic_write_path(path) as tmp:
            tmp.write_text(json.dumps({"key": key, **record}, indent=1))
    except OSError as exc:  # a read-only cache only costs a new measurement next time
        log.debug("could not cache the backend choice in %s: %s", path, exc)


def create(model: Any, *, device: str = "auto", precision: str = "fp32", steps: int = 1,
           sampler: str = "deterministic", **opts: Any) -> Any:
    """`engines.create_engine("auto", ...)`. Options: those of the onnx engine (`model_path`, `cache_dir`, ...)
    and `seed`; torch gets `seed` only."""
    dev = resolve_device(device)
    seed = opts.get("seed", 0)

    def make_torch() -> Any:
        return torch_engine.create(model, device=str(dev), precision=precision, steps=steps, sampler=sampler,
                                   seed=seed)

    if not onnx_candidate(dev, precision, steps):
        return make_torch()
    onnx_opts = {k: v for k, v in opts.items() if k in onnx_engine.OPTIONS}
    try:
        ort = onnx_engine.create(model, device="cpu", precision="fp32", steps=1, sampler=sampler, **onnx_opts)
    except TadsrError as exc:
        log.warning("--backend auto: ONNX Runtime unavailable for this model (%s); using torch", exc)
        return make_torch()
    verdict_path = ort.onnx_path.with_name(ort.onnx_path.name + ".speed.json")
    key = _machine_key(precision)
    choice = _read_verdict(verdict_path, key)
    if choice is None:
        torch_eng = make_torch()
        log.warning("--backend auto: timing torch and ONNX Runtime on this CPU for this model (one time)")
        t_torch, t_onnx, side = compare(torch_eng, ort)
        # ONNX Runtime runs fp32 (the more exact) and its lead grows with the image: torch must win clearly
        choice = "torch" if t_torch < TORCH_MARGIN * t_onnx else "onnx"
        log.info("--backend auto: torch %s %.3f s, onnx fp32 %.3f s per %d px input -> %s", precision, t_torch,
                 t_onnx, side, choice)
        _write_verdict(verdict_path, key, {"choice": choice, "torch_seconds": t_torch, "onnx_seconds": t_onnx,
                                           "probe": side})
        return ort if choice == "onnx" else torch_eng
    return ort if choice == "onnx" else make_torch()
