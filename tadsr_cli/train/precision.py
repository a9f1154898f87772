"""Mixed precision of a training run: autocast and fp16 gradient scaling behind one small object."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from tadsr_cli.base.errors import RecipeError


class Amp:
    """Autocast + (fp16) grad scaling. `mode`: none | bf16 | fp16 | auto (bf16 on CUDA where supported, else none)."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.device = device
        dtype: torch.dtype | None = None
        if mode == "auto":
            if device.type == "cuda" and torch.cuda.is_bf16_supported():
                dtype = torch.bfloat16
        elif mode == "bf16":
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise RecipeError("amp: bf16 is not supported by this GPU; use fp16 or none")
            dtype = torch.bfloat16
        elif mode == "fp16":
            if device.type != "cuda":
                raise RecipeError(
                    f"amp: fp16 needs a CUDA device (running on {device.type}); use bf16 or none"
                )
            dtype = torch.float16
        elif mode != "none":
            raise RecipeError(f"amp: unknown mode {mode!r}")
        self.dtype = dtype
        self.mode = "none" if dtype is None else ("bf16" if dtype == torch.bfloat16 else "fp16")
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()
