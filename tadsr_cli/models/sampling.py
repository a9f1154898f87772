"""Samplers over an x0-predictor (DESIGN.md 1.1).

`predict(x_t, t) -> x0_hat` is any callable taking the *unscaled* noisy latent and the integer step; scaling the
input by `schedule.input_scale`, conditioning on the LQ image and residual parameterisation live in the caller
(`DiffusionSR.predict_x0`).

Both samplers walk t = T-1 .. 0 and return the last step's output, which is the x0 estimate at t = 0: there the
posterior coefficients are (0, 1) and eta_{-1} = 0, so ResShift's ancestral `p_sample_loop` (no noise at t = 0) and
the deterministic (eta = 0, SinSR) sampler both end on `predict(x_0, 0)` exactly. No clipping is applied: latents
are not bounded (the official sampler clips only in pixel space, i.e. without an autoencoder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tadsr_cli.models.schedule import ResShiftSchedule

__all__ = ["ancestral_step", "deterministic_step", "sample_ancestral", "sample_deterministic"]

Predictor = Callable[[Tensor, int], Tensor]


def ancestral_step(
    schedule: ResShiftSchedule, x_t: Tensor, x0_hat: Tensor, t: int, noise: Tensor | None = None
) -> Tensor:
    """x_{t-1} ~ q(x_{t-1} | x_t, x0_hat): posterior mean + posterior std * noise (no noise at t = 0)."""
    mean, _, _ = schedule.posterior_mean_variance(x_t, x0_hat, t)
    if t == 0:
        return mean
    if noise is None:
        raise ValueError(f"ancestral_step at t={t} needs a noise tensor")
    return mean + schedule.posterior_std(t, x_t) * noise


def deterministic_step(schedule: ResShiftSchedule, x_t: Tensor, x0_hat: Tensor, y: Tensor, t: int) -> Tensor:
    """DDIM-like step with eta = 0 (SinSR): keep the implied noise, move x0_hat to the t-1 marginal.

        eps_hat = (x_t - x0_hat - eta_t (y - x0_hat)) / (kappa sqrt(eta_t))
        x_{t-1} = x0_hat + eta_{t-1} (y - x0_hat) + kappa sqrt(eta_{t-1}) eps_hat      (= x0_hat at t = 0)
    """
    if t == 0:
        return x0_hat
    eps_hat = schedule.eps_from_x0(x_t, x0_hat, y, t)
    return (
        x0_hat
        + schedule.extract("etas_prev", t, x_t) * (y - x0_hat)
        + schedule.extract("kappa_sqrt_etas_prev", t, x_t) * eps_hat
    )


def sample_deterministic(predict: Predictor, schedule: ResShiftSchedule, y: Tensor, x_T: Tensor) -> Tensor:
    """T-step deterministic sampler from x_T; returns the final x0 estimate (the teacher target of TAD-SR)."""
    x = x_T
    for t in range(schedule.steps - 1, -1, -1):
        x0_hat = predict(x, t)
        x = deterministic_step(schedule, x, x0_hat, y, t)
    return x


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn_like(x)
    gen_device = torch.device(generator.device)
    noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype)
    return noise.to(x.device)


def sample_ancestral(
    predict: Predictor,
    schedule: ResShiftSchedule,
    y: Tensor,
    x_T: Tensor,
    generator: torch.Generator | None = None,
    noises: Sequence[Tensor] | None = None,
) -> Tensor:
    """ResShift's ancestral sampler from x_T; returns the final x0 estimate.

    The step at t >= 1 adds `noises[T-1-t]` (so `noises[0]` is used first, at t = T-1) when `noises` is given
    (length T-1, or T with the last entry unused), else fresh noise from `generator` (or the global RNG).
    `y` is unused by the update itself (it enters through `predict`) and kept for a uniform signature.
    """
    steps = schedule.steps
    if noises is not None and len(noises) < steps - 1:
        raise ValueError(f"sample_ancestral needs {steps - 1} noise tensors, got {len(noises)}")
    x = x_T
    for i, t in enumerate(range(steps - 1, -1, -1)):
        x0_hat = predict(x, t)
        if t == 0:
            return ancestral_step(schedule, x, x0_hat, 0)
        noise = noises[i] if noises is not None else _randn_like(x, generator)
        x = ancestral_step(schedule, x, x0_hat, t, noise)
    return x  # unreachable: steps >= 1
