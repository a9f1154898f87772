"""Loss terms of teacher training and TAD-SR distillation on tiny tensors: values and gradients (DESIGN.md 1.2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tadsr_cli.models.config import ScheduleConfig
from tadsr_cli.models.schedule import ResShiftSchedule
from tadsr_cli.train.losses import (
    d_hinge_loss,
    g_hinge_loss,
    hfsd_gradient,
    hfsd_loss,
    regression_loss,
    teacher_x0_loss,
)


@pytest.fixture(scope="module")
def schedule() -> ResShiftSchedule:
    return ResShiftSchedule(ScheduleConfig(steps=15))


class ToyTeacher(nn.Module):
    """A small nonlinear x0-predictor with parameters (to check that none of them gets gradient)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) + 0.05 * t.view(-1, 1, 1, 1).float()


def _inputs(seed: int = 0, shape=(2, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(shape, generator=g)
    x_tch = torch.randn(shape, generator=g)
    y = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    t = torch.tensor([0, 2])
    return x_s, x_tch, y, noise, t


def _manual_eps(x, x0_hat, y, t, schedule):
    eta = torch.tensor(schedule.etas, dtype=torch.float64)[t].view(-1, 1, 1, 1).float()
    return (x - x0_hat - eta * (y - x0_hat)) / (schedule.kappa * eta.sqrt())


def _manual_perturb(x, y, t, noise, schedule):
    eta = torch.tensor(schedule.etas, dtype=torch.float64)[t].view(-1, 1, 1, 1).float()
    return x + eta * (y - x) + schedule.kappa * eta.sqrt() * noise


def test_hfsd_gradient_equals_score_difference_over_n(schedule):
    teacher = ToyTeacher()
    x_s, x_tch, y, noise, t = _inputs()
    x_s.requires_grad_(True)
    loss = hfsd_loss(x_s, x_tch, y, t, noise, teacher, schedule, mode="tadsr")
    loss.backward()
    # independent computation of g = eps(a) - eps(b) from DESIGN.md 1.2
    with torch.no_grad():
        a = _manual_perturb(x_s, y, t, noise, schedule)
        b = _manual_perturb(x_tch, y, t, noise, schedule)
        g = _manual_eps(a, teacher(a, t), y, t, schedule) - _manual_eps(b, teacher(b, t), y, t, schedule)
    n = x_s.numel()
    torch.testing.assert_close(x_s.grad, g / n, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss.detach(), (g * x_s.detach()).mean(), rtol=1e-5, atol=1e-7)
    # nothing flows into the teacher
    assert all(p.grad is None for p in teacher.parameters())
    assert g.abs().max() > 0


def test_hfsd_zero_when_student_equals_teacher(schedule):
    teacher = ToyTeacher()
    x_s, _, y, noise, t = _inputs(1)
    x_s.requires_grad_(True)
    loss = hfsd_loss(x_s, x_s.detach().clone(), y, t, noise, teacher, schedule, mode="tadsr")
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(x_s.grad) == 0


def test_hfsd_sds_variants(schedule):
    teacher = ToyTeacher()
    x_s, x_tch, y, noise, t = _inputs(2)
    x_hr = torch.randn_like(x_s)
    a = _manual_perturb(x_s, y, t, noise, schedule)
    eps_a = _manual_eps(a, teacher(a, t), y, t, schedule)
    g_sds = hfsd_gradient(x_s, None, y, t, noise, teacher, schedule, mode="sds")
    torch.testing.assert_close(g_sds, eps_a - noise, rtol=1e-5, atol=1e-5)
    g_hr = hfsd_gradient(x_s, None, y, t, noise, teacher, schedule, mode="sds+hr", x_hr=x_hr)
    b = _manual_perturb(x_hr, y, t, noise, schedule)
    torch.testing.assert_close(g_hr, eps_a - _manual_eps(b, teacher(b, t), y, t, schedule), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        hfsd_gradient(x_s, None, y, t, noise, teacher, schedule, mode="tadsr")
    with pytest.raises(ValueError):
        hfsd_gradient(x_s, x_tch, y, t, noise, teacher, schedule, mode="nope")  # type: ignore[arg-type]


def test_regression_value_and_gradient():
    x_s, x_tch, *_ = _inputs(3)
    x_s.requires_grad_(True)
    x_tch.requires_grad_(True)  # the target is stop-gradient
    loss = regression_loss(x_s, x_tch)
    loss.backward()
    diff = (x_s - x_tch).detach()
    torch.testing.assert_close(loss.detach(), (diff**2).mean())
    torch.testing.assert_close(x_s.grad, 2 * diff / diff.numel())
    assert x_tch.grad is None


def test_teacher_x0_loss_is_mse():
    a, b, *_ = _inputs(4)
    assert math.isclose(teacher_x0_loss(a, b).item(), ((a - b) ** 2).mean().item(), rel_tol=1e-6)


def test_hinge_values_and_gradients():
    real = torch.tensor([2.0, 0.5, -1.0], requires_grad=True)
    fake = torch.tensor([-2.0, 0.0, 1.0], requires_grad=True)
    l_d = d_hinge_loss(real, fake)
    # relu(1 - real) = [0, 0.5, 2]; relu(1 + fake) = [0, 1, 2]
    assert math.isclose(l_d.item(), 2.5 / 3 + 3.0 / 3, rel_tol=1e-6)
    l_d.backward()
    torch.testing.assert_close(real.grad, torch.tensor([0.0, -1.0, -1.0]) / 3)
    torch.testing.assert_close(fake.grad, torch.tensor([0.0, 1.0, 1.0]) / 3)
    fake2 = torch.tensor([-2.0, 0.0, 1.0], requires_grad=True)
    l_g = g_hinge_loss(fake2)
    assert math.isclose(l_g.item(), 1.0 / 3, rel_tol=1e-6)
    l_g.backward()
    torch.testing.assert_close(fake2.grad, torch.full((3,), -1.0 / 3))
