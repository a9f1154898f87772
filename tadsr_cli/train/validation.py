"""Validation during training: PSNR-Y of the EMA model on fixed pairs, a few saved images, validation.jsonl."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.eval.psnr_ssim import psnr
from tadsr_cli.train.ema import EMA, ema_weights
from tadsr_cli.train.precision import Amp
from tadsr_cli.train.randomness import sample_noise
from tadsr_cli.train.task import TrainTask


def _to_uint8(img: Tensor) -> np.ndarray:
    """3xHxW in [-1, 1] -> HxWx3 uint8."""
    x = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def validate_images(
    valset: Any,
    run: Callable[[Tensor, Tensor], Tensor],
    latent_channels: int,
    scale: int,
    device: torch.device,
    folder: Path | None,
    save_images: int,
) -> dict[str, float]:
    """PSNR-Y (4-px border for x4) of `run(lq, noise) -> hr` over the validation set, and of bicubic; saves PNGs."""


    scores, bicubic = [], []
    for i in range(len(valset)):
        item = valset[i]
        lq = item["lq"][None].to(device)
        gt = _to_uint8(item["gt"])
        noise = sample_noise([int(item["seed"])], (latent_channels, lq.shape[-2], lq.shape[-1]), device)
        sr = _to_uint8(run(lq, noise)[0])
        up = _to_uint8(F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)[0])
        scores.append(psnr(sr, gt, crop_border=scale))
        bicubic.append(psnr(up, gt, crop_border=scale))
        if folder is not None and i < save_images:
            folder.mkdir(parents=True, exist_ok=True)
            dst = folder / f"{Path(item.get('name', f'{i:03d}')).stem}.png"
            with atomic_write_path(dst) as tmp:
                Image.fromarray(sr).save(tmp, format="PNG")
    finite = [s for s in scores if math.isfinite(s)]
    return {
        "psnr_y": float(np.mean(finite)) if finite else float("nan"),
        "psnr_y_bicubic": float(np.mean([b for b in bicubic if math.isfinite(b)]))
        if bicubic
        else float("nan"),
    }


def validate_ema_model(
    model: Any,
    ema: EMA,
    amp: Amp,
    valset: Any,
    run: Callable[[Tensor, Tensor], Tensor],
    device: torch.device,
    folder: Path | None,
    save_images: int,
) -> dict[str, float]:
    """`validate_images` of a `DiffusionSR` with its EMA weights loaded and its denoiser in eval mode (both restored)."""
    if valset is None:
        return {}
    was_training = model.denoiser.training
    model.denoiser.eval()
    try:
        with ema_weights(model.denoiser, ema), amp.autocast():
            return validate_images(valset, run, model.latent_channels, model.scale, device, folder, save_images)
    finally:
        model.denoiser.train(was_training)


def has_validation(task: TrainTask) -> bool:
    return task.recipe.validation.n_images > 0 and getattr(task, "has_validation", False)


def run_validation(task: TrainTask, step: int, out_dir: Path, say: Callable[[str], None]) -> dict[str, float]:
    """Validate the task's model at `step` (rank 0): metrics appended to validation.jsonl, images saved."""
    if not has_validation(task) or not task.env.is_main:
        return {}
    folder = out_dir / "validation" / f"step-{step:08d}" if task.recipe.validation.save_images else None
    metrics = task.validate(step, folder)
    if metrics:
        say(f"validation at {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        with open(out_dir / "validation.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
    return metrics
