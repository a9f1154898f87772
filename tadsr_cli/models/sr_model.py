"""`DiffusionSR`: denoiser + autoencoder + residual-shifting schedule, the unit every command works with.

Images are RGB tensors in [-1, 1], NCHW. The LQ is `h x w`, the HR output `4h x 4w`, the latent `h x w`
(autoencoder factor = SR factor), so the latent and the LQ share coordinates: that is what lets the tiler slice one
global noise field in LQ coordinates. `h` and `w` must be multiples of `lq_multiple` (pad outside, crop back).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.models import sampling
from tadsr_cli.models.autoencoders import build_autoencoder
from tadsr_cli.models.config import ModelConfig
from tadsr_cli.models.schedule import ResShiftSchedule
from tadsr_cli.models.unet_swin import UNetModelSwin, required_multiple

SamplerName = Literal["deterministic", "ancestral"]


class DiffusionSR(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.denoiser = UNetModelSwin(**config.denoiser.to_kwargs())
        self.autoencoder = build_autoencoder(config.autoencoder)
        self.schedule = ResShiftSchedule(config.schedule)
        if config.prediction == "residual":
            # Start at bicubic: the last layer outputs zeros until trained.
            last = self.denoiser.out[-1]
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    # ---- geometry -------------------------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def latent_channels(self) -> int:
        return self.config.autoencoder.channels

    @property
    def lq_multiple(self) -> int:
        """LQ height/width must be multiples of this (latent = LQ size; window attention at the deepest level)."""
        return required_multiple(self.config.denoiser)

    # ---- building blocks ------------------------------------------------------------------------------------
    def upsample_lq(self, lq: Tensor) -> Tensor:
        # Official ResShift: torch bicubic x4 of the [-1, 1] LQ before encoding.
        return F.interpolate(lq, scale_factor=self.scale, mode="bicubic", align_corners=False)

    def encode(self, img: Tensor) -> Tensor:
        return self.autoencoder.encode(img)

    def decode(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z).clamp(-1.0, 1.0)

    def lq_latent(self, lq: Tensor) -> Tensor:
        """y = E(bicubic_up(lq))."""
        return self.encode(self.upsample_lq(lq))

    def predict_x0(self, x_t: Tensor, y: Tensor, t: int | Tensor, lq: Tensor) -> Tensor:
        """x0_hat = f(x_t / sqrt(kappa^2 eta_t + 1), t, lq) (+ y for residual models)."""
        if isinstance(t, int):
            t = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        scaled = x_t * self.schedule.input_scale(t, x_t)
        out = self.denoiser(scaled, t, lq=lq)
        if self.config.prediction == "residual":
            out = out + y
        return out

    def check_size(self, lq: Tensor) -> None:
        m = self.lq_multiple
        if lq.shape[-2] % m or lq.shape[-1] % m:
            raise ConfigError(f"LQ size {tuple(lq.shape[-2:])} must be a multiple of {m}; pad it first")

    # ---- inference ------------------------------------------------------------------------------------------
    def prior(self, y: Tensor, noise: Tensor) -> Tensor:
        """x_T = y + kappa sqrt(eta_T) s eps, s = the config's prior_noise_scale (1 = ResShift)."""
        s = self.config.prior_noise_scale
        return self.schedule.prior_sample(y, noise if s == 1.0 else noise * s)

    def one_step_latent(self, lq: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        """Student: x_T = y + kappa sqrt(eta_T) eps, one call at t = T-1; returns the x0 latent."""
        y = self.lq_latent(lq) if y is None else y
        x_t = self.prior(y, noise)
        return self.predict_x0(x_t, y, self.config.one_step_timestep, lq)

    def one_step(self, lq: Tensor, noise: Tensor) -> Tensor:
        """The whole one-step graph: LQ tiles and prior noise in, HR tiles in [-1, 1] out."""
        self.check_size(lq)
        return self.decode(self.one_step_latent(lq, noise))

    def sample_latent(
        self,
        lq: Tensor,
        noise: Tensor,
        sampler: SamplerName = "deterministic",
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> Tensor:
        """Teacher: T-step sampling from x_T (deterministic = SinSR/TAD-SR targets; ancestral = ResShift)."""
        y = self.lq_latent(lq) if y is None else y
        x_t = self.prior(y, noise)

        def predict(x: Tensor, t: int) -> Tensor:
            return self.predict_x0(x, y, t, lq)

        if sampler == "deterministic":
            return sampling.sample_deterministic(predict, self.schedule, y, x_t)
        if sampler == "ancestral":
            return sampling.sample_ancestral(predict, self.schedule, y, x_t, generator=generator)
        raise ConfigError(f"unknown sampler {sampler!r}")

    def sample(self, lq: Tensor, noise: Tensor, sampler: SamplerName = "deterministic",
               generator: torch.Generator | None = None) -> Tensor:
        self.check_size(lq)
        return self.decode(self.sample_latent(lq, noise, sampler, generator))

    def forward(self, lq: Tensor, noise: Tensor) -> Tensor:  # used by ONNX export
        return self.one_step(lq, noise)
