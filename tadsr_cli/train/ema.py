"""Exponential moving average of a network's weights (the exported model) and a context that swaps it in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from tadsr_cli.base.errors import TrainingError


class EMA:
    """Exponential moving average of a module's floating-point state (parameters and buffers), kept in float32."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        # torch's EMA update (a foreach lerp towards the new weights by 1 - decay), applied to our float32 shadow
        self._average = get_ema_multi_avg_fn(self.decay)
        self.shadow: dict[str, Tensor] = {
            k: (v.detach().float().clone() if v.is_floating_point() else v.detach().clone())
            for k, v in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        src = module.state_dict()
        fl_dst, fl_src = [], []
        for k, v in src.items():
            dst = self.shadow[k]
            if dst.is_floating_point():
                fl_dst.append(dst)
                fl_src.append(v.detach().float())
            else:
                dst.copy_(v)
        if fl_dst:
            self._average(fl_dst, fl_src, None)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            v.copy_(self.shadow[k].to(v.dtype))

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(sd))
        if missing:
            raise TrainingError(f"checkpoint EMA lacks {len(missing)} entries (e.g. {missing[0]})")
        for k, v in self.shadow.items():
            v.copy_(sd[k].to(v.device, v.dtype))

    def to(self, device: torch.device) -> EMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self


@contextlib.contextmanager
def ema_weights(module: nn.Module, ema: EMA) -> Iterator[nn.Module]:
    """Temporarily load the EMA weights into `module` (restored exactly afterwards)."""
    backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
    ema.copy_to(module)
    try:
        yield module
    finally:
        with torch.no_grad():
            for k, v in module.state_dict().items():
                v.copy_(backup[k])
