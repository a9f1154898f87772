"""Engine benchmark behind `tadsr bench` and `benchmarks/bench_engines.py`.

For each model (the tiny default and the official-size architecture with random weights) and each available
backend/precision, one fixed input (`batch x 3 x size x size` LQ, default 1 x 64 x 64 -> 256 x 256) is run
`repeats` times, the variants interleaved round-robin so that load from other processes spreads evenly. Reported
per variant: setup time (export/build), median wall latency per tile, median process CPU time per tile (steadier
than wall time on a shared machine), throughput in output megapixels/s, peak RSS (VmHWM, reset before each call
where the kernel allows), CUDA max allocated (torch allocations) on a GPU, and the error against torch fp32 (max
abs error and PSNR on [-1, 1] images, i.e. a peak-to-peak of 2).

Variants: `torch-fp32` (plain eager, the baseline), `torch-bf16` (the torch engine: on CPU the cast-once bf16 +
channels_last fast path of `engines.fast_cpu`, autocast on a GPU), `torch-bf16-autocast` (CPU: the engine with
`fast_path=False`), `torch-bf16-cl` (GPU: the fast path forced on, see `FastTorchRunner`), `torch-fp16` (GPU
autocast), optionally the fast path `torch.compile`d, `onnx-fp32` (+ `onnx-fp16` on CUDA) and `tensorrt-*` where
installed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tadsr_cli.engines.fast_cpu import FastOneStep
from tadsr_cli.engines.torch_engine import TorchEngine

Log = Callable[[str], None]

PSNR_TARGET_DB = 40.0
FP32_TOLERANCE = 1e-3


# ---- measurement helpers --------------------------------------------------------------------------------------
def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        return None


def psnr(a: Tensor, b: Tensor, peak_to_peak: float = 2.0) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(peak_to_peak**2 / mse)


def cpu_model_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---- the CPU fast path ----------------------------------------------------------------------------------------
class FastTorchRunner(TorchEngine):
    """The torch engine forced onto the cast-once bf16 fast path (`engines.fast_cpu`) on any device, optionally
    with its networks `torch.compile`d. (On CPU, plain `TorchEngine(precision="bf16")` already uses the fast path;
    this adds the compiled form and the fast path on a GPU for comparison.)"""

    def __init__(self, model: Any, compile: bool = False, device: str = "cpu") -> None:
        super().__init__(model, device=device, precision="bf16")
        self.fast_path = True
        if compile:
            self._fast = FastOneStep(self.model, torch.bfloat16, compile=True)


# ---- variants -------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    label: str
    backend: str
    precision: str
    make: Callable[[], Any]
    engine: Any = None
    setup_s: float = 0.0
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    cuda_mb: list[float] = field(default_factory=list)
    output: Tensor | None = None
    error: str | None = None
    note: str = ""


def _variants(model: Any, device: str, backends: list[str], precisions: list[str], compile_fast: bool,
              cache_dir: Path | None) -> list[Variant]:
    from tadsr_cli.engines import create_engine

    cuda = device.startswith("cuda")
    out: list[Variant] = []

    def add(label: str, backend: str, precision: str, make: Callable[[], Any], note: str = "") -> None:
        out.append(Variant(label, backend, precision, make, note=note))

    if "torch" in backends:
        add("torch-fp32", "torch", "fp32", lambda: create_engine("torch", model, device=device, precision="fp32"),
            "plain eager fp32 (baseline)")
        if "bf16" in precisions:
            add("torch-bf16", "torch", "bf16",
                lambda: create_engine("torch", model, device=device, precision="bf16"),
                "torch engine (CPU: bf16 weights cast once + channels_last, engines.fast_cpu; GPU: autocast)")
            if cuda:
                add("torch-bf16-cl", "torch", "bf16", lambda: FastTorchRunner(model, False, device),
                    "bf16 weights + channels_last")
            else:
                add("torch-bf16-autocast", "torch", "bf16",
                    lambda: create_engine("torch", model, device=device, precision="bf16", fast_path=False),
                    "torch engine autocast (fast_path=False)")
            if compile_fast:
                add("torch-bf16-cl-compiled", "torch", "bf16", lambda: FastTorchRunner(model, True, device),
                    "+ torch.compile")
        if "fp16" in precisions and cuda:
            add("torch-fp16", "torch", "fp16",
                lambda: create_engine("torch", model, device=device, precision="fp16"), "torch engine autocast")
    if "onnx" in backends:
        opts = {"verify": False, "cache_dir": cache_dir, "threads": torch.get_num_threads()}
        add("onnx-fp32", "onnx", "fp32",
            lambda: create_engine("onnx", model, device=device, precision="fp32", **opts), "ONNX Runtime")
        if "fp16" in precisions and cuda:
            add("onnx-fp16", "onnx", "fp16",
                lambda: create_engine("onnx", model, device=device, precision="fp16", **opts), "ONNX Runtime CUDA")
    if "openvino" in backends and not cuda:
        opts_ov = {"verify": False, "cache_dir": cache_dir, "threads": torch.get_num_threads()}
        for prec in [p for p in ("fp32", "bf16") if p in precisions]:
            add(f"openvino-{prec}", "openvino", prec,
                lambda prec=prec: create_engine("openvino", model, device="cpu", precision=prec, **opts_ov),
                "OpenVINO (CPU)")
    if "tensorrt" in backends:
        for prec in [p for p in ("fp16", "bf16", "fp32") if p in precisions]:
            add(f"tensorrt-{prec}", "tensorrt", prec,
                lambda prec=prec: create_engine("tensorrt", model, device=device, precision=prec,
                                                cache_dir=cache_dir), "TensorRT")
    return out


def _call(v: Variant, lq: Tensor, noise: Tensor, cuda: bool) -> Tensor:
    reset = _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    c0, w0 = time.process_time(), time.perf_counter()
    out = v.engine.run(lq, noise)
    if cuda:
        torch.cuda.synchronize()
    v.wall.append(time.perf_counter() - w0)
    v.cpu.append(time.process_time() - c0)
    rss = peak_rss_mb()
    if rss is not None and reset:
        v.rss.append(rss)
    if cuda:
        v.cuda_mb.append(torch.cuda.max_memory_allocated() / 2**20)
    return out


def bench_model(model: Any, *, label: str, device: str = "cpu", size: int = 64, batch: int = 1, repeats: int = 3,
                warmup: int = 1, backends: list[str] | None = None, precisions: list[str] | None = None,
                compile_fast: bool = False, cache_dir: Path | None = None, log: Log | None = None) -> dict[str, Any]:
    say = log or (lambda _m: None)
    backends = backends or ["torch", "onnx", "openvino", "tensorrt"]
    precisions = precisions or ["fp32", "bf16", "fp16"]
    cuda = device.startswith("cuda")
    m = int(model.lq_multiple)
    side = -(-size // m) * m
    gen = torch.Generator().manual_seed(0)
    lq = torch.rand(batch, 3, side, side, generator=gen) * 2 - 1
    noise = torch.randn(batch, int(model.latent_channels), side, side, generator=gen)
    out_mp = batch * (side * model.scale) ** 2 / 1e6

    variants = _variants(model, device, backends, precisions, compile_fast, cache_dir)
    ready: list[Variant] = []
    for v in variants:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v.engine = v.make()
                for _ in range(max(warmup, 1)):  # the first call also checks it works
                    v.output = v.engine.run(lq, noise).float()
        except Exception as exc:  # unavailable backend/precision: reported, not fatal
            v.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            say(f"{label}: {v.label} unavailable ({v.error})")
            v.engine = None
            continue
        v.setup_s = time.perf_counter() - t0
        say(f"{label}: {v.label} ready ({v.setup_s:.1f} s setup incl. {max(warmup, 1)} warm-up call)")
        ready.append(v)
    for r in range(repeats):
        for v in ready:
            _call(v, lq, noise, cuda)
        say(f"{label}: round {r + 1}/{repeats}: " + ", ".join(f"{v.label} {v.wall[-1]:.2f}s" for v in ready))

    ref = next((v.output for v in ready if v.label == "torch-fp32"), None)
    rows = []
    for v in variants:
        row: dict[str, Any] = {"label": v.label, "backend": v.backend, "precision": v.precision, "note": v.note}
        if v.error is not None:
            row["unavailable"] = v.error
            rows.append(row)
            continue
        wall = statistics.median(v.wall) if v.wall else float("nan")
        cpu = statistics.median(v.cpu) if v.cpu else float("nan")
        row.update({
            "setup_s": round(v.setup_s, 3),
            "latency_s_per_tile": round(wall / batch, 4),
            "min_latency_s_per_tile": round(min(v.wall) / batch, 4) if v.wall else None,
            "cpu_s_per_tile": round(cpu / batch, 4),
            "latency_s_all": [round(x, 4) for x in v.wall],
            "throughput_mp_s": round(out_mp / wall, 5) if wall > 0 else None,
            "throughput_mp_per_cpu_s": round(out_mp / cpu, 5) if cpu > 0 else None,
            "peak_rss_mb": round(max(v.rss), 1) if v.rss else None,
            "cuda_max_allocated_mb": round(max(v.cuda_mb), 1) if v.cuda_mb else None,
        })
        if ref is not None and v.output is not None:
            row["max_abs_err_vs_torch_fp32"] = float((v.output - ref).abs().max())
            row["psnr_db_vs_torch_fp32"] = round(psnr(v.output, ref), 2)
        rows.append(row)
    return {
        "model": label,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "lq_multiple": m,
        "input": {"lq": [batch, 3, side, side], "hr": [batch, 3, side * model.scale, side * model.scale]},
        "variants": rows,
    }


def _ok_accuracy(row: dict[str, Any]) -> bool:
    if "unavailable" in row:
        return False
    if row["precision"] == "fp32":
        return row.get("max_abs_err_vs_torch_fp32", 0.0) <= FP32_TOLERANCE
    return row.get("psnr_db_vs_torch_fp32", float("inf")) >= PSNR_TARGET_DB


def _ratio(rows: list[dict[str, Any]], a: str, b: str, key: str) -> float | None:
    ra = next((r for r in rows if r["label"] == a and "unavailable" not in r), None)
    rb = next((r for r in rows if r["label"] == b and "unavailable" not in r), None)
    if not ra or not rb or not ra.get(key) or not rb.get(key):
        return None
    return round(rb[key] / ra[key], 3)  # key is a time: ratio = baseline time / variant time


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratios the targets are stated in (speed-ups > 1 mean faster than the baseline)."""
    out: dict[str, Any] = {}
    default = results.get("default")
    if default:
        rows = default["variants"]
        out["default_onnx_vs_torch_eager"] = {
            "wall": _ratio(rows, "onnx-fp32", "torch-fp32", "latency_s_per_tile"),
            "cpu": _ratio(rows, "onnx-fp32", "torch-fp32", "cpu_s_per_tile"),
            "target": 1.2,
        }
    official = results.get("official")
    if official:
        rows = official["variants"]
        good = [r for r in rows if _ok_accuracy(r) and r["label"] != "torch-fp32"]
        best = min(good, key=lambda r: r["latency_s_per_tile"], default=None)
        best_cpu = min(good, key=lambda r: r["cpu_s_per_tile"], default=None)
        out["official_best_vs_fp32_eager"] = {
            "best_wall": best["label"] if best else None,
            "wall": _ratio(rows, best["label"], "torch-fp32", "latency_s_per_tile") if best else None,
            "best_cpu": best_cpu["label"] if best_cpu else None,
            "cpu": _ratio(rows, best_cpu["label"], "torch-fp32", "cpu_s_per_tile") if best_cpu else None,
            "target": 2.0,
        }
    agreement = {}
    for name, res in results.items():
        for r in res["variants"]:
            if "unavailable" in r or r["label"] == "torch-fp32" or "max_abs_err_vs_torch_fp32" not in r:
                continue
            agreement[f"{name}/{r['label']}"] = {
                "max_abs_err": r["max_abs_err_vs_torch_fp32"], "psnr_db": r["psnr_db_vs_torch_fp32"],
                "ok": _ok_accuracy(r),
            }
    out["agreement"] = agreement
    return out


def load_default_model() -> tuple[Any, str]:
    """The embedded default when installed, else a seeded random `tiny_test_config()` model."""
    from tadsr_cli.models.model_cache import resolve_model, resolve_model_path

    try:
        path = resolve_model_path(None)
        return resolve_model(str(path)), f"embedded {path.name}"
    except Exception:
        from tadsr_cli.models.presets import tiny_test_config
        from tadsr_cli.models.sr_model import DiffusionSR

        torch.manual_seed(0)
        model = DiffusionSR(tiny_test_config())
        with torch.no_grad():  # a residual model starts as plain bicubic; make the denoiser matter
            model.denoiser.out[-1].weight.normal_(0, 0.02)
        return model.eval(), "tiny_test_config (random weights, seed 0)"


def load_official_model() -> tuple[Any, str]:
    from tadsr_cli.models.presets import official_realsr_x4
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    return DiffusionSR(official_realsr_x4()).eval(), "official_realsr_x4 (random weights, seed 0)"


def run_bench(models: list[str] | None = None, *, device: str = "cpu", size: int = 64, batch: int = 1,
              repeats: int = 3, backends: list[str] | None = None, precisions: list[str] | None = None,
              compile_fast: bool = False, threads: int | None = None, cache_dir: Path | None = None,
              log: Log | None = None) -> dict[str, Any]:
    """Benchmark `models` ("default", "official") and return the JSON-ready report."""
    import onnxruntime as ort

    from tadsr_cli.base.devices import resolve_device

    models = models or ["default", "official"]
    if threads:
        torch.set_num_threads(int(threads))
    dev = str(resolve_device(device))
    report: dict[str, Any] = {
        "machine": {
            "cpu": cpu_model_name(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "onnxruntime": ort.__version__, "device": dev,
            "gpu": torch.cuda.get_device_name() if dev.startswith("cuda") else None,
        },
        "settings": {"size": size, "batch": batch, "repeats": repeats, "compile": compile_fast},
        "results": {},
    }
    loaders = {"default": load_default_model, "official": load_official_model}
    for name in models:
        if name not in loaders:
            raise ValueError(f"unknown bench model {name!r} (default, official)")
        model, source = loaders[name]()
        for p in model.parameters():
            p.requires_grad_(False)
        res = bench_model(model, label=name, device=dev, size=size, batch=batch, repeats=repeats,
                          backends=backends, precisions=precisions, compile_fast=compile_fast,
                          cache_dir=cache_dir, log=log)
        res["source"] = source
        report["results"][name] = res
        del model
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["summary"] = summarize(report["results"])
    return report


def dumps(report: dict[str, Any]) -> str:
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        return x

    return json.dumps(clean(report), indent=2)
