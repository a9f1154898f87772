"""The OpenVINO engine (`--backend openvino`): the exported one-step graph compiled by OpenVINO for the CPU.

The graph is the cached, verified ONNX export (`engines.onnx_export`, shared with `--backend onnx`); OpenVINO reads
it directly and compiles it once with dynamic batch and spatial shapes, which serves every tile, image and frame
size. A compile per static shape ran 1.2-1.3x faster (`benchmarks/bench_openvino.py`, `shapes`) but its output
differs from the dynamic compile's (59 dB apart in bf16): an image's pixels would depend on which sizes came before
it in the run (same seed, other output), so every call runs the one dynamic compile. OpenVINO's own model cache
(`CACHE_DIR`, a folder beside the export) makes later runs' compile a file read.

Precision: `bf16` sets OpenVINO's inference precision hint to bf16, offered only where the CPU runs bf16 natively
(AMX / AVX512-BF16: OpenVINO lists `BF16` among its optimisation capabilities); `fp32` runs f32. fp16 is not
offered on the CPU. In bf16 every output tile is checked for NaN/Inf and bad tiles are recomputed with an f32
compile, with one warning per engine, as the other backends do.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.base.oom import is_out_of_memory_message
from tadsr_cli.engines.base import NonFiniteTiles, check_tile_batch, finite_tiles
from tadsr_cli.engines.onnx_engine import ensure_onnx
from tadsr_cli.engines.onnx_export import DEFAULT_OPSET, check_tile, default_tile

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
OPTIONS = frozenset({"model_path", "opset", "tile", "cache_dir", "threads", "verify"})  # of create()
CACHE_SUBDIR = "openvino-cache"


def import_openvino() -> Any:
    """The `openvino` module, or EngineUnavailableError saying how to get it.

    `import openvino` also loads its model-conversion tools, which start OpenVINO's usage telemetry (a stats file in
    ~/intel, events sent from a forked process) unless the user opted out. tadsr never converts models with those
    tools; with `openvino_telemetry` hidden during the import, they load their built-in no-op stand-in instead."""
    if "openvino" in sys.modules and sys.modules["openvino"] is not None:
        return sys.modules["openvino"]
    hide = "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # makes its import raise ImportError
    try:
        import openvino
    except ImportError as exc:
        raise EngineUnavailableError("the openvino backend needs OpenVINO: pip install openvino") from exc
    finally:
        if hide and sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]
    return openvino


_CORE: Any = None


def shared_core() -> Any:
    """One OpenVINO `Core` per process, never released: a Core destroyed while models it compiled are alive (the
    order Python's garbage collector may pick for a cycle) can unload the CPU plugin under them and crash."""
    global _CORE
    ov = import_openvino()  # raises where OpenVINO is missing, also after a first Core (tests hide it)
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def cpu_has_native_bf16(core: Any | None = None) -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (it lists BF16 only with AVX512-BF16 or AMX)."""
    try:
        core = core if core is not None else shared_core()
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # not installed, no CPU plugin: no bf16
        return False


def check_device(device: str) -> None:
    name = (device or "auto").strip().lower()
    if name not in ("auto", "cpu"):
        raise EngineUnavailableError(
            f"the openvino backend runs on the CPU (got --device {device}); use --backend torch or tensorrt on a GPU"
        )


def check_precision(precision: str, native_bf16: bool) -> None:
    if precision not in PRECISIONS:
        raise EngineUnavailableError(
            f"precision {precision!r} is not offered by the openvino backend on the CPU; use fp32 or bf16"
        )
    if precision == "bf16" and not native_bf16:
        raise EngineUnavailableError(
            "this CPU has no native bf16 (AMX / AVX512-BF16): OpenVINO would emulate it; use --precision fp32"
        )


def _cache_folder(onnx_path: Path) -> Path | None:
    """OpenVINO's compiled-model cache beside the export, or None where it cannot be written (no cache then)."""
    folder = onnx_path.parent / CACHE_SUBDIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        log.warning("OpenVINO's compile cache is off: %s is not writable (%s)", folder, exc.strerror or exc)
        return None
    return folder


class OpenVinoEngine:
    """Runs the exported one-step graph with OpenVINO on the CPU. See the module docstring."""

    name = "openvino"

    def __init__(
        self,
        model: Any,
        device: str = "auto",
        precision: str = "fp32",
        *,
        model_path: str | Path | None = None,
        opset: int = DEFAULT_OPSET,
        tile: int | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        check_device(device)
        self._core = shared_core()
        check_precision(precision, cpu_has_native_bf16(self._core))
        self.precision = precision
        self.scale = int(model.scale)
        self.lq_multiple = int(model.lq_multiple)
        self.latent_channels = int(model.latent_channels)
        # torch's thread count is what --threads sets for every backend
        self.threads = int(threads) if threads else torch.get_num_threads()
        model_path = model_path if model_path is not None else getattr(model, "source_path", None)
        tile = check_tile(default_tile(self.lq_multiple) if tile is None else tile, self.lq_multiple)
        self.onnx_path, self.export_report = ensure_onnx(
            model, model_path=model_path, opset=opset, dynamic=True, tile=tile, cache_dir=cache_dir, verify=verify,
        )
        self.cache_folder = _cache_folder(self.onnx_path)
        # compiled models held as long as their requests: a request outliving its model is not a supported order
        self._compiled = [self._compile(precision)]
        self._request = self._compiled[0].create_infer_request()
        self._fp32: Any = self._request if precision == "fp32" else None
        self._nonfinite = NonFiniteTiles()
        self._model = model  # for lockstep_engine()
        self._lockstep: Any = None

    def __repr__(self) -> str:
        return f"OpenVinoEngine(precision={self.precision}, threads={self.threads}, file={self.onnx_path.name})"

    # ------------------------------------------------------------------------------------------------------
    def _compile(self, precision: str) -> Any:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time: all threads on it
        }
        if self.cache_folder is not None:
            config["CACHE_DIR"] = str(self.cache_folder)
        try:
            return self._core.compile_model(str(self.onnx_path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            if self.cache_folder is not None and isinstance(exc, RuntimeError) and "cache" in str(exc).lower():
                log.warning("OpenVINO could not use its compile cache (%s); compiling without it",
                            str(exc).splitlines()[0])
                self.cache_folder = None
                return self._compile(precision)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineUnavailableError(f"OpenVINO could not compile the model: {first}") from exc

    def _fp32_request(self) -> Any:
        if self._fp32 is None:
            self._compiled.append(self._compile("fp32"))
            self._fp32 = self._compiled[-1].create_infer_request()
        return self._fp32

    @staticmethod
    def _call(request: Any, lq: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            request.infer({"lq": lq, "noise": noise})
        except Exception as exc:
            if is_out_of_memory_message(str(exc)) or "bad_alloc" in str(exc):
                raise RuntimeError(f"out of memory in OpenVINO: {str(exc).splitlines()[0]}") from exc
            raise
        # copies: the request's output buffers are reused by its next call
        return (np.array(request.get_tensor("hr").data, copy=True),
                np.array(request.get_tensor("latent").data, copy=True))

    def lockstep_engine(self) -> Any:
        """Tiled runs with whole-image GroupNorm statistics pause the network at every norm until all tiles have
        delivered their moments (`tadsr_cli.pipeline.lockstep`); one OpenVINO call cannot pause, so those runs use
        the torch engine of the same model (fp32), as `--backend onnx` does."""
        if self._lockstep is None:
            from tadsr_cli.engines.torch_engine import TorchEngine

            self._lockstep = TorchEngine(self._model, device="cpu", precision="fp32")
        return self._lockstep

    def run(self, lq: Tensor, noise: Tensor) -> Tensor:
        check_tile_batch(lq, noise, self.latent_channels, self.lq_multiple)
        lq_np = np.ascontiguousarray(lq.detach().to("cpu", torch.float32).numpy())
        nz_np = np.ascontiguousarray(noise.detach().to("cpu", torch.float32).numpy())
        hr, z = self._call(self._request, lq_np, nz_np)
        ok = finite_tiles(hr, z)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            self._nonfinite.found(self.precision, len(bad))
            hr32, z32 = self._call(self._fp32_request(), lq_np[bad], nz_np[bad])
            if not finite_tiles(hr32, z32).all():
                raise self._nonfinite.still_bad()
            hr[bad] = hr32
        return torch.from_numpy(hr)


def create(model: Any, *, device: str = "auto", precision: str = "fp32", steps: int = 1,
           sampler: str = "deterministic", **opts: Any) -> OpenVinoEngine:
    """`engines.create_engine("openvino", ...)`. Options: model_path, opset, tile, cache_dir, threads, verify
    (`seed` is accepted and ignored: the noise comes in as an input)."""
    if int(steps) != 1:
        raise ConfigError(f"the openvino backend runs the one-step graph only (--steps 1), got --steps {steps}; "
                          "use --backend torch for teacher sampling")
    opts.pop("seed", None)
    unknown = sorted(set(opts) - OPTIONS)
    if unknown:
        raise ConfigError(f"openvino engine: unknown option(s) {unknown}")
    return OpenVinoEngine(model, device=device, precision=precision, **opts)


def save_ir(model: Any, xml_path: Path, *, model_path: str | Path | None = None, cache_dir: str | Path | None = None,
            opset: int = DEFAULT_OPSET) -> Path:
    """Write the one-step graph as OpenVINO IR (`.xml` + `.bin`, f32 weights) for OpenVINO's own tools."""
    from tadsr_cli.base.atomic import atomic_write_path

    ov = import_openvino()
    onnx_path, _ = ensure_onnx(model, model_path=model_path, opset=opset, dynamic=True, cache_dir=cache_dir)
    graph = shared_core().read_model(str(onnx_path))
    xml_path = Path(xml_path)
    bin_path = xml_path.with_suffix(".bin")
    # both files through temp names + rename: never a half-written pair
    with atomic_write_path(bin_path) as tmp_bin, atomic_write_path(xml_path) as tmp_xml:
        written_bin = tmp_xml.with_suffix(".bin")  # OpenVINO names the weights after the .xml
        try:
            ov.save_model(graph, str(tmp_xml), compress_to_fp16=False)
            written_bin.replace(tmp_bin)
        finally:
            written_bin.unlink(missing_ok=True)
    return xml_path
