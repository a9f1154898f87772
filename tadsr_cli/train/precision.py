"""Mixed precision of a training run: autocast, fp16 gradient scaling and the channels_last memory format behind one
small object.

On a CPU, `bf16` runs the network step in bf16 autocast (oneDNN's native bf16 convolutions on AVX512-BF16 / AMX):
CPU seconds per iteration, one thread, benchmarks/bench_training.py on an AVX512-BF16 CPU without AMX (AMD EPYC):
teacher recipe 0.40 -> 0.255, student step 1.28 -> 0.78. `channels_last` (NHWC activations and conv weights) lets
oneDNN skip the NCHW <-> blocked reorders around every convolution; it pays on CPUs with AMX (issue 21: 0.16 ->
0.146 s per teacher iteration) but cost time on that CPU (teacher 0.255 -> 0.29, student 0.78 -> 0.87: the fp32
GroupNorms run slower in NHWC than the convolutions gain), hence `auto` = on with bf16 autocast on a CPU with AMX.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from tadsr_cli.base.errors import RecipeError


def cpu_has_fast_bf16() -> bool:
    """oneDNN runs bf16 natively here (AVX512-BF16 / AMX); emulated bf16 is slower than fp32."""
    from tadsr_cli.pipeline.settings import cpu_has_fast_bf16 as probe

    return probe()


def cpu_has_amx() -> bool:
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


class Amp:
    """Autocast + (fp16) grad scaling + memory format.

    `mode`: none | bf16 | fp16 | auto (bf16 on a CUDA GPU that supports it or a CPU with native bf16, else none).
    `channels_last`: True | False | "auto" (on with bf16 autocast on a CPU with AMX).
    """

    def __init__(self, mode: str, device: torch.device, channels_last: bool | str = False) -> None:
        self.device = device
        dtype: torch.dtype | None = None
        if mode == "auto":
            if device.type == "cuda" and torch.cuda.is_bf16_supported():
                dtype = torch.bfloat16
            elif device.type == "cpu" and cpu_has_fast_bf16():
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
        if channels_last == "auto":
            channels_last = device.type == "cpu" and dtype == torch.bfloat16 and cpu_has_amx()
        elif not isinstance(channels_last, bool):
            raise RecipeError(f"channels_last: expected true, false or auto, got {channels_last!r}")
        self.channels_last = bool(channels_last)

    def describe(self) -> str:
        return self.mode + (" + channels_last" if self.channels_last else "")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # -- memory format ---------------------------------------------------------------------------------------------
    def module(self, m: nn.Module) -> nn.Module:
        """`m` in channels_last (its 4-D weights) when that is on; `m` itself otherwise (in place either way)."""
        return m.to(memory_format=torch.channels_last) if self.channels_last else m

    def tensor(self, t: Tensor) -> Tensor:
        """A 4-D activation in the run's memory format (the values are unchanged)."""
        if self.channels_last and t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        return t

    # -- gradients -------------------------------------------------------------------------------------------------
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
