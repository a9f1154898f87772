"""Optimisation helpers: AdamW from recipe settings, the warm-up + cosine learning rate of an iteration, clip-and-step."""

from __future__ import annotations

import math

import torch
from torch import nn

from tadsr_cli.train.precision import Amp
from tadsr_cli.train.recipe_schema import OptimizerSettings


def make_adamw(params: list[nn.Parameter], s: OptimizerSettings) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        params, lr=s.lr, betas=(s.betas[0], s.betas[1]), weight_decay=s.weight_decay, foreach=True
    )


def lr_at(
    step: int, s: OptimizerSettings, total: int, schedule: str = "constant", min_ratio: float = 0.0
) -> float:
    """Learning rate of iteration `step` (0-based): linear warm-up to `lr`, then constant or cosine to lr*min_ratio."""
    if s.warmup > 0 and step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    if schedule == "cosine":
        span = max(total - s.warmup, 1)
        progress = min(max(step - s.warmup, 0) / span, 1.0)
        return s.lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return s.lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def clip_and_step(
    opt: torch.optim.Optimizer, params: list[nn.Parameter], clip: float | None, amp: Amp
) -> float:
    """Unscale (fp16), clip the global grad norm, step. Returns the pre-clip norm (nan if not computed)."""
    amp.unscale(opt)
    norm = float("nan")
    if clip is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    amp.step(opt)
    return norm
