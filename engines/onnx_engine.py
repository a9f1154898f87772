"""The ONNX Runtime engine (`--backend onnx`): the exported one-step graph on the CPU or CUDA execution provider.

The graph is exported once per model / opset / shape mode (`engines.onnx_export`, verified against torch) and
cached next to the model file (`engines.cache`); later runs load the cached file.

Precision: the CPU provider runs fp32 only (ORT's CPU fp16 path has no fast kernels on x86: the tiny model ran
~4x slower than fp32 there), CUDA runs fp32 and fp16 (a float16 copy of the graph with float32 I/O; the norms,
softmax, resize and the VQ codebook lookup stay in fp32). bf16 is not offered (use the torch or tensorrt backend).
In fp16 every output tile is checked for NaN/Inf (image and latent) and bad tiles are recomputed with the fp32
graph, with one warning per engine.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.base.oom import is_out_of_memory_message
from tadsr_cli.engines import cache as engine_cache
from tadsr_cli.engines.base import NonFiniteTiles, check_tile_batch, finite_tiles
from tadsr_cli.engines.onnx_export import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    GRAPH_VERSION,
    QUANTIZER_SCOPE,
    check_tile,
    default_tile,
    export_onnx,
    physical_cores,
    shape_mode_name,
)

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
PRECISIONS = ("fp32", "bf16", "fp16")
OPTIONS = frozenset({"model_path", "opset", "dynamic", "tile", "cache_dir", "threads", "verify"})  # of create()
FP16_KEEP_FP32_OPS = ["InstanceNormalization", "Softmax", "Resize", "ArgMin", "ReduceSum", "Pow", "Einsum"]


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise EngineUnavailableError("the onnx backend needs onnxruntime: pip install onnxruntime") from exc
    return ort


def select_provider(device: str, available: list[str]) -> tuple[str, int]:
    """(provider, device id) for `device` ("auto", "cpu", "cuda", "cuda:N") given ORT's available providers."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        if CUDA_EP in available and torch.cuda.is_available():
            return CUDA_EP, 0
        return CPU_EP, 0
    if name == "cpu":
        return CPU_EP, 0
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        if CUDA_EP not in available:
            raise EngineUnavailableError(
                "device 'cuda' with --backend onnx needs ONNX Runtime's CUDA provider: pip install onnxruntime-gpu "
                f"(this onnxruntime offers: {', '.join(available)})"
            )
        return CUDA_EP, int(m.group(1) or 0)
    if name == "mps":
        raise EngineUnavailableError("the onnx backend runs on cpu or cuda; use --backend torch on Apple MPS")
    raise ConfigError(f"unknown device {device!r} (cpu, cuda, cuda:N, auto)")


def check_precision(precision: str, provider: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16":
        raise EngineUnavailableError("bf16 is not supported by the onnx backend; use fp32/fp16, or --backend torch")
    if precision == "fp16" and provider == CPU_EP:
        raise EngineUnavailableError(
            "fp16 on the onnx CPU provider is slower than fp32 (no fp16 kernels); use --precision fp32 "
            "(or --backend torch --precision bf16)"
        )


def _shrink_arena() -> Any:
    """Run options that hand the CPU arena's unused memory back after each call: the arena otherwise keeps the
    peak of the largest image (1.3 GB at 960x540 with the shipped model) through the encoding that follows."""
    ort = _import_ort()
    opts = ort.RunOptions()
    opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return opts


def session_options(threads: int | None = None) -> Any:
    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads else physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return opts


def ensure_onnx(
    model: Any,
    *,
    model_path: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    tile: int | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = True,
    model_sha: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Path, Any]:
    """The cached fp32 graph for these settings, exported (and verified) first when missing.

    Returns `(path, report)`; `report` is the `ExportReport` of a fresh export, or None when the cache was reused.
    """
    multiple = int(model.lq_multiple)
    tile = check_tile(default_tile(multiple) if tile is None else tile, multiple)
    mode = shape_mode_name(dynamic, tile)
    sha = model_sha or engine_cache.model_fingerprint(model, model_path)
    path = engine_cache.onnx_cache_path(model, model_path, opset, f"{mode}-g{GRAPH_VERSION}", "fp32",
                                        root=cache_dir, model_sha=sha)
    if path.is_file() and path.stat().st_size > 0:
        return path, None
    log.warning("exporting the model to ONNX (one time; cached as %s)", path)
    report = export_onnx(model, path, tile=tile, dynamic=dynamic, opset=opset, verify=verify, tolerance=tolerance,
                         metadata={"model_sha256": sha}, log=log.info)
    return path, report


def ensure_fp16(src: Path) -> Path:
    """A float16 copy of the fp32 graph `src` (float32 I/O, sensitive ops kept in fp32), cached beside it."""
    dst = src.with_name(src.name.replace("-fp32.onnx", "-fp16.onnx"))
    if dst == src:
        dst = src.with_suffix(".fp16.onnx")
    if dst.is_file() and dst.stat().st_size > 0:
        return dst
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from tadsr_cli.base.atomic import atomic_write_path

    proto = onnx.load(str(src))
    keep_nodes = [n.name for n in proto.graph.node if n.name.startswith(QUANTIZER_SCOPE)]
    half = convert_float_to_float16(proto, keep_io_types=True, op_block_list=FP16_KEEP_FP32_OPS,
                                    node_block_list=keep_nodes)
    with atomic_write_path(dst) as tmp:
        onnx.save(half, str(tmp))
    return dst


class OnnxEngine:
    """Runs the exported one-step graph with ONNX Runtime. See the module docstring."""

    name = "onnx"

    def __init__(
        self,
        model: Any,
        device: str = "auto",
        precision: str = "fp32",
        *,
        model_path: str | Path | None = None,
        opset: int = DEFAULT_OPSET,
        dynamic: bool = True,
        tile: int | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        ort = _import_ort()
        self.provider, self.device_id = select_provider(device, list(ort.get_available_providers()))
        check_precision(precision, self.provider)
        self.precision = precision
        self.scale = int(model.scale)
        self.lq_multiple = int(model.lq_multiple)
        self.latent_channels = int(model.latent_channels)
        self.threads = int(threads) if threads else physical_cores()
        model_path = model_path if model_path is not None else getattr(model, "source_path", None)
        tile = check_tile(default_tile(self.lq_multiple) if tile is None else tile, self.lq_multiple)
        self.onnx_path, self.export_report = ensure_onnx(
            model, model_path=model_path, opset=opset, dynamic=dynamic, tile=tile, cache_dir=cache_dir,
            verify=verify,
        )
        self.reused_cache = self.export_report is None
        self.static_size: int | None = None if dynamic else tile
        run_path = ensure_fp16(self.onnx_path) if precision == "fp16" else self.onnx_path
        self.session = self._session(run_path)
        self._fp32_session: Any = self.session if precision == "fp32" else None
        self._nonfinite = NonFiniteTiles()
        self._model = model  # for lockstep_engine()
        self._lockstep: Any = None

    def __repr__(self) -> str:
        return f"OnnxEngine(provider={self.provider}, precision={self.precision}, file={self.onnx_path.name})"

    # ------------------------------------------------------------------------------------------------------
    def _providers(self) -> list[Any]:
        if self.provider == CUDA_EP:
            return [(CUDA_EP, {"device_id": self.device_id, "arena_extend_strategy": "kSameAsRequested"}), CPU_EP]
        return [CPU_EP]

    def _session(self, path: Path) -> Any:
        ort = _import_ort()
        session = ort.InferenceSession(str(path), session_options(self.threads), providers=self._providers())
        if self.provider == CUDA_EP and CUDA_EP not in session.get_providers():
            raise EngineUnavailableError("ONNX Runtime could not start its CUDA provider (CUDA/cuDNN libraries?)")
        return session

    def _fp32(self) -> Any:
        if self._fp32_session is None:
            self._fp32_session = self._session(self.onnx_path)
        return self._fp32_session

    def _check(self, lq: Tensor, noise: Tensor) -> None:
        check_tile_batch(lq, noise, self.latent_channels, self.lq_multiple)
        h, w = int(lq.shape[2]), int(lq.shape[3])
        if self.static_size is not None and (h, w) != (self.static_size, self.static_size):
            raise ConfigError(f"this ONNX graph is static {self.static_size}x{self.static_size}; got {h}x{w}")

    @staticmethod
    def _call(session: Any, lq: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            hr, z = session.run(["hr", "latent"], {"lq": lq, "noise": noise}, _shrink_arena())
        except Exception as exc:  # onnxruntime raises its own exception types
            if is_out_of_memory_message(str(exc)):
                raise RuntimeError(f"out of memory in ONNX Runtime: {str(exc).splitlines()[0]}") from exc
            raise
        return hr, z

    def lockstep_engine(self) -> Any:
        """Tiled runs with whole-image GroupNorm statistics suspend the network at every norm until all tiles
        have delivered their moments (`tadsr_cli.pipeline.lockstep`); one ONNX Runtime call cannot be suspended,
        so those runs use the torch engine of the same model (fp32, same output to ~86 dB). Whole-image runs
        (one tile: `--tile auto` whenever the image fits) stay on ONNX Runtime."""
        if self._lockstep is None:
            from tadsr_cli.engines.torch_engine import TorchEngine

            device = f"cuda:{self.device_id}" if self.provider == CUDA_EP else "cpu"
            self._lockstep = TorchEngine(self._model, device=device, precision="fp32")
        return self._lockstep

    def run(self, lq: Tensor, noise: Tensor) -> Tensor:
        self._check(lq, noise)
        lq_np = np.ascontiguousarray(lq.detach().to("cpu", torch.float32).numpy())
        nz_np = np.ascontiguousarray(noise.detach().to("cpu", torch.float32).numpy())
        hr, z = self._call(self.session, lq_np, nz_np)
        ok = finite_tiles(hr, z)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            self._nonfinite.found(self.precision, len(bad))
            hr32, z32 = self._call(self._fp32(), lq_np[bad], nz_np[bad])
            if not finite_tiles(hr32, z32).all():
                raise self._nonfinite.still_bad()
            hr = np.array(hr, dtype=np.float32, copy=True)
            hr[bad] = hr32
        return torch.from_numpy(np.asarray(hr, dtype=np.float32))


def create(model: Any, *, device: str = "auto", precision: str = "fp32", steps: int = 1,
           sampler: str = "deterministic", **opts: Any) -> OnnxEngine:
    """`engines.create_engine("onnx", ...)`. Options: model_path, opset, dynamic, tile, cache_dir, threads,
    verify (`seed` is accepted and ignored: the noise comes in as an input)."""
    if int(steps) != 1:
        raise ConfigError(f"the onnx backend runs the one-step graph only (--steps 1), got --steps {steps}; "
                          "use --backend torch for teacher sampling")
    opts.pop("seed", None)
    unknown = sorted(set(opts) - OPTIONS)
    if unknown:
        raise ConfigError(f"onnx engine: unknown option(s) {unknown}")
    return OnnxEngine(model, device=device, precision=precision, **opts)
