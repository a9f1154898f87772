"""The PyTorch engine: the reference backend (every other backend is checked against it)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.base.oom import is_out_of_memory
from tadsr_cli.engines.base import NonFiniteTiles
from tadsr_cli.models.tile_norm import TileNormState, norm_state, whole_image_norms

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
        self._swap_lock = threading.Lock()  # whole_image_norms: swapped once for all lockstep threads
        self._swap_depth = 0
        self._swap_stack: contextlib.ExitStack | None = None

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

    def _check_inputs(self, lq: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq must be [B, 3, h, w], got {tuple(lq.shape)}")
        if noise.shape[0] != lq.shape[0] or noise.shape[1] != self.latent_channels or noise.shape[2:] != lq.shape[2:]:
            raise ValueError(
                f"noise must be [B, {self.latent_channels}, h, w] matching lq {tuple(lq.shape)}, got {tuple(noise.shape)}"
            )
        return lq.to(self.device, torch.float32), noise.to(self.device, torch.float32)

    @contextlib.contextmanager
    def whole_image_norms(self) -> Iterator[None]:
        """GroupNorms of the model (and of its reduced-precision copy) follow the calling thread's `norm_state`
        for the block. Re-entrant and shared by threads: the modules are swapped by the first to enter."""
        with self._swap_lock:
            if self._swap_depth == 0:
                if self.fast_path:
                    self._fast_forward()  # build the copy first: copying a model mid-swap would copy the swap
                stack = contextlib.ExitStack()
                for root in [self.model] + ([self._fast.model] if self._fast is not None else []):
                    stack.enter_context(whole_image_norms(root))
                self._swap_stack = stack
            self._swap_depth += 1
        try:
            yield
        finally:
            with self._swap_lock:
                self._swap_depth -= 1
                if self._swap_depth == 0 and self._swap_stack is not None:
                    self._swap_stack.close()
                    self._swap_stack = None

    def _norms(self, state: TileNormState | None) -> contextlib.AbstractContextManager[Any]:
        if state is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(self.whole_image_norms())
        stack.enter_context(norm_state(state))
        return stack

    def run(self, lq: Tensor, noise: Tensor, norms: TileNormState | None = None) -> Tensor:
        """`norms`: how the GroupNorms get their statistics (`tadsr_cli.models.tile_norm`: lockstep exchange with
        the other tiles of the image, or replayed statistics); None = ordinary norms."""
        lq, noise = self._check_inputs(lq, noise)
        reduced = self.precision != "fp32"
        try:
            with torch.inference_mode(), self._norms(norms):
                z, img = self._forward(lq, noise, reduced)
            ok = self._finite(z, img)
            if not bool(ok.all()):
                bad = (~ok).nonzero().flatten()
                self._nonfinite.found(self.precision, len(bad))
                # Recompute the bad tiles in fp32 with the norm statistics the batch used (a lockstep
                # exchange cannot be repeated by one tile alone).
                replay = None if norms is None else TileNormState(stats=norms.replay_stats())
                with torch.inference_mode(), self._norms(replay):
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

    def lockstep_engine(self) -> TorchEngine:
        """The engine that runs tiles with whole-image norms (`tadsr_cli.pipeline.lockstep`): this one."""
        return self

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
