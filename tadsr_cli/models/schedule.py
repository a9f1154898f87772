"""The residual-shifting (ResShift) noise schedule and its forward/posterior formulas (DESIGN.md 1.1).

All tables are float64 numpy arrays indexed by the integer step `t = 0 .. T-1` (t = 0 is the least noisy step):

    forward:    x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps
    prior:      x_T = y + kappa sqrt(eta_{T-1}) eps            (the last table entry, eta_{T-1} ~= 0.98)
    posterior:  q(x_{t-1} | x_t, x0) = N(coef1_t x_t + coef2_t x0, kappa^2 eta_{t-1}/eta_t (eta_t - eta_{t-1}))

`t` arguments are LongTensors [B] (a Python int or a 0-d tensor is broadcast over the batch). Coefficients are
gathered on the tensor's device and cast to its floating dtype, so every formula is differentiable in its tensor
arguments and works on any device (float64 tables never reach devices without float64 support).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.models.config import ScheduleConfig

__all__ = ["ResShiftSchedule", "official_sqrt_etas"]

TimeArg = Tensor | int | Sequence[int]


def official_sqrt_etas(
    steps: int,
    min_noise_level: float,
    etas_end: float = 0.99,
    kappa: float = 2.0,
    power: float = 0.3,
    sqrt_eta1_cap: float | None = None,
) -> np.ndarray:
    """sqrt(eta_t), t = 0..T-1, as ResShift's `get_named_eta_schedule('exponential', ...)` computes it.

    `sqrt_eta1_cap` (TAD-SR code base: sqrt(0.001)) additionally caps sqrt(eta_1). With a single step the schedule
    is just the prior level `[etas_end]` (the official formula divides by T - 1).
    """
    if steps < 1:
        raise ConfigError(f"schedule.steps must be >= 1, got {steps}")
    if kappa <= 0 or min_noise_level <= 0 or not 0 < etas_end <= 1:
        raise ConfigError(
            f"schedule: need kappa > 0, min_noise_level > 0 and 0 < etas_end <= 1 "
            f"(got {kappa}, {min_noise_level}, {etas_end})"
        )
    if steps == 1:
        return np.array([etas_end], dtype=np.float64)
    candidates = [min_noise_level / kappa, min_noise_level]
    if sqrt_eta1_cap is not None:
        candidates.append(sqrt_eta1_cap)
    etas_start = min(candidates)
    if etas_start >= etas_end:
        raise ConfigError(f"schedule: sqrt(eta_1) = {etas_start} must be below etas_end = {etas_end}")
    # Same operations, in the same order, as the official code (float64 throughout).
    increaser = math.exp(1 / (steps - 1) * math.log(etas_end / etas_start))
    base = np.ones([steps]) * increaser
    power_timestep = np.linspace(0, 1, steps, endpoint=True) ** power
    power_timestep *= steps - 1
    return np.power(base, power_timestep) * etas_start


class ResShiftSchedule:
    """Tables and formulas of the residual-shifting diffusion. Not an `nn.Module`: it holds no parameters."""

    def __init__(self, cfg: ScheduleConfig | None = None) -> None:
        cfg = ScheduleConfig() if cfg is None else cfg
        self.config = cfg
        self.kappa = float(cfg.kappa)
        self.sqrt_etas = official_sqrt_etas(
            cfg.steps, cfg.min_noise_level, cfg.etas_end, cfg.kappa, cfg.power, cfg.sqrt_eta1_cap
        )
        self.etas = self.sqrt_etas**2
        self.steps = int(self.etas.shape[0])
        self.etas_prev = np.append(0.0, self.etas[:-1])
        self.alpha = self.etas - self.etas_prev
        k2 = self.kappa**2
        # q(x_{t-1} | x_t, x0), official definitions.
        self.posterior_variance = k2 * self.etas_prev / self.etas * self.alpha
        if self.steps > 1:
            self.posterior_variance_clipped = np.append(self.posterior_variance[1], self.posterior_variance[1:])
        else:
            self.posterior_variance_clipped = np.array([k2 * self.etas[0]])
        self.posterior_log_variance_clipped = np.log(self.posterior_variance_clipped)
        self.posterior_mean_coef1 = self.etas_prev / self.etas
        self.posterior_mean_coef2 = self.alpha / self.etas
        # The network sees x_t / sqrt(kappa^2 eta_t + 1) (latent inputs, official `_scale_input`).
        self.input_scale_divisor = np.sqrt(k2 * self.etas + 1.0)
        # Derived tables used by the formulas below.
        self._tables: dict[str, np.ndarray] = {
            "etas": self.etas,
            "etas_prev": self.etas_prev,
            "kappa_sqrt_etas": self.kappa * self.sqrt_etas,
            "kappa_sqrt_etas_prev": self.kappa * np.sqrt(self.etas_prev),
            "input_scale": 1.0 / self.input_scale_divisor,
            "coef1": self.posterior_mean_coef1,
            "coef2": self.posterior_mean_coef2,
            "post_var": self.posterior_variance,
            "post_std": np.sqrt(self.posterior_variance),
            "post_logvar": self.posterior_log_variance_clipped,
        }
        self._cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    def __repr__(self) -> str:
        return f"ResShiftSchedule(steps={self.steps}, kappa={self.kappa}, eta=[{self.etas[0]:.4g} .. {self.etas[-1]:.4g}])"

    # ---- indexing --------------------------------------------------------------------------------------------
    def timesteps(self, t: TimeArg, batch: int, device: torch.device | str | None = None) -> Tensor:
        """A LongTensor [batch] of step indices (ints and 0-d tensors are broadcast); range-checked when cheap."""
        if isinstance(t, int):
            if not 0 <= t < self.steps:
                raise ValueError(f"timestep {t} outside [0, {self.steps - 1}]")
            return torch.full((batch,), t, dtype=torch.long, device=device)
        if isinstance(t, Tensor):
            tt = t.to(device=device if device is not None else t.device, dtype=torch.long)
        else:
            tt = torch.as_tensor(t, dtype=torch.long, device=device)
        if tt.ndim == 0:
            tt = tt.expand(batch)
        elif tt.ndim != 1 or tt.shape[0] != batch:
            raise ValueError(f"timesteps must be a scalar or have shape [{batch}], got {tuple(tt.shape)}")
        # Range check only where it costs no device sync and does not break graph capture (export/compile).
        tracing = torch.compiler.is_compiling() or torch.jit.is_tracing()
        if tt.device.type == "cpu" and tt.numel() and not tracing:
            lo, hi = int(tt.min()), int(tt.max())
            if lo < 0 or hi >= self.steps:
                raise ValueError(f"timesteps must lie in [0, {self.steps - 1}], got {tt.tolist()}")
        return tt

    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> Tensor:
        if torch.compiler.is_compiling():
            # Never let a traced/fake tensor into the cache (torch.export, torch.compile).
            return torch.tensor(self._tables[name].tolist(), dtype=dtype, device=device)
        key = (name, device, dtype)
        tab = self._cache.get(key)
        if tab is None:
            tab = torch.from_numpy(self._tables[name]).to(dtype).to(device)
            self._cache[key] = tab
        return tab

    def extract(self, name: str, t: TimeArg, like: Tensor) -> Tensor:
        """Table `name` at steps `t`, shaped [B, 1, ..., 1] to broadcast against `like`, in `like`'s dtype/device."""
        dtype = like.dtype if like.is_floating_point() else torch.float32
        tt = self.timesteps(t, like.shape[0], like.device)
        vals = self._table(name, like.device, dtype)[tt]
        return vals.view(-1, *([1] * (like.ndim - 1)))

    # ---- formulas --------------------------------------------------------------------------------------------
    def input_scale(self, t: TimeArg, like: Tensor) -> Tensor:
        """1 / sqrt(kappa^2 eta_t + 1) as a [B, 1, 1, 1] tensor: the network input is `x_t * input_scale`."""
        return self.extract("input_scale", t, like)

    def q_sample(self, x0: Tensor, y: Tensor, t: TimeArg, noise: Tensor) -> Tensor:
        """x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) noise."""
        return self.extract("etas", t, x0) * (y - x0) + x0 + self.extract("kappa_sqrt_etas", t, x0) * noise

    def prior_sample(self, y: Tensor, noise: Tensor) -> Tensor:
        """x_T = y + kappa sqrt(eta_T) noise (the last step's marginal with x0 replaced by y)."""
        return y + float(self.kappa * self.sqrt_etas[-1]) * noise

    def eps_from_x0(self, x_t: Tensor, x0: Tensor, y: Tensor, t: TimeArg) -> Tensor:
        """The noise that maps x0 to x_t: (x_t - x0 - eta_t (y - x0)) / (kappa sqrt(eta_t))."""
        return (x_t - x0 - self.extract("etas", t, x_t) * (y - x0)) / self.extract("kappa_sqrt_etas", t, x_t)

    def x0_from_eps(self, x_t: Tensor, eps: Tensor, y: Tensor, t: TimeArg) -> Tensor:
        """Inverse of `eps_from_x0` in x0: (x_t - kappa sqrt(eta_t) eps - eta_t y) / (1 - eta_t)."""
        etas = self.extract("etas", t, x_t)
        return (x_t - self.extract("kappa_sqrt_etas", t, x_t) * eps - etas * y) / (1.0 - etas)

    def posterior_mean_variance(self, x_t: Tensor, x0: Tensor, t: TimeArg) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t-1} | x_t, x0): (mean, variance, clipped log-variance); variances are [B, 1, 1, 1].

        mean = (eta_{t-1}/eta_t) x_t + ((eta_t - eta_{t-1})/eta_t) x0,
        variance = kappa^2 eta_{t-1}/eta_t (eta_t - eta_{t-1}) (0 at t = 0; the log uses the official clipping).
        """
        mean = self.extract("coef1", t, x_t) * x_t + self.extract("coef2", t, x_t) * x0
        return mean, self.extract("post_var", t, x_t), self.extract("post_logvar", t, x_t)

    def posterior_std(self, t: TimeArg, like: Tensor) -> Tensor:
        """sqrt(posterior variance) at t as [B, 1, 1, 1] (0 at t = 0)."""
        return self.extract("post_std", t, like)
