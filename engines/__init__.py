"""One-step inference backends behind one small interface (`engines.base.Engine`).

`create_engine(backend, model, ...)` builds one. Backends live in `engines/<backend>_engine.py` and are imported
lazily (onnxruntime / tensorrt are optional): each such module exposes
`create(model, *, device, precision, steps, sampler, **opts) -> Engine`. `auto` (`engines/auto.py`) picks
ONNX Runtime or torch by a cached measurement.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tadsr_cli.base.errors import EngineUnavailableError
from tadsr_cli.engines.base import Engine

if TYPE_CHECKING:
    from tadsr_cli.models.sr_model import DiffusionSR

__all__ = ["BACKENDS", "Engine", "create_engine"]

# backend name -> module (relative to this package) exposing `create(...)`.
BACKENDS: dict[str, str] = {
    "auto": "tadsr_cli.engines.auto",
    "torch": "tadsr_cli.engines.torch_engine",
    "onnx": "tadsr_cli.engines.onnx_engine",
    "openvino": "tadsr_cli.engines.openvino_engine",
    "tensorrt": "tadsr_cli.engines.tensorrt_engine",
}


def create_engine(backend: str, model: DiffusionSR, device: str = "auto", precision: str = "fp32",
                  steps: int = 1, sampler: str = "deterministic", **opts: Any) -> Engine:
    """Build the engine `backend` ("auto", "torch", "onnx", "openvino", "tensorrt") for `model`.

    Raises `EngineUnavailableError` for an unknown backend or one that cannot run on this machine, and
    `ConfigError` for invalid options (steps, sampler, precision).
    """
    key = backend.lower().strip()
    module_name = BACKENDS.get(key)
    if module_name is None:
        raise EngineUnavailableError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise EngineUnavailableError(f"backend {key!r} is not available in this build of tadsr") from exc
        raise EngineUnavailableError(
            f"backend {key!r} needs the Python package {exc.name!r}, which is not installed"
        ) from exc
    return module.create(model, device=device, precision=precision, steps=steps, sampler=sampler, **opts)
