"""The reduced-precision CPU fast path shared by the torch engine (`precision="bf16"` on CPU) and `engines.bench`.

Instead of autocast (per-call weight casts and fp32 round trips around every GroupNorm), a *copy* of the model is
cast to bf16 once and runs with channels_last activations, so oneDNN runs bf16 convolutions directly (on CPUs with
AVX512-BF16/AMX; 91% of the official VQ model's time is the VQ autoencoder's convolutions). On that copy the
nearest-2x + 3x3-conv upsamplers are rewritten as one 2x2 conv over the four output phases + pixel shuffle
(`SubpixelUpsampleConv`: the same numbers to rounding, 2.25x fewer multiply-adds). The VQ codebook search stays in
fp32 with the original model's codebook (bf16 distances flip near-ties).

The original model is left untouched (it stays the fp32 reference and the fp32 NaN/Inf fallback); the copy costs
half the model's fp32 parameter memory (bf16), paid once when the fast path is first used.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from tadsr_cli.engines.onnx_export import replace_upsamplers


def make_fast_copy(model: Any, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True) -> Any:
    """A deep copy of `model` in `dtype`, upsamplers rewritten, channels_last, no grads (`model` is not changed)."""
    fast = copy.deepcopy(model).to(dtype)
    replace_upsamplers(fast)  # nearest-2x + conv3x3 as one 2x2 conv over the 4 phases (2.25x fewer MACs)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.eval()


class FastOneStep:
    """One-step (student) forward of `base` through its reduced-precision copy.

    `forward(lq, noise)` takes fp32 or any-dtype tensors on `device` and returns `(latent, image)` in `dtype`
    (the image clamped to [-1, 1]); callers do the NaN/Inf check and any fp32 fallback with `base`.
    """

    def __init__(self, base: Any, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True,
                 compile: bool = False) -> None:
        self.base = base
        self.dtype = dtype
        self.channels_last = channels_last
        self.model = make_fast_copy(base, dtype, channels_last)
        if compile:  # the networks only: the schedule's numpy tables do not trace under inference_mode
            fast = self.model
            fast.denoiser = torch.compile(fast.denoiser, dynamic=False)
            vq = getattr(fast.autoencoder, "vq", None)
            if vq is not None:
                vq.encoder = torch.compile(vq.encoder, dynamic=False)
                vq.decoder = torch.compile(vq.decoder, dynamic=False)

    def prep(self, t: Tensor) -> Tensor:
        t = t.to(self.dtype)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def forward(self, lq: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        self.model.check_size(lq)
        z = self.model.one_step_latent(self.prep(lq), self.prep(noise))
        ae = self.model.autoencoder
        if callable(getattr(ae, "quantize", None)):
            # Nearest-codebook search in fp32 (the original model's codebook): bf16 distances flip near-ties.
            zq = self.base.autoencoder.quantize(z.float()).to(self.dtype)
            if self.channels_last:
                zq = zq.contiguous(memory_format=torch.channels_last)
            return z, ae.decode(zq, quantize=False).clamp(-1.0, 1.0)
        return z, self.model.decode(z)

    __call__ = forward
