"""A perceptual loss for distillation: ST-LPIPS with the VGG-16 backbone on decoded images, student vs ground truth.

Not a TAD-SR loss (ResShift v3 trains its teacher with LPIPS on decoded images; Real-ESRGAN its generator with a VGG
perceptual loss). Here it gives the one-step student a paired signal towards the photo where the teacher's sample
is smooth. The network is the shift-tolerant VGG-16 of the `stlpips-pytorch` wheel, not the AlexNet that `tadsr eval`
reports, so the metric that judges a model is not the one it was trained on.

Cost control, because the VGG runs at full output resolution on a CPU: only its first `taps` slices are built
(relu1_2 .. relu3_3 by default: texture and edges, the expensive deep layers left out) and each pair is compared on
one random `crop` x `crop` window (the same window in both, drawn from the step's generator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tadsr_cli.base.errors import RecipeError
from tadsr_cli.eval.stlpips import STLPIPS, MetricUnavailable

__all__ = ["PerceptualLoss"]


class PerceptualLoss(nn.Module):
    """`loss(sr, hr, gen)`: mean ST-LPIPS-VGG distance of images in [-1, 1] (hr detached), on one random window each."""

    def __init__(self, taps: int = 3, crop: int = 64, blur: bool = False) -> None:
        super().__init__()
        # blur: both images through a 3x3 binomial low-pass first, so a pattern at the latent's 4-pixel period
        # (which the VGG rewards as texture) is damped before the loss sees it and cannot pay for itself.
        a = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", ((a[:, None] * a[None, :]) / 16.0)[None, None].repeat(3, 1, 1, 1))
        self.blur = bool(blur)
        try:
            self.net = STLPIPS.from_file(net="vgg", taps=taps)
        except MetricUnavailable as exc:
            raise RecipeError(f"loss.perceptual needs the ST-LPIPS VGG weights: {exc}") from exc
        self.crop = int(crop)

    def forward(self, sr: Tensor, hr: Tensor, gen: torch.Generator | None = None) -> Tensor:
        hr = hr.detach()
        h, w = sr.shape[-2:]
        if 0 < self.crop < min(h, w):
            c = self.crop
            tops = torch.randint(0, h - c + 1, (sr.shape[0],), generator=gen).tolist()
            lefts = torch.randint(0, w - c + 1, (sr.shape[0],), generator=gen).tolist()
            sr = torch.stack([x[:, t:t + c, s:s + c] for x, t, s in zip(sr, tops, lefts, strict=True)])
            hr = torch.stack([x[:, t:t + c, s:s + c] for x, t, s in zip(hr, tops, lefts, strict=True)])
        sr, hr = sr.clamp(-1, 1), hr.clamp(-1, 1)
        if self.blur:
            sr, hr = self._low_pass(sr), self._low_pass(hr)
        return self.net(sr, hr).float().mean()

    def _low_pass(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype), groups=3)
