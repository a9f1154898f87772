"""Parity with the public ResShift reference implementation (numeric fixtures in ../shared/reference/resshift).

The fixtures were produced by the reference code with random weights: if this project's networks load those weights
strictly and reproduce the outputs, released checkpoints load and give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tadsr_cli.models.config import DenoiserConfig
from tadsr_cli.models.unet_swin import UNetModelSwin, buffer_keys, required_multiple

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESSHIFT = SHARED / "reference" / "resshift"

UNET_TOL = 1e-4
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
