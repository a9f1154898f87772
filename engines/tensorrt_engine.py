"""The TensorRT engine (`--backend tensorrt`, extra `tadsr[tensorrt]`), written against the TensorRT 10 Python API.

Flow: the one-step graph is exported to ONNX once (dynamic shapes, `engines.onnx_engine.ensure_onnx`), parsed by
`trt.OnnxParser`, and built with one optimisation profile covering the tiles in use (`engines.tensorrt_plan`:
min `(1, m, m)`, opt `(batch, tile, tile)`, max the bucketed tile side), in fp32, fp16 or bf16 (`BuilderFlag`),
with a timing cache shared by all builds on this GPU + TensorRT version. The serialized engine is cached next to
the model, keyed by model sha256, profile, precision, TensorRT version and GPU name, with a JSON sidecar; any
cached engine whose profile contains a requested shape is reused, so new image resolutions never rebuild.
Builds show progress (`IProgressMonitor` phases, else a spinner with the elapsed time).

In fp16/bf16, normalisation, reductions and the VQ codebook lookup (`/quantizer/` layers) are kept in fp32
(`PREFER_PRECISION_CONSTRAINTS`), and every output tile is checked for NaN/Inf (image and latent): bad tiles are
recomputed by the torch engine in fp32 on the same GPU, with one warning per engine.

Nothing here runs without TensorRT and a CUDA GPU; the pure logic lives in `engines.tensorrt_plan` (tested).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.engines import cache as engine_cache
from tadsr_cli.engines import tensorrt_plan as plan
from tadsr_cli.engines.base import NonFiniteTiles
from tadsr_cli.engines.onnx_export import DEFAULT_OPSET, GRAPH_VERSION, OUTPUT_NAMES

log = logging.getLogger(__name__)

TRT_MISSING = "TensorRT is not installed: pip install 'tadsr[tensorrt]' on a machine with an NVIDIA GPU"
MIN_TRT = (10, 0)


def import_tensorrt() -> Any:
    """`import tensorrt`, or `EngineUnavailableError` with the install hint (also for the PyPI placeholder)."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or the placeholder package failing to fetch its wheels
        raise EngineUnavailableError(TRT_MISSING) from exc
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        raise EngineUnavailableError(TRT_MISSING)
    if plan.parse_version(trt.__version__)[:2] < MIN_TRT:
        raise EngineUnavailableError(f"TensorRT {trt.__version__} is too old: tadsr needs TensorRT 10 or newer")
    return trt


def _cuda_device(device: str) -> torch.device:
    name = (device or "auto").strip().lower()
    if not torch.cuda.is_available():
        raise EngineUnavailableError("the tensorrt backend needs an NVIDIA GPU (CUDA); none is available")
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device())
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}") from exc
    if dev.type != "cuda":
        raise EngineUnavailableError(f"the tensorrt backend runs on CUDA GPUs only, not {device!r}")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise EngineUnavailableError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return torch.device("cuda", index)


# ---- build ----------------------------------------------------------------------------------------------------
def _make_monitor(trt: Any, state: plan.BuildProgress) -> Any | None:
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            state.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return state.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            state.phase_finish(phase_name)

    return Monitor()


@contextlib.contextmanager
def _progress_display(state: plan.BuildProgress, title: str, enabled: bool) -> Iterator[None]:
    """A rich spinner whose text follows the build phases (or just the elapsed time), on stderr."""
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False, refresh_per_second=4) as bar:
        task = bar.add_task(title, total=None)
        stop = False

        def refresh() -> None:
            import time

            while not stop:
                bar.update(task, description=f"{title}: {state.describe()}")
                time.sleep(0.25)

        import threading

        thread = threading.Thread(target=refresh, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop = True
            thread.join(timeout=1.0)
            bar.update(task, description=f"{title}: done ({state.describe()})")


def build_engine(
    trt: Any,
    onnx_path: Path,
    spec: plan.EngineSpec,
    latent_channels: int,
    timing_cache: Path,
    workspace: int,
    compute_capability: tuple[int, int] | None = None,
    show_progress: bool = True,
) -> bytes:
    """Build a serialized engine for `spec` from the ONNX graph; updates the timing cache file."""
    from tadsr_cli.base.atomic import atomic_write_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineUnavailableError(f"TensorRT could not parse {onnx_path.name}: {errors or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    flags = plan.precision_flags(spec.precision, compute_capability)
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if flags:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        float_types = {trt.float32, trt.float16, getattr(trt, "bfloat16", trt.float16)}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if not plan.keep_fp32(layer.name, layer.type.name):
                continue
            outs = [layer.get_output(j) for j in range(layer.num_outputs)]
            if outs and all(o.dtype in float_types for o in outs):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)

    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in spec.profile.input_shapes(latent_channels).items():
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)

    cache_blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    tcache = config.create_timing_cache(cache_blob)
    if not config.set_timing_cache(tcache, False):  # mismatching cache (other GPU / version): start afresh
        tcache = config.create_timing_cache(b"")
        config.set_timing_cache(tcache, True)

    state = plan.BuildProgress()
    monitor = _make_monitor(trt, state)
    if monitor is not None:
        config.progress_monitor = monitor
    title = f"building TensorRT engine ({spec.precision}, {spec.profile.tag()})"
    log.warning("%s: one time per model/profile/precision/GPU; cached afterwards", title)
    with _progress_display(state, title, show_progress and sys.stderr is not None):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineUnavailableError("TensorRT engine build failed (see the TensorRT messages above)")
    with contextlib.suppress(Exception), atomic_write_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


# ---- engine ---------------------------------------------------------------------------------------------------
class _Loaded:
    """A deserialized engine + its execution context."""

    def __init__(self, runtime: Any, record: plan.EngineRecord) -> None:
        self.record = record
        self.engine = runtime.deserialize_cuda_engine(record.path.read_bytes())
        if self.engine is None:
            raise EngineUnavailableError(f"TensorRT could not load {record.path.name} (stale or corrupt; delete it)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("out of memory: TensorRT could not create an execution context")
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        missing = {"lq", "noise", *OUTPUT_NAMES} - names
        if missing:
            raise EngineUnavailableError(f"{record.path.name} lacks tensors {sorted(missing)}")


class TensorRTEngine:
    """Runs the one-step graph with TensorRT. See the module docstring."""

    name = "tensorrt"

    def __init__(
        self,
        model: Any,
        device: str = "auto",
        precision: str = "fp16",
        *,
        tile: int | str = 128,
        batch: int = 4,
        model_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        opset: int = DEFAULT_OPSET,
        show_progress: bool = True,
        prebuild: bool = True,
    ) -> None:
        self.trt = import_tensorrt()
        self.device = _cuda_device(device)
        self.precision = precision
        props = torch.cuda.get_device_properties(self.device)
        self.compute_capability = (int(props.major), int(props.minor))
        plan.precision_flags(precision, self.compute_capability)  # validates early
        self.gpu_name = str(props.name)
        self.total_memory = int(props.total_memory)
        self.scale = int(model.scale)
        self.lq_multiple = int(model.lq_multiple)
        self.latent_channels = int(model.latent_channels)
        self.opset = int(opset)
        self.show_progress = show_progress
        self.model = model
        self.model_path = model_path if model_path is not None else getattr(model, "source_path", None)
        self.cache_dir = cache_dir
        self.model_sha = engine_cache.model_fingerprint(model, self.model_path)
        self.folder = engine_cache.cache_root(self.model_path, cache_dir)
        self.stem = engine_cache.model_stem(model, self.model_path)
        self.runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self._loaded: dict[Path, _Loaded] = {}
        self._fallback: Any = None
        self._nonfinite = NonFiniteTiles()
        self.builds = 0
        # `--tile auto`/0: no prebuilt profile (engines are built for the shapes that come)
        fixed_tile = tile if isinstance(tile, int) else 0
        self.default_profile = plan.plan_profile(fixed_tile, int(batch), self.lq_multiple) if fixed_tile else None
        if prebuild and self.default_profile is not None:
            b, h, w = self.default_profile.opt
            self._get(b, h, w, self.default_profile)

    def __repr__(self) -> str:
        return f"TensorRTEngine(gpu={self.gpu_name!r}, precision={self.precision}, folder={self.folder})"

    def spec(self, profile: plan.ShapeProfile) -> plan.EngineSpec:
        return plan.EngineSpec(model_sha256=self.model_sha, profile=profile, precision=self.precision,
                               trt_version=str(self.trt.__version__), gpu_name=self.gpu_name, opset=self.opset,
                               graph_version=GRAPH_VERSION)

    def _onnx(self) -> Path:
        from tadsr_cli.engines.onnx_engine import ensure_onnx

        # The export runs on the CPU (the graph is device-independent); the fp32 fallback moves the model back.
        path, _ = ensure_onnx(self.model, model_path=self.model_path, opset=self.opset, dynamic=True,
                              cache_dir=self.cache_dir, model_sha=self.model_sha)
        return path

    def _get(self, batch: int, h: int, w: int, profile: plan.ShapeProfile | None = None) -> _Loaded:
        want = self.spec(profile or plan.profile_for_shape(batch, h, w, self.lq_multiple))
        record = plan.choose_engine(plan.scan_engines(self.folder), want, batch, h, w)
        if record is None:
            path = self.folder / want.file_name(self.stem)
            blob = build_engine(
                self.trt, self._onnx(), want, self.latent_channels,
                self.folder / plan.timing_cache_name(want.trt_version, want.gpu_name),
                plan.workspace_bytes(self.total_memory), self.compute_capability, self.show_progress,
            )
            from tadsr_cli.base.atomic import atomic_write_path

            with atomic_write_path(path) as tmp:
                tmp.write_bytes(blob)
            plan.write_meta(path, want)
            self.builds += 1
            record = plan.EngineRecord(path, want)
        loaded = self._loaded.get(record.path)
        if loaded is None:
            loaded = self._loaded[record.path] = _Loaded(self.runtime, record)
        return loaded

    def _check(self, lq: Tensor, noise: Tensor) -> tuple[int, int, int]:
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq must be [B, 3, h, w], got {tuple(lq.shape)}")
        if noise.shape[0] != lq.shape[0] or noise.shape[1] != self.latent_channels or noise.shape[2:] != lq.shape[2:]:
            raise ValueError(
                f"noise must be [B, {self.latent_channels}, h, w] matching lq {tuple(lq.shape)}, got {tuple(noise.shape)}"
            )
        b, h, w = int(lq.shape[0]), int(lq.shape[2]), int(lq.shape[3])
        if h % self.lq_multiple or w % self.lq_multiple:
            raise ConfigError(f"LQ size {(h, w)} must be a multiple of {self.lq_multiple}; pad it first")
        return b, h, w

    def _execute(self, lq: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        b, h, w = int(lq.shape[0]), int(lq.shape[2]), int(lq.shape[3])
        loaded = self._get(b, h, w)
        ctx = loaded.context
        lq = lq.to(self.device, torch.float32).contiguous()
        noise = noise.to(self.device, torch.float32).contiguous()
        hr = torch.empty((b, 3, self.scale * h, self.scale * w), device=self.device, dtype=torch.float32)
        z = torch.empty((b, self.latent_channels, h, w), device=self.device, dtype=torch.float32)
        ctx.set_input_shape("lq", tuple(lq.shape))
        ctx.set_input_shape("noise", tuple(noise.shape))
        for name, t in (("lq", lq), ("noise", noise), ("hr", hr), ("latent", z)):
            ctx.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return hr, z

    def _torch_fp32(self) -> Any:
        if self._fallback is None:
            from tadsr_cli.engines.torch_engine import TorchEngine

            self._fallback = TorchEngine(self.model, device=str(self.device), precision="fp32")
        return self._fallback

    def lockstep_engine(self) -> Any:
        """Tiled runs with whole-image GroupNorm statistics need the network suspended at every norm
        (`tadsr_cli.pipeline.lockstep`), which a built engine cannot be: they run on the torch fp32 engine."""
        return self._torch_fp32()

    def run(self, lq: Tensor, noise: Tensor) -> Tensor:
        self._check(lq, noise)
        hr, z = self._execute(lq, noise)
        ok = torch.isfinite(hr).flatten(1).all(1) & torch.isfinite(z).flatten(1).all(1)
        if not bool(ok.all()):
            bad = (~ok).nonzero().flatten().cpu()
            self._nonfinite.found(self.precision, len(bad))
            fixed = self._torch_fp32().run(lq[bad], noise[bad])
            hr = hr.clone()
            hr[bad.to(hr.device)] = fixed.to(hr.device)
        return hr.float().cpu()


def prebuild(model: Any, *, device: str = "auto", precision: str = "fp16", tile: int = 128, batch: int = 4,
             model_path: str | Path | None = None, cache_dir: str | Path | None = None,
             opset: int = DEFAULT_OPSET, show_progress: bool = True) -> TensorRTEngine:
    """`tadsr export --format tensorrt`: build (or find) the engine for `tile`/`batch` and return it."""
    return TensorRTEngine(model, device=device, precision=precision, tile=tile, batch=batch, model_path=model_path,
                          cache_dir=cache_dir, opset=opset, show_progress=show_progress, prebuild=True)


def create(model: Any, *, device: str = "auto", precision: str = "fp32", steps: int = 1,
           sampler: str = "deterministic", **opts: Any) -> TensorRTEngine:
    """`engines.create_engine("tensorrt", ...)`. Options: tile, batch, model_path, cache_dir, opset,
    show_progress, prebuild (`seed` is accepted and ignored)."""
    if int(steps) != 1:
        raise ConfigError(f"the tensorrt backend runs the one-step graph only (--steps 1), got --steps {steps}")
    opts.pop("seed", None)
    known = {"tile", "batch", "model_path", "cache_dir", "opset", "show_progress", "prebuild"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError(f"tensorrt engine: unknown option(s) {unknown}")
    import_tensorrt()  # the clear "not installed" error before anything else
    return TensorRTEngine(model, device=device, precision=precision, **opts)
