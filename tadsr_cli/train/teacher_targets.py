"""The frozen teacher's no-grad work in a TAD-SR run, on the fastest engine and precision the recipe allows:
its deterministic T-step targets, and the x0 predictions of HFSD.

Engines (`targets.engine` x `targets.precision`, recipe section `targets`):

* ``torch-fp32``: the teacher itself (`DiffusionSR.sample_latent`) in fp32: the reference numbers (and those of
  earlier versions with `amp: none`); ``torch-amp``: the same under the run's autocast (a GPU's bf16);
* ``torch-bf16``: a copy of the teacher cast to bf16 once (`engines.fast_cpu.make_fast_copy`: no per-call weight
  casts, channels_last where the run uses it), the sampler's state kept in fp32;
* ``openvino-bf16`` / ``openvino-fp32``: the teacher's denoiser converted to OpenVINO once and compiled per input
  shape in bf16 (static shapes are faster; f32 keeps dynamic ones), the sampler's state kept in fp32 in torch.

Measured on this 2-core CPU (AVX512-BF16, no AMX), 15 steps for a batch of 8 LQ 32x32, CPU seconds: torch fp32
2.16, torch bf16 autocast 1.34, torch bf16 copy 1.17-1.24, OpenVINO bf16 (static shape) 0.85; the targets of every
bf16 engine stay ~64 dB PSNR from fp32's (bench_training.py reports both numbers).

Thread safety: the targets are computed in a background thread (distill.py) while the main thread runs HFSD; the
OpenVINO engine keeps one compiled model (own executor) per thread and shape.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from tadsr_cli.base.errors import EngineUnavailableError, RecipeError, TrainingError
from tadsr_cli.models import sampling
from tadsr_cli.train.precision import Amp, cpu_has_fast_bf16

__all__ = ["TargetsAhead", "TeacherInference", "choose_engine"]


def _openvino_bf16() -> bool:
    try:
        from tadsr_cli.engines.openvino_engine import cpu_has_native_bf16

        return cpu_has_native_bf16()
    except ImportError:
        return False


def _openvino_available() -> bool:
    try:
        from tadsr_cli.engines.openvino_engine import import_openvino

        import_openvino()
    except (ImportError, EngineUnavailableError):
        return False
    return True


def choose_engine(engine: str, precision: str, amp: Amp) -> str:
    """The engine name for the recipe's `targets.engine` / `targets.precision` and the run's `amp`."""
    device = amp.device
    if device.type != "cpu":
        if engine == "openvino":
            raise RecipeError("targets.engine: openvino runs on the CPU; use torch (or auto) on a GPU")
        if precision == "fp32" or amp.mode == "none":
            if precision == "bf16":
                raise RecipeError("targets.precision: bf16 on a GPU needs `amp: bf16`")
            return "torch-fp32"
        return "torch-amp"  # the run's autocast (bf16 or fp16), as before
    if precision == "auto":
        precision = "bf16" if amp.mode == "bf16" else "fp32"
    if precision == "fp32":
        if engine == "openvino":
            return "openvino-fp32"
        return "torch-fp32"
    # bf16 on a CPU
    if engine == "auto":
        engine = "openvino" if _openvino_available() and _openvino_bf16() else "torch"
    if engine == "openvino":
        if not _openvino_available():
            raise RecipeError("targets.engine: openvino is not installed (pip install openvino)")
        if not _openvino_bf16():
            raise RecipeError("targets.precision: bf16 with OpenVINO needs a CPU with native bf16; use fp32")
        return "openvino-bf16"
    if not cpu_has_fast_bf16():
        raise RecipeError("targets.precision: bf16 needs a CPU with native bf16 (AVX512-BF16 / AMX); use fp32")
    return "torch-bf16"


class _DenoiserCall(nn.Module):
    """`denoiser(x, t, lq=lq)` with positional inputs (what OpenVINO's converter traces)."""

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        return self.denoiser(x, t, lq=lq)


class _OpenVinoDenoiser:
    """The teacher's denoiser in OpenVINO: converted once, compiled per (thread, input shape)."""

    MAX_COMPILES = 8

    def __init__(self, denoiser: nn.Module, precision: str, threads: int) -> None:
        from tadsr_cli.engines.openvino_engine import import_openvino, shared_core

        ov = import_openvino()
        self.ov = ov
        self.denoiser = denoiser
        self.precision = precision
        self.threads = max(1, int(threads))
        self.core = shared_core()
        self.graph: Any = None
        self.lock = threading.Lock()
        self.compiled: dict[tuple[int, tuple[int, ...], tuple[int, ...]], Any] = {}
        self.local = threading.local()

    def _compile(self, x: Tensor, lq: Tensor) -> Any:
        ov = self.ov
        with self.lock:
            if self.graph is None:
                example = (x.float(), torch.zeros(x.shape[0], dtype=torch.long), lq.float())
                # the converter traces with torch.jit (deprecation and tracer warnings, harmless here: the graph is
                # checked against the fp32 teacher by the tests and bench_training.py)
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.graph = ov.convert_model(_DenoiserCall(self.denoiser).eval(), example_input=example)
            graph = self.graph.clone()
        if self.precision == "bf16":
            # static shapes: 1.17x faster than dynamic ones (OpenVINO 2026.4 segfaults compiling them in f32)
            shapes = (list(x.shape), [x.shape[0]], list(lq.shape))
            graph.reshape({graph.input(i): ov.PartialShape(shape) for i, shape in enumerate(shapes)})
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        return self.core.compile_model(graph, "CPU", config)

    def __call__(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        key = (threading.get_ident(), tuple(x.shape), tuple(lq.shape))
        requests = getattr(self.local, "requests", None)
        if requests is None:
            requests = self.local.requests = {}
        request = requests.get(key)
        if request is None:
            if len(requests) >= self.MAX_COMPILES:
                requests.clear()
            request = requests[key] = self._compile(x, lq).create_infer_request()
        out = request.infer([x.detach().float().contiguous().numpy(), t.detach().to(torch.long).numpy(),
                             lq.detach().float().contiguous().numpy()])
        return torch.from_numpy(out[0].copy())


class TeacherInference:
    """The teacher's no-grad predictions on one engine (`choose_engine`); every output is float32."""

    def __init__(self, teacher: Any, amp: Amp, engine: str = "torch-fp32", threads: int | None = None) -> None:
        self.teacher = teacher
        self.amp = amp
        self.name = engine
        self.fast: Any = None
        self.ov: _OpenVinoDenoiser | None = None
        if engine == "torch-bf16":
            from tadsr_cli.engines.fast_cpu import make_fast_copy

            self.fast = make_fast_copy(teacher, torch.bfloat16, channels_last=amp.channels_last)
        elif engine.startswith("openvino-"):
            self.ov = _OpenVinoDenoiser(teacher.denoiser, engine.split("-", 1)[1],
                                        threads or torch.get_num_threads())
        elif engine not in ("torch-fp32", "torch-amp"):
            raise ValueError(f"unknown teacher engine {engine!r}")

    @property
    def reference(self) -> bool:
        """True for the teacher itself (fp32, or the run's autocast): the numbers of earlier versions."""
        return self.fast is None and self.ov is None

    def _autocast(self) -> Any:
        return self.amp.autocast() if self.name == "torch-amp" else contextlib.nullcontext()

    def _denoise(self, x_scaled: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        if self.ov is not None:
            return self.ov(x_scaled, t, lq).to(x_scaled.device)
        assert self.fast is not None
        cl = torch.channels_last if self.amp.channels_last else torch.contiguous_format
        xb = x_scaled.to(torch.bfloat16).contiguous(memory_format=cl)
        lqb = lq.to(torch.bfloat16).contiguous(memory_format=cl)
        return self.fast.denoiser(xb, t, lq=lqb).float()

    @torch.no_grad()
    def predict_x0(self, x_t: Tensor, y: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        """The teacher's x0 prediction at steps `t` ([B]), as `DiffusionSR.predict_x0`, without grad."""
        teacher = self.teacher
        if self.reference:
            with self._autocast():
                return teacher.predict_x0(x_t, y, t, lq).float()
        x_t = x_t.float()
        out = self._denoise(x_t * teacher.schedule.input_scale(t, x_t), t, lq)
        return out + y.float() if teacher.config.prediction == "residual" else out

    @torch.no_grad()
    def sample(self, lq: Tensor, eps: Tensor, y: Tensor) -> Tensor:
        """The deterministic T-step sample from x_T = prior(y, eps): the TAD-SR target (float32)."""
        teacher = self.teacher
        if self.reference:
            with self._autocast():
                out = teacher.sample_latent(lq, eps, sampler="deterministic", y=y)
            return out.float()
        y = y.float()
        batch = y.shape[0]

        def predict(x: Tensor, t: int) -> Tensor:
            return self.predict_x0(x, y, torch.full((batch,), t, dtype=torch.long, device=y.device), lq)

        # the sampler's state stays float32: only the denoiser runs in reduced precision
        return sampling.sample_deterministic(predict, teacher.schedule, y, teacher.prior(y, eps.float()))


class TargetsAhead:
    """The batch stream of a TAD-SR run with the teacher targets computed one micro-batch ahead, in a background
    thread: while the loop trains on batch k, the thread samples (or reads from the cache) the targets of batch k+1.
    On a free core the 15-step sampling then leaves the critical path; the numbers are those of the inline
    computation (the same function on the same inputs). Reads no batch beyond the `batches` the loop will use.
    Each batch handed out carries the future of its targets under ``"_targets"``."""

    def __init__(self, stream: Any, compute: Callable[[dict[str, Any]], Any], batches: int) -> None:
        self.stream, self.compute, self.left = stream, compute, int(batches)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="teacher-targets")
        self.pending: tuple[dict[str, Any], Future] | None = None

    def _submit(self) -> tuple[dict[str, Any], Future] | None:
        if self.left <= 0:
            return None
        self.left -= 1
        batch = self.stream.next()
        return batch, self.pool.submit(self.compute, batch)

    def next(self) -> dict[str, Any]:
        current = self.pending if self.pending is not None else self._submit()
        if current is None:
            raise TrainingError("the batch stream ran past the iterations it was set up for")
        self.pending = self._submit()  # the next batch's targets start now
        batch, future = current
        batch["_targets"] = future
        return batch

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.stream.close()
