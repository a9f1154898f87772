"""Parity with the public ResShift reference implementation (numeric fixtures in ../shared/reference/resshift).

The fixtures were produced by the reference code with random weights: if this project's networks load those weights
strictly and reproduce the outputs, released checkpoints load and give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tadsr_cli.base.errors import CheckpointError
from tadsr_cli.models import sampling
from tadsr_cli.models.autoencoders import (
    VQAutoencoder,
    diffusers_to_ldm_vq,
    ldm_to_diffusers_vq,
    ldm_vq_config,
)
from tadsr_cli.models.config import AutoencoderConfig, DenoiserConfig, ScheduleConfig
from tadsr_cli.models.schedule import ResShiftSchedule
from tadsr_cli.models.unet_swin import UNetModelSwin, buffer_keys, required_multiple

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESSHIFT = SHARED / "reference" / "resshift"

# Max abs error against the reference outputs, measured at 1 and 2 threads: denoiser <= 1.2e-7, samplers <= 4.8e-7
# (one float32 ulp of the ancestral step's values), the VQ autoencoder <= 4.8e-6 (the README's "<= 5e-6").
UNET_TOL = 5e-7
FULL_UNET_PARAMS = 118_593_583
SMALL_UNET_PARAMS = 4_666_631


def _fixture(name: str) -> Path:
    """Path of a reference fixture; fail (never skip) when the shared folder is missing."""
    path = RESSHIFT / name
    if not path.is_file():
        pytest.fail(
            f"reference fixture {path} is missing: the parity suite needs the shared folder {SHARED} "
            "(a checkout of the project's `shared/` next to the repository)"
        )
    return path


def _load_safetensors(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(_fixture(name)))


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def small_config() -> DenoiserConfig:
    data = json.loads(_fixture("small_unet.json").read_text())
    assert data["num_parameters"] == SMALL_UNET_PARAMS
    return DenoiserConfig.from_dict(data["config"])


@pytest.fixture(scope="module")
def small_weights() -> dict[str, torch.Tensor]:
    return _load_safetensors("small_unet_weights.safetensors")


@pytest.fixture(scope="module")
def small_io() -> dict[str, torch.Tensor]:
    return _load_safetensors("small_unet_io.safetensors")


@pytest.fixture(scope="module")
def small_unet(small_config, small_weights) -> UNetModelSwin:
    model = UNetModelSwin(**small_config.to_kwargs()).eval()
    model.load_state_dict(small_weights, strict=True)
    return model


def _run_case(model: nn.Module, io: dict[str, torch.Tensor], case: str) -> torch.Tensor:
    with torch.no_grad():
        return model(io[f"{case}.x"], io[f"{case}.t"], lq=io[f"{case}.lq"])


@pytest.fixture(scope="module")
def small_outputs(small_unet, small_io) -> dict[str, torch.Tensor]:
    """Outputs of the strictly loaded small denoiser, computed once per case."""
    return {case: _run_case(small_unet, small_io, case) for case in ("sq64", "rect64x128")}


def test_shared_reference_folder_present():
    assert RESSHIFT.is_dir(), f"missing {RESSHIFT}: the parity suite needs ../shared/reference/resshift"


# ---- denoiser ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["sq64", "rect64x128"])
def test_small_unet_matches_reference_outputs(small_outputs, small_io, case):
    out = small_outputs[case]
    ref = small_io[f"{case}.out"]
    assert out.shape == ref.shape
    err = (out - ref).abs().max().item()
    assert err <= UNET_TOL, f"{case}: max abs error {err:.3e} > {UNET_TOL}"


def test_small_unet_parameter_count(small_unet):
    assert _n_params(small_unet) == SMALL_UNET_PARAMS


def test_full_unet_layout_matches_official():
    layout_file = json.loads(_fixture("resshift_realsr_x4_unet_layout.json").read_text())
    cfg = DenoiserConfig()
    assert cfg.to_kwargs() == {**cfg.to_kwargs(), **layout_file["config"]}, "DenoiserConfig defaults drifted"
    with torch.device("meta"):
        model = UNetModelSwin(**cfg.to_kwargs())
    layout = layout_file["state_dict_layout"]
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(layout) - set(got))
    extra = sorted(set(got) - set(layout))
    assert not missing and not extra, f"missing {missing[:5]}..., unexpected {extra[:5]}..."
    wrong = {k: (got[k], layout[k]) for k in layout if got[k] != layout[k]}
    assert not wrong, f"shape mismatches: {dict(list(wrong.items())[:5])}"
    assert list(got) == list(layout), "state-dict order differs from the reference"
    assert len(got) == 564
    assert _n_params(model) == layout_file["num_parameters"] == FULL_UNET_PARAMS


def test_recomputed_buffers_equal_reference_buffers(small_config, small_weights):
    """attn_mask / relative_position_index are pure functions of the config: ours equal the stored ones exactly."""
    fresh = UNetModelSwin(**small_config.to_kwargs()).state_dict()
    keys = buffer_keys(small_weights)
    assert keys and all(k.endswith(("attn_mask", "relative_position_index")) for k in keys)
    assert any(k.endswith("attn_mask") for k in keys)
    for k in keys:
        assert fresh[k].dtype == small_weights[k].dtype, k
        assert torch.equal(fresh[k], small_weights[k]), f"{k} differs from the reference buffer"


def test_loading_without_buffers_gives_same_output(small_config, small_weights, small_io, small_outputs):
    stripped = {k: v for k, v in small_weights.items() if k not in set(buffer_keys(small_weights))}
    assert len(stripped) < len(small_weights)
    model = UNetModelSwin(**small_config.to_kwargs()).eval()
    result = model.load_state_dict(stripped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(model.state_dict()) == set(small_weights)  # buffers still exported
    # The rectangular case exercises the masks recomputed for a size other than the configured one.
    assert torch.equal(_run_case(model, small_io, "rect64x128"), small_outputs["rect64x128"])


def test_strict_load_still_rejects_missing_parameters(small_config, small_weights):
    broken = {k: v for k, v in small_weights.items() if not k.endswith("qkv.weight")}
    model = UNetModelSwin(**small_config.to_kwargs())
    with pytest.raises(RuntimeError, match="qkv.weight"):
        model.load_state_dict(broken, strict=True)


def test_required_multiple_and_size_check(small_unet, small_config):
    assert required_multiple(DenoiserConfig()) == 64
    assert required_multiple(small_config) == 64
    # Deepest configured level 64/2^3 = 8 -> window 8; a 32-sized config clamps the deepest window to 4.
    assert required_multiple(DenoiserConfig(image_size=32, lq_size=32)) == 32
    assert required_multiple(DenoiserConfig(channel_mult=[1, 2], num_res_blocks=[1, 1])) == 16
    x = torch.zeros(1, 3, 64, 96)
    with pytest.raises(ValueError, match="multiple of 64"):
        small_unet(x, torch.tensor([0]), lq=x)


def test_last_layer_is_output_conv(small_unet):
    last = small_unet.out[-1]
    assert isinstance(last, nn.Conv2d)
    assert last.out_channels == 3


def test_batch_elements_are_independent(small_unet, small_io):
    """Masks/bias broadcast over the batch correctly: one sample alone gives the same result as in a batch."""
    x, t, lq = small_io["rect64x128.x"], small_io["rect64x128.t"], small_io["rect64x128.lq"]
    with torch.no_grad():
        single = small_unet(x[1:], t[1:], lq=lq[1:])
    assert (single - small_io["rect64x128.out"][1:]).abs().max().item() <= UNET_TOL


# ---- autoencoder, schedules and samplers (formerly test_parity_core.py) ------------------------------
REF = SHARED / "reference" / "resshift"
VQ_TOL = 1e-5  # measured 4.7e-6 (1 thread) and 4.8e-6 (2 threads): float32 kernels differ by CPU
TOL = 1e-6  # samplers (the small denoiser inside)


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
        assert _max_err(z, io["z"]) <= VQ_TOL
        # Decode from the reference latent so that encode errors cannot flip a codebook choice.
        assert _max_err(small_vq.decode(io["z"]), io["decoded_quantized"]) <= VQ_TOL
        assert _max_err(small_vq.decode(io["z"], quantize=False), io["decoded_not_quantized"]) <= VQ_TOL
        # End to end from our own latent as well (no near-ties in this fixture).
        assert _max_err(small_vq.decode(z), io["decoded_quantized"]) <= VQ_TOL


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
def sampling_unet(ref: Path) -> torch.nn.Module:
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


def test_one_step_parity(sampling_unet, sampling_io, t15: ResShiftSchedule) -> None:
    predict = _predictor(sampling_unet, t15, sampling_io["lq"])
    with torch.no_grad():
        x0 = predict(sampling_io["x_T"], t15.steps - 1)
    assert _max_err(x0, sampling_io["x0_one_step"]) <= TOL


def test_one_ancestral_step_parity(sampling_unet, sampling_io, t15: ResShiftSchedule) -> None:
    predict = _predictor(sampling_unet, t15, sampling_io["lq"])
    t = t15.steps - 1
    with torch.no_grad():
        x0 = predict(sampling_io["x_T"], t)
        x_prev = sampling.ancestral_step(t15, sampling_io["x_T"], x0, t, sampling_io["ancestral_noise"])
    assert _max_err(x_prev, sampling_io["x_T_minus_1_ancestral"]) <= TOL


def test_deterministic_T15_parity(sampling_unet, sampling_io, t15: ResShiftSchedule) -> None:
    predict = _predictor(sampling_unet, t15, sampling_io["lq"])
    with torch.no_grad():
        x0 = sampling.sample_deterministic(predict, t15, sampling_io["z_y"], sampling_io["x_T"])
    assert _max_err(x0, sampling_io["x0_deterministic_T15"]) <= TOL
