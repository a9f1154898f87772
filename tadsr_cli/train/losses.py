"""Loss terms of ResShift teacher training and TAD-SR distillation (DESIGN.md 1.1-1.2).

All latents are [B, C, H, W]; `t` arguments are LongTensors [B] (or ints). "mean" is over every element, so the
gradient of `hfsd_loss` with respect to the student output is exactly `g / N` (N = number of elements).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tadsr_cli.eval.stlpips import unit_normalise
from tadsr_cli.models.schedule import ResShiftSchedule

__all__ = [
    "HFSD_MODES",
    "d_hinge_loss",
    "discriminator_stats",
    "feature_match_loss",
    "g_hinge_loss",
    "hfsd_gradient",
    "hfsd_loss",
    "regression_loss",
    "teacher_x0_loss",
]

HFSDMode = Literal["tadsr", "sds", "sds+hr"]
HFSD_MODES: tuple[str, ...] = ("tadsr", "sds", "sds+hr")
# denoise(x_t, t) -> x0_hat: the frozen teacher's x0 prediction at step t (input scaling and LQ inside).
Denoiser = Callable[[Tensor, Tensor], Tensor]


def teacher_x0_loss(x0_hat: Tensor, x0: Tensor) -> Tensor:
    """ResShift training objective: latent MSE between the predicted and the true x0."""
    return F.mse_loss(x0_hat.float(), x0.float())


def regression_loss(x_s: Tensor, x_tch: Tensor) -> Tensor:
    """L_reg = mean ||x_s - sg(x_tch)||^2 (regression of the one-step student to the teacher's T-step sample)."""
    return F.mse_loss(x_s.float(), x_tch.detach().float())


def fidelity_loss(x_s: Tensor, x_hr: Tensor, weight: Tensor) -> Tensor:
    """Per-crop latent MSE to the ground truth, times ``weight`` (B,) (0 drops a crop), averaged over the batch."""
    per_crop = (x_s.float() - x_hr.detach().float()).pow(2).flatten(1).mean(1)
    return (per_crop * weight.to(per_crop)).mean()


def feature_match_loss(fake: list[Tensor], real: list[Tensor]) -> Tensor:
    """Sum over feature taps of the mean squared difference of channel-normalised features (real ones detached).

    Normalising each position's feature vector to unit length (as LPIPS does) makes the taps comparable in scale
    and the loss about what the features say, not how strong they are.
    """

    total = fake[0].new_zeros((), dtype=torch.float32)
    for f, r in zip(fake, real, strict=True):
        total = total + (unit_normalise(f.float()) - unit_normalise(r.detach().float())).pow(2).sum(1).mean()
    return total


@torch.no_grad()
def hfsd_gradient(
    x_s: Tensor,
    x_tch: Tensor | None,
    y: Tensor,
    t: Tensor,
    noise: Tensor,
    denoise: Denoiser,
    schedule: ResShiftSchedule,
    mode: HFSDMode = "tadsr",
    x_hr: Tensor | None = None,
) -> Tensor:
    """The (stop-gradient) score difference g of HFSD and its ablations.

    a = x_s + eta_t (y - x_s) + kappa sqrt(eta_t) n; eps(x) = (x - D(x) - eta_t (y - D(x))) / (kappa sqrt(eta_t)).

    * ``tadsr``: reference = the teacher output noised with the same n: g = eps(a) - eps(b), b from x_tch.
      Cancels the teacher's own denoising bias; zero when x_s == x_tch.
    * ``sds``: plain score distillation, reference = the injected noise: g = eps(a) - n.
    * ``sds+hr``: reference = the HR latent noised with the same n: g = eps(a) - eps(b), b from E(hr).
    """
    x_s = x_s.detach()
    a = schedule.q_sample(x_s, y, t, noise)
    eps_a = schedule.eps_from_x0(a, denoise(a, t), y, t)
    if mode == "tadsr" or mode == "sds+hr":
        ref = x_tch if mode == "tadsr" else x_hr
        if ref is None:
            raise ValueError(
                f"HFSD mode {mode!r} needs {'the teacher output' if mode == 'tadsr' else 'the HR latent'}"
            )
        ref = ref.detach()
        b = schedule.q_sample(ref, y, t, noise)
        eps_b = schedule.eps_from_x0(b, denoise(b, t), y, t)
    elif mode == "sds":
        eps_b = noise
    else:
        raise ValueError(f"unknown HFSD mode {mode!r}; one of {HFSD_MODES}")
    return (eps_a - eps_b).float()


def hfsd_loss(
    x_s: Tensor,
    x_tch: Tensor | None,
    y: Tensor,
    t: Tensor,
    noise: Tensor,
    denoise: Denoiser,
    schedule: ResShiftSchedule,
    mode: HFSDMode = "tadsr",
    x_hr: Tensor | None = None,
) -> Tensor:
    """L_hfsd = mean(sg(g) * x_s): its gradient w.r.t. x_s is g / N and nothing flows through the teacher."""
    g = hfsd_gradient(x_s, x_tch, y, t, noise, denoise, schedule, mode, x_hr)
    return (g * x_s.float()).mean()


def d_hinge_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def g_hinge_loss(fake_logits: Tensor) -> Tensor:
    """L_G = -E[D(fake)]."""
    return -fake_logits.float().mean()


@torch.no_grad()
def discriminator_stats(
    real_logits: Tensor, fake_logits: Tensor, t: Tensor, t_range: tuple[int, int]
) -> dict[str, Tensor]:
    """What shows that D learns: the real-fake logit gap, and the share of pairs (same crop, t and noise) where the
    real sample scores higher, overall and in the lower / upper half of the timestep range (NaN-free: an empty half
    counts as chance, 0.5)."""
    real = real_logits.float().flatten(1).mean(1)
    fake = fake_logits.float().flatten(1).mean(1)
    wins = (real > fake).float()
    mid = (t_range[0] + t_range[1]) / 2
    low = t.to(wins.device) <= mid

    def share(mask: Tensor) -> Tensor:
        return wins[mask].mean() if bool(mask.any()) else wins.new_tensor(0.5)

    return {"d_gap": (real - fake).mean(), "d_acc": wins.mean(), "d_acc_lo": share(low), "d_acc_hi": share(~low)}
