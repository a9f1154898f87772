"""Parity suite, part 2: autoencoder, key layout, schedules and samplers against the ResShift reference fixtures.

Fixtures live in `../shared/reference/resshift` (see its README). These tests FAIL, never skip, when it is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tadsr_cli.errors import CheckpointError
from tadsr_cli.models import sampling
from tadsr_cli.models.autoencoders import (
    VQAutoencoder,
    diffusers_to_ldm_vq,
    ldm_to_diffusers_vq,
    ldm_vq_config,
)
from tadsr_cli.models.config import AutoencoderConfig, DenoiserConfig, ScheduleConfig
from tadsr_cli.models.schedule import ResShiftSchedule

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REF = SHARED / "reference" / "resshift"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref() -> Path:
    if not REF.is_dir():
        pytest.fail(f"reference fixtures missing: {REF} (the parity suite needs ../shared/reference)")
    return REF


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------
# Autoencoder
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_vq(ref: Path) -> VQAutoencoder:
    cfg = json.loads((ref / "small_vq.json").read_text())["config"]
    model = VQAutoencoder(ldm_vq_config(cfg["ddconfig"], cfg["n_embed"], cfg["embed_dim"])).eval()
    model.load_ldm_state_dict(load_file(ref / "small_vq_weights.safetensors"))  # strict
    return model


def test_small_vq_config_matches_reference(small_vq: VQAutoencoder) -> None:
    # ch 32: 32 GroupNorm groups of one channel each at the first level, as in LDM's Normalize().
    assert small_vq.factor == 4
    assert list(small_vq.vq.config.block_out_channels) == [32, 64, 128]
    assert small_vq.vq.quantize.embedding.weight.shape == (64, 3)


def test_small_vq_encode_decode_parity(ref: Path, small_vq: VQAutoencoder) -> None:
    io = load_file(ref / "small_vq_io.safetensors")
    with torch.no_grad():
        z = small_vq.encode(io["img"])
        assert _max_err(z, io["z"]) <= TOL
        # Decode from the reference latent so that encode errors cannot flip a codebook choice.
        assert _max_err(small_vq.decode(io["z"]), io["decoded_quantized"]) <= TOL
        assert _max_err(small_vq.decode(io["z"], quantize=False), io["decoded_not_quantized"]) <= TOL
        # End to end from our own latent as well (no near-ties in this fixture).
        assert _max_err(small_vq.decode(z), io["decoded_quantized"]) <= TOL


def test_small_vq_quantised_decode_equals_diffusers_decode(ref: Path, small_vq: VQAutoencoder) -> None:
    io = load_file(ref / "small_vq_io.safetensors")
    with torch.no_grad():
        ours = small_vq.decode(io["z"])
        theirs = small_vq.vq.decode(io["z"]).sample  # diffusers' own decode (cdist nearest code)
    assert _max_err(ours, theirs) <= 1e-5


def test_converter_round_trip_is_identity(ref: Path) -> None:
    sd = load_file(ref / "small_vq_weights.safetensors")
    diff = ldm_to_diffusers_vq(sd)
    back = diffusers_to_ldm_vq(diff)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].shape == sd[k].shape and torch.equal(back[k], sd[k]), k
    again = ldm_to_diffusers_vq(back)
    assert again.keys() == diff.keys() and all(torch.equal(again[k], diff[k]) for k in diff)


def test_converter_rejects_unknown_keys(ref: Path) -> None:
    sd = dict(load_file(ref / "small_vq_weights.safetensors"))
    sd["loss.discriminator.main.0.weight"] = torch.zeros(1)
    sd["encoder.down.0.attn.0.q.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(CheckpointError) as exc:
        ldm_to_diffusers_vq(sd)
    assert "loss.discriminator.main.0.weight" in str(exc.value)
    assert "encoder.down.0.attn.0.q.weight" in str(exc.value)


def test_full_size_vq_f4_layout(ref: Path) -> None:
    layout = json.loads((ref / "ldm_vq_f4_layout.json").read_text())
    dd = layout["config"]
    # The default AutoencoderConfig is the official VQ-f4, and so is the config read from the official YAML.
    assert ldm_vq_config(dd["ddconfig"], dd["n_embed"], dd["embed_dim"]) == AutoencoderConfig()
    model = VQAutoencoder(AutoencoderConfig())
    assert sum(p.numel() for p in model.parameters()) == layout["num_parameters"] == 55_322_782
    ldm = diffusers_to_ldm_vq(model.vq.state_dict())
    expected = {k: list(v) for k, v in layout["state_dict_layout"].items()}
    assert sorted(ldm) == sorted(expected)
    wrong = {k: (list(v.shape), expected[k]) for k, v in ldm.items() if list(v.shape) != expected[k]}
    assert not wrong
    # And back: the official layout converts to exactly the diffusers state dict.
    diff = ldm_to_diffusers_vq(ldm)
    own = model.vq.state_dict()
    assert diff.keys() == own.keys()
    assert all(diff[k].shape == own[k].shape for k in own)


# ---------------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------------
SCHEDULES = {
    "resshift_v1_v2_T15": ScheduleConfig(steps=15, kappa=2.0, min_noise_level=0.04),
    "resshift_v3_T4": ScheduleConfig(steps=4, kappa=2.0, min_noise_level=0.2),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_parity(ref: Path, name: str) -> None:
    data = json.loads((ref / "schedules.json").read_text())[name]
    sched = ResShiftSchedule(SCHEDULES[name])
    assert sched.kappa == data["kappa"]
    arrays = [k for k, v in data.items() if isinstance(v, list)]
    assert {"etas", "sqrt_etas", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2",
            "input_scale_divisor"} <= set(arrays)
    for key in arrays:
        want = np.asarray(data[key], dtype=np.float64)
        got = np.asarray(getattr(sched, key), dtype=np.float64)
        assert got.dtype == np.float64 and got.shape == want.shape, key
        rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-12)
        assert rel.max() <= 1e-6, (key, rel.max())
    t = torch.arange(sched.steps)
    scale = sched.input_scale(t, torch.zeros(sched.steps, 3, 2, 2, dtype=torch.float64))
    np.testing.assert_allclose(1.0 / scale.flatten().numpy(), data["input_scale_divisor"], rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Samplers with the small denoiser
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_unet(ref: Path) -> torch.nn.Module:
    from tadsr_cli.models.unet_swin import UNetModelSwin

    cfg = DenoiserConfig.from_dict(json.loads((ref / "small_unet.json").read_text())["config"])
    model = UNetModelSwin(**cfg.to_kwargs())
    model.load_state_dict(load_file(ref / "small_unet_weights.safetensors"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def sampling_io(ref: Path) -> dict[str, torch.Tensor]:
    return load_file(ref / "small_sampling_io.safetensors")


@pytest.fixture(scope="module")
def t15() -> ResShiftSchedule:
    return ResShiftSchedule(SCHEDULES["resshift_v1_v2_T15"])


def _predictor(model: torch.nn.Module, sched: ResShiftSchedule, lq: torch.Tensor):
    def predict(x_t: torch.Tensor, t: int) -> torch.Tensor:
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long)
        return model(x_t * sched.input_scale(tt, x_t), tt, lq=lq)

    return predict


def test_prior_sample_parity(sampling_io: dict[str, torch.Tensor], t15: ResShiftSchedule) -> None:
    x_T = t15.prior_sample(sampling_io["z_y"], sampling_io["eps"])
    assert _max_err(x_T, sampling_io["x_T"]) <= 1e-5


def test_one_step_parity(small_unet, sampling_io, t15: ResShiftSchedule) -> None:
    predict = _predictor(small_unet, t15, sampling_io["lq"])
    with torch.no_grad():
        x0 = predict(sampling_io["x_T"], t15.steps - 1)
    assert _max_err(x0, sampling_io["x0_one_step"]) <= TOL


def test_one_ancestral_step_parity(small_unet, sampling_io, t15: ResShiftSchedule) -> None:
    predict = _predictor(small_unet, t15, sampling_io["lq"])
    t = t15.steps - 1
    with torch.no_grad():
        x0 = predict(sampling_io["x_T"], t)
        x_prev = sampling.ancestral_step(t15, sampling_io["x_T"], x0, t, sampling_io["ancestral_noise"])
    assert _max_err(x_prev, sampling_io["x_T_minus_1_ancestral"]) <= TOL


def test_deterministic_T15_parity(small_unet, sampling_io, t15: ResShiftSchedule) -> None:
    predict = _predictor(small_unet, t15, sampling_io["lq"])
    with torch.no_grad():
        x0 = sampling.sample_deterministic(predict, t15, sampling_io["z_y"], sampling_io["x_T"])
    assert _max_err(x0, sampling_io["x0_deterministic_T15"]) <= TOL
