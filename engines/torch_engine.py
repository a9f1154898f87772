"""The PyTorch engine: the reference backend (every other backend is checked against it)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.base.oom import is_out_of_memory
from tadsr_cli.engines.base import NonFiniteTiles

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAMPLERS = ("deterministic", "ancestral")


class TorchEngine:
    """Runs `DiffusionSR.one_step` (steps = 1, the student) or `DiffusionSR.sample` (steps = T, teacher mode).

    Precision `bf16`/`fp16` runs under autocast, except one-step `bf16` on CPU, which (unless `fast_path=False`)
    runs the cast-once fast path of `engines.fast_cpu`: a bf16, channels_last copy of the model with the
    upsamplers rewritten and the VQ codebook search in fp32. That copy is made lazily on the first bf16 call and
    costs half the model's fp32 parameter memory; the original fp32 model is not changed (it is the fp32 fallback).
    Teacher mode (steps = T) keeps autocast, whose sampler state stays fp32. Every output tile is checked for
    NaN/Inf (latent and image) and a bad tile is recomputed in fp32, with one warning per engine. The ancestral teacher sampler draws its per-step
    noise from a torch generator re-seeded with `seed` on every call (reproducible, but per tile: not from the
    global noise field), so use the deterministic sampler for tiled comparisons.
    """

    name = "torch"

    def __init__(self, model: Any, device: str = "auto", precision: str = "fp32", steps: int = 1,
                 sampler: str = "deterministic", seed: int = 0, fast_path: bool = True) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        total = int(model.schedule.steps)
        if steps != 1 and steps != total:
            raise ConfigError(
                f"--steps must be 1 (one-step student) or {total} (the model's schedule, teacher sampling); got {steps}"
            )
        self.device = resolve_device(device)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        if self.device.type == "mps" and precision == "bf16":
            raise EngineUnavailableError("bf16 is not supported on MPS; use fp16 or fp32")
        self.steps = int(steps)
        self.sampler = sampler
        self.seed = int(seed)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.scale = int(model.scale)
        self.lq_multiple = int(model.lq_multiple)
        self.latent_channels = int(model.latent_channels)
        self._nonfinite = NonFiniteTiles()
        # one-step bf16 on CPU: the cast-once fast path (engines.fast_cpu), built on first use
        self.fast_path = bool(fast_path and self.device.type == "cpu" and precision == "bf16" and self.steps == 1)
        self._fast: Any = None

    def __repr__(self) -> str:
        return (f"TorchEngine(device={self.device}, precision={self.precision}, steps={self.steps}, "
                f"sampler={self.sampler})")

    # ------------------------------------------------------------------------------------------------------
    def _forward(self, lq: Tensor, noise: Tensor, reduced: bool) -> tuple[Tensor, Tensor]:
        """Returns (latent, image) for a batch; reduced precision (fast path or autocast) when `reduced`."""
        if reduced and self.fast_path:
            return self._fast_forward()(lq, noise)
        model = self.model
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=reduced):
            if self.steps == 1:
                model.check_size(lq)
                z = model.one_step_latent(lq, noise)
            else:
                model.check_size(lq)
                gen = None
                if self.sampler == "ancestral":
                    gen = torch.Generator(device=self.device).manual_seed(self.seed)
                z = model.sample_latent(lq, noise, sampler=self.sampler, generator=gen)
            img = model.decode(z)
        return z, img

    def _fast_forward(self) -> Any:
        if self._fast is None:
            from tadsr_cli.engines.fast_cpu import FastOneStep

            with torch.inference_mode(False):  # ordinary (not inference-mode) tensors for the kept copy
                self._fast = FastOneStep(self.model, self.dtype)
        return self._fast

    @staticmethod
    def _finite(z: Tensor, img: Tensor) -> Tensor:
        return torch.isfinite(z).flatten(1).all(1) & torch.isfinite(img).flatten(1).all(1)

    def run(self, lq: Tensor, noise: Tensor) -> Tensor:
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq must be [B, 3, h, w], got {tuple(lq.shape)}")
        if noise.shape[0] != lq.shape[0] or noise.shape[1] != self.latent_channels or noise.shape[2:] != lq.shape[2:]:
            raise ValueError(
                f"noise must be [B, {self.latent_channels}, h, w] matching lq {tuple(lq.shape)}, got {tuple(noise.shape)}"
            )
        lq = lq.to(self.device, torch.float32)
        noise = noise.to(self.device, torch.float32)
        reduced = self.precision != "fp32"
        try:
            with torch.inference_mode():
                z, img = self._forward(lq, noise, reduced)
                ok = self._finite(z, img)
                if not bool(ok.all()):
                    bad = (~ok).nonzero().flatten()
                    self._nonfinite.found(self.precision, len(bad))
                    z32, img32 = self._forward(lq[bad], noise[bad], reduced=False)
                    if not bool(self._finite(z32, img32).all()):
                        raise self._nonfinite.still_bad()
                    img = img.float().clone()
                    img[bad] = img32.float()
                return img.float().contiguous().cpu()
        except Exception as exc:
            if is_out_of_memory(exc) and self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise


def create(model: Any, *, device: str = "auto", precision: str = "fp32", steps: int = 1,
           sampler: str = "deterministic", **opts: Any) -> TorchEngine:
    """`opts`: `seed` (ancestral teacher sampler), `fast_path` (default True: one-step bf16 on CPU uses the
    cast-once fast path of `engines.fast_cpu`; False: autocast)."""
    seed = int(opts.pop("seed", 0))
    fast_path = bool(opts.pop("fast_path", True))
    if opts:
        raise ConfigError(f"torch engine: unknown option(s) {sorted(opts)}")
    return TorchEngine(model, device=device, precision=precision, steps=steps, sampler=sampler, seed=seed,
                       fast_path=fast_path)
