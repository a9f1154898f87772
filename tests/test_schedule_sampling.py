"""Behaviour tests: autoencoders, the residual-shifting schedule and the samplers (no reference fixtures needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tadsr_cli.base.errors import CheckpointError, ConfigError
from tadsr_cli.models import sampling
from tadsr_cli.models.autoencoders import (
    PixelUnshuffleAutoencoder,
    VQAutoencoder,
    build_autoencoder,
    diffusers_to_ldm_vq,
    ldm_to_diffusers_vq,
    ldm_vq_config,
)
from tadsr_cli.models.config import AutoencoderConfig, ScheduleConfig
from tadsr_cli.models.schedule import ResShiftSchedule, official_sqrt_etas


def _tiny_vq_cfg() -> AutoencoderConfig:
    return AutoencoderConfig(block_out_channels=[8, 16], layers_per_block=1, latent_channels=3, vq_embed_dim=3,
                             num_vq_embeddings=16, norm_num_groups=4, factor=2)


# ---------------------------------------------------------------------------------------------------------------
# Autoencoders
# ---------------------------------------------------------------------------------------------------------------
def test_pixel_unshuffle_is_lossless() -> None:
    ae = build_autoencoder(AutoencoderConfig.pixel_unshuffle(4))
    assert isinstance(ae, PixelUnshuffleAutoencoder) and ae.factor == 4
    assert sum(p.numel() for p in ae.parameters()) == 0
    img = torch.rand(2, 3, 32, 48) * 2 - 1
    z = ae.encode(img)
    assert z.shape == (2, 48, 8, 12) and AutoencoderConfig.pixel_unshuffle(4).channels == 48
    assert torch.equal(ae.decode(z), img)
    assert torch.equal(ae.decode(z, quantize=False), img)
    # A latent pixel holds exactly its 4x4 image block.
    assert torch.equal(z[0, :, 1, 2].reshape(3, 4, 4), img[0, :, 4:8, 8:12])


def test_build_vq_and_factor_check() -> None:
    ae = build_autoencoder(_tiny_vq_cfg())
    assert isinstance(ae, VQAutoencoder) and ae.factor == 2
    z = ae.encode(torch.zeros(1, 3, 16, 16))
    assert z.shape == (1, 3, 8, 8)
    with pytest.raises(ConfigError):
        VQAutoencoder(AutoencoderConfig(block_out_channels=[8, 16], norm_num_groups=4, factor=4))
    with pytest.raises(ConfigError):
        VQAutoencoder(AutoencoderConfig(block_out_channels=[8, 12], norm_num_groups=8, factor=2))


def test_vq_decode_quantises_to_nearest_code() -> None:
    torch.manual_seed(0)
    ae = VQAutoencoder(_tiny_vq_cfg()).eval()
    codebook = ae.vq.quantize.embedding.weight.detach()
    codebook.copy_(torch.randn_like(codebook))
    idx = torch.randint(0, 16, (1, 5, 6))
    exact = codebook[idx].permute(0, 3, 1, 2)  # latent made of codebook vectors
    z = exact + 0.01 * torch.randn_like(exact)
    with torch.no_grad():
        q = ae.quantize(z)
        assert torch.allclose(q, exact, atol=1e-6)
        assert torch.allclose(ae.decode(z), ae.decode(exact, quantize=False), atol=1e-5)
        assert not torch.allclose(ae.decode(z, quantize=False), ae.decode(exact, quantize=False), atol=1e-5)
        # Same as diffusers' own quantised decode.
        assert torch.allclose(ae.decode(z), ae.vq.decode(z).sample, atol=1e-5)
    # Straight-through: the gradient passes the quantiser unchanged.
    zg = z.clone().requires_grad_(True)
    ae.quantize(zg).sum().backward()
    assert torch.equal(zg.grad, torch.ones_like(zg))


def test_converter_round_trip_and_errors() -> None:
    ae = VQAutoencoder(_tiny_vq_cfg())
    sd = ae.vq.state_dict()
    ldm = diffusers_to_ldm_vq(sd)
    assert "decoder.up.0.block.0.conv1.weight" in ldm and "decoder.up.1.upsample.conv.weight" in ldm
    assert "decoder.up.0.upsample.conv.weight" not in ldm  # the highest-resolution level has no upsampler
    assert "encoder.down.0.downsample.conv.weight" in ldm and "encoder.down.1.block.0.nin_shortcut.weight" in ldm
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    assert "encoder.norm_out.weight" in ldm and "quantize.embedding.weight" in ldm
    back = ldm_to_diffusers_vq(ldm)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # Decoder levels are reversed: LDM up.0 (highest resolution) is diffusers up_blocks.(n-1).
    assert torch.equal(ldm["decoder.up.0.block.0.conv1.weight"], sd["decoder.up_blocks.1.resnets.0.conv1.weight"])
    ae2 = VQAutoencoder(_tiny_vq_cfg())
    ae2.load_ldm_state_dict(ldm)
    assert all(torch.equal(v, sd[k]) for k, v in ae2.vq.state_dict().items())
    with pytest.raises(CheckpointError, match="mystery.weight"):
        ldm_to_diffusers_vq({**ldm, "mystery.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="encoder.down_blocks.0.attentions.0.to_q.weight"):
        diffusers_to_ldm_vq({**sd, "encoder.down_blocks.0.attentions.0.to_q.weight": torch.zeros(8, 8)})
    with pytest.raises(CheckpointError, match="missing"):
        ae2.load_ldm_state_dict({k: v for k, v in ldm.items() if k != "quant_conv.bias"})
    bad = dict(ldm)
    bad["quant_conv.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="shape"):
        ae2.load_ldm_state_dict(bad)


def test_ldm_vq_config_rejects_unsupported() -> None:
    dd = {"double_z": False, "z_channels": 3, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4],
          "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    assert ldm_vq_config(dd, 8192, 3) == AutoencoderConfig()
    with pytest.raises(ConfigError, match="attn_resolutions"):
        ldm_vq_config({**dd, "attn_resolutions": [32]}, 8192, 3)


# ---------------------------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def sched() -> ResShiftSchedule:
    return ResShiftSchedule(ScheduleConfig())


def test_schedule_shape_and_endpoints(sched: ResShiftSchedule) -> None:
    assert sched.steps == 15 and sched.kappa == 2.0
    for arr in (sched.etas, sched.sqrt_etas, sched.etas_prev, sched.alpha, sched.posterior_variance):
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.shape == (15,)
    assert math.isclose(sched.sqrt_etas[0], 0.02) and math.isclose(sched.sqrt_etas[-1], 0.99)
    assert np.all(np.diff(sched.etas) > 0)
    np.testing.assert_allclose(sched.etas, sched.sqrt_etas**2)
    np.testing.assert_array_equal(sched.etas_prev, np.append(0.0, sched.etas[:-1]))
    np.testing.assert_allclose(sched.alpha, sched.etas - sched.etas_prev)


def test_schedule_options() -> None:
    # sqrt(eta_1) = min(m / kappa, m) with and without the TAD-SR cap sqrt(0.001).
    v3 = official_sqrt_etas(4, 0.2, kappa=2.0)
    assert math.isclose(v3[0], 0.1) and math.isclose(v3[-1], 0.99)
    capped = ResShiftSchedule(ScheduleConfig(steps=4, min_noise_level=0.2, sqrt_eta1_cap=math.sqrt(0.001)))
    assert math.isclose(capped.sqrt_etas[0], math.sqrt(0.001)) and math.isclose(capped.sqrt_etas[-1], 0.99)
    # The cap changes nothing for the official T = 15 schedule (0.02 < sqrt(0.001)).
    np.testing.assert_array_equal(
        ResShiftSchedule(ScheduleConfig(sqrt_eta1_cap=math.sqrt(0.001))).etas, ResShiftSchedule().etas
    )
    # power 1 is a plain geometric progression of sqrt(eta).
    geo = official_sqrt_etas(6, 0.04, power=1.0)
    np.testing.assert_allclose(geo[1:] / geo[:-1], np.full(5, geo[1] / geo[0]))
    one = ResShiftSchedule(ScheduleConfig(steps=1))
    assert one.steps == 1 and math.isclose(one.sqrt_etas[0], 0.99)
    with pytest.raises(ConfigError):
        official_sqrt_etas(0, 0.04)


def test_input_scale_shape_dtype(sched: ResShiftSchedule) -> None:
    like = torch.zeros(3, 4, 8, 8, dtype=torch.bfloat16)
    s = sched.input_scale(torch.tensor([0, 7, 14]), like)
    assert s.shape == (3, 1, 1, 1) and s.dtype == torch.bfloat16 and s.device == like.device
    s32 = sched.input_scale(14, torch.zeros(2, 3, 4, 4))
    assert s32.shape == (2, 1, 1, 1) and s32.dtype == torch.float32
    assert torch.allclose(s32, torch.full_like(s32, 1 / math.sqrt(4 * 0.99**2 + 1)))
    assert torch.equal(sched.input_scale(torch.tensor(3), like), sched.input_scale([3, 3, 3], like))
    with pytest.raises(ValueError):
        sched.input_scale(15, like)
    with pytest.raises(ValueError):
        sched.input_scale(torch.tensor([1, 2]), like)


def test_q_sample_interpolates_and_inverts(sched: ResShiftSchedule) -> None:
    torch.manual_seed(0)
    x0, y, eps = torch.randn(3, 2, 3, 5, 5).unbind(0)
    zero = torch.zeros_like(x0)
    for t in (0, 6, 14):
        eta = float(sched.etas[t])
        xt = sched.q_sample(x0, y, t, zero)
        assert torch.allclose(xt, (1 - eta) * x0 + eta * y, atol=1e-6)
        xt = sched.q_sample(x0, y, torch.full((2,), t), eps)
        assert torch.allclose(sched.eps_from_x0(xt, x0, y, t), eps, atol=1e-4)
        assert torch.allclose(sched.x0_from_eps(xt, eps, y, t), x0, atol=1e-4)
    # x0 = y at the last step is the prior.
    assert torch.allclose(sched.q_sample(y, y, 14, eps), sched.prior_sample(y, eps), atol=1e-6)
    # Mixed timesteps in one batch.
    xt = sched.q_sample(x0, y, torch.tensor([0, 14]), zero)
    assert torch.allclose(xt[1], (1 - sched.etas[14]) * x0[1] + sched.etas[14] * y[1], atol=1e-6)


def test_prior_variance(sched: ResShiftSchedule) -> None:
    torch.manual_seed(0)
    y = torch.randn(1, 3, 4, 4)
    noise = torch.randn(2000, 3, 4, 4)
    x = sched.prior_sample(y.expand_as(noise), noise)
    std = kappa_sqrt = sched.kappa * math.sqrt(sched.etas[-1])
    assert math.isclose(std, 2 * 0.99)
    assert torch.allclose(x - y, kappa_sqrt * noise, atol=1e-5)
    assert abs((x - y).std().item() - std) < 0.02 * std


def test_q_sample_is_differentiable_in_x0(sched: ResShiftSchedule) -> None:
    x0 = torch.randn(2, 3, 4, 4, requires_grad=True)
    y, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([3, 9])
    sched.q_sample(x0, y, t, eps).sum().backward()
    want = torch.tensor(1 - sched.etas[[3, 9]], dtype=torch.float32).view(2, 1, 1, 1).expand_as(x0)
    assert torch.allclose(x0.grad, want)


def test_posterior_marginalises_to_forward(sched: ResShiftSchedule) -> None:
    """If x_t ~ q(x_t|x0), stepping with q(x_{t-1}|x_t, x0) gives exactly q(x_{t-1}|x0) (mean and variance)."""
    x0, y = torch.randn(2, 1, 3, 4, 4, dtype=torch.float64).unbind(0)
    k2 = sched.kappa**2
    for t in range(1, sched.steps):
        mean_t = sched.q_sample(x0, y, t, torch.zeros_like(x0))  # E[x_t | x0]
        mean, var, logvar = sched.posterior_mean_variance(mean_t, x0, t)
        c1 = sched.posterior_mean_coef1[t]
        assert torch.allclose(mean, sched.q_sample(x0, y, t - 1, torch.zeros_like(x0)))
        assert var.shape == (1, 1, 1, 1)
        assert math.isclose(c1**2 * k2 * sched.etas[t] + var.item(), k2 * sched.etas[t - 1], rel_tol=1e-12)
        assert math.isclose(math.exp(logvar.item()), var.item(), rel_tol=1e-12)
    mean, var, _ = sched.posterior_mean_variance(torch.randn_like(x0), x0, 0)
    assert torch.equal(mean, x0) and var.item() == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------------------
def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 3, 6, 6, generator=g)
    y = x0 + 0.5 * torch.randn(2, 3, 6, 6, generator=g)
    eps = torch.randn(2, 3, 6, 6, generator=g)
    return x0, y, eps


def test_deterministic_sampler_with_oracle_recovers_x0(sched: ResShiftSchedule) -> None:
    x0, y, eps = _problem()
    x_T = sched.prior_sample(y, eps)
    # x_T is not exactly on q(x_T | x0) (eta_T = 0.98 < 1): its implied noise differs from eps.
    eps_T = sched.eps_from_x0(x_T, x0, y, sched.steps - 1)
    seen: list[int] = []

    def oracle(x_t: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(t)
        # The eta=0 sampler keeps the trajectory on the forward process with the *same* implied noise.
        assert torch.allclose(x_t, sched.q_sample(x0, y, t, eps_T), atol=1e-5), t
        return x0

    out = sampling.sample_deterministic(oracle, sched, y, x_T)
    assert seen == list(range(14, -1, -1))
    assert torch.equal(out, x0)


def test_deterministic_step(sched: ResShiftSchedule) -> None:
    x0, y, eps = _problem(1)
    x5 = sched.q_sample(x0, y, 5, eps)
    assert torch.allclose(sampling.deterministic_step(sched, x5, x0, y, 5), sched.q_sample(x0, y, 4, eps), atol=1e-5)
    assert torch.equal(sampling.deterministic_step(sched, x5, x0, y, 0), x0)


def test_ancestral_sampler(sched: ResShiftSchedule) -> None:
    x0, y, eps = _problem(2)
    x_T = sched.prior_sample(y, eps)

    def oracle(x_t: torch.Tensor, t: int) -> torch.Tensor:
        return x0

    # The last step returns the x0 prediction itself (no noise at t = 0).
    assert torch.equal(sampling.sample_ancestral(oracle, sched, y, x_T), x0)

    # With a predictor that depends on x_t the result depends on the noises; given noises it is reproducible.
    def blur(x_t: torch.Tensor, t: int) -> torch.Tensor:
        return 0.5 * (x_t + y)

    noises = [torch.randn_like(x0) for _ in range(sched.steps - 1)]
    a = sampling.sample_ancestral(blur, sched, y, x_T, noises=noises)
    b = sampling.sample_ancestral(blur, sched, y, x_T, noises=noises)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    c = sampling.sample_ancestral(blur, sched, y, x_T, generator=g1)
    d = sampling.sample_ancestral(blur, sched, y, x_T, generator=g2)
    assert torch.equal(c, d) and not torch.allclose(a, c)
    # Reproduce by hand with the documented noise order (noises[0] at t = T-1).
    x = x_T
    for i, t in enumerate(range(sched.steps - 1, 0, -1)):
        mean, var, _ = sched.posterior_mean_variance(x, blur(x, t), t)
        x = mean + var.sqrt() * noises[i]
    assert torch.allclose(a, blur(x, 0), atol=1e-5)
    with pytest.raises(ValueError):
        sampling.sample_ancestral(blur, sched, y, x_T, noises=noises[:3])


def test_ancestral_step(sched: ResShiftSchedule) -> None:
    x0, y, eps = _problem(3)
    x_t = sched.q_sample(x0, y, 9, eps)
    noise = torch.randn_like(x0)
    mean, var, _ = sched.posterior_mean_variance(x_t, x0, 9)
    step = sampling.ancestral_step(sched, x_t, x0, 9, noise)
    assert torch.allclose(step, mean + var.sqrt() * noise, atol=1e-6)
    assert torch.equal(sampling.ancestral_step(sched, x_t, x0, 0, noise), sampling.ancestral_step(sched, x_t, x0, 0))
    assert torch.equal(sampling.ancestral_step(sched, x_t, x0, 0), x0)
    with pytest.raises(ValueError):
        sampling.ancestral_step(sched, x_t, x0, 3)
