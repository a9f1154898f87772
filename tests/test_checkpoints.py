"""Checkpoint reading (official .pth quirks, safety), the project's model files, the model catalogue and `tadsr models`."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tadsr_cli.base.errors import CheckpointError, ConfigError, ModelNotFoundError
from tadsr_cli.cli import app
from tadsr_cli.models import catalog, download, model_cache
from tadsr_cli.models.autoencoders import diffusers_to_ldm_vq
from tadsr_cli.models.checkpoints import (
    load_model_file,
    load_official,
    load_state_dict_strict,
    read_model_config,
    read_state_dict,
    save_model,
)
from tadsr_cli.models.config import ModelConfig
from tadsr_cli.models.presets import tiny_test_config, tiny_vq_test_config
from tadsr_cli.models.sr_model import DiffusionSR


def _tiny(seed: int = 0, config: ModelConfig | None = None) -> DiffusionSR:
    torch.manual_seed(seed)
    model = DiffusionSR(config or tiny_test_config(prediction="x0")).eval()
    return model


def _io(model: DiffusionSR) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    lq = torch.rand(1, 3, 16, 32, generator=gen) * 2 - 1
    noise = torch.randn(1, model.latent_channels, 16, 32, generator=gen)
    with torch.no_grad():
        return model.one_step(lq, noise)


class Evil:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("pwned",))


def test_pth_wrappers_and_prefixes_are_unwrapped(tmp_path: Path) -> None:
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(3)}
    for name, obj in {
        "plain.pth": sd,
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        "compiled.pth": {"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
    }.items():
        torch.save(obj, tmp_path / name)
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(sd), name


def test_pth_with_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"w": Evil()}, fh)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)


def test_garbage_file_gives_checkpoint_error(tmp_path: Path) -> None:
    for name in ("junk.pth", "junk.safetensors"):
        (tmp_path / name).write_bytes(b"not a checkpoint at all")
        with pytest.raises(CheckpointError):
            read_state_dict(tmp_path / name)


def test_strict_load_names_missing_unexpected_and_shapes() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    sd = net.state_dict()
    bad = dict(sd)
    del bad["1.bias"]
    bad["2.weight"] = torch.zeros(1)
    bad["0.weight"] = torch.zeros(4, 2)
    before = net[0].bias.clone()
    bad["0.bias"] = torch.full((3,), 7.0)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(net, bad, what="x.pth")
    msg = str(info.value)
    assert "1.bias" in msg and "2.weight" in msg and "0.weight" in msg and "x.pth" in msg
    assert torch.equal(net[0].bias, before), "a failed load must not partially load"


def test_model_file_round_trip_carries_config(tmp_path: Path) -> None:
    model = _tiny(seed=3)
    path = save_model(model, tmp_path / "m.safetensors")
    assert read_model_config(path) == model.config
    loaded = load_model_file(path)
    assert torch.equal(_io(model), _io(loaded))
    assert not list(tmp_path.glob("*.part*")), "atomic save leaves no temp file"


def test_model_file_fp16_is_close(tmp_path: Path) -> None:
    model = _tiny(seed=4)
    path = save_model(model, tmp_path / "half.safetensors", dtype=torch.float16)
    out = _io(load_model_file(path))
    assert (out - _io(model)).abs().max() < 2e-2


def test_model_file_for_other_architecture_is_refused(tmp_path: Path) -> None:
    path = save_model(_tiny(), tmp_path / "m.safetensors")
    other = DiffusionSR(tiny_vq_test_config())
    with pytest.raises(CheckpointError, match="does not match"):
        load_state_dict_strict(other, read_state_dict(path))


def test_safetensors_without_config_is_explained(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "raw.safetensors"))
    with pytest.raises(CheckpointError, match="not a tadsr model file"):
        load_model_file(tmp_path / "raw.safetensors")


def test_config_rejects_unknown_keys_and_mismatched_channels() -> None:
    data = tiny_test_config().to_dict()
    data["denoiser"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        ModelConfig.from_dict(data)
    data = tiny_test_config().to_dict()
    data["denoiser"]["in_channels"] = 3
    with pytest.raises(ConfigError, match="latent channels"):
        ModelConfig.from_dict(data)


def _fake_release(tmp_path: Path) -> tuple[catalog.RegistryEntry, DiffusionSR]:
    """A registry entry shaped like the released ones, backed by small local .pth files in the official layouts."""
    model = _tiny(seed=5, config=tiny_vq_test_config())
    rel = tmp_path / "release"
    rel.mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.denoiser.state_dict().items()}},
               rel / "denoiser_small.pth")
    torch.save({"state_dict": diffusers_to_ldm_vq(model.autoencoder.vq.state_dict())}, rel / "vq_small.pth")
    entry = catalog.RegistryEntry(
        name="small-release",
        description="test",
        steps=15,
        make_config=tiny_vq_test_config,
        denoiser=catalog.RemoteFile((rel / "denoiser_small.pth").as_uri()),
        autoencoder=catalog.RemoteFile((rel / "vq_small.pth").as_uri()),
    )
    return entry, model


def test_load_official_pth_pair(tmp_path: Path) -> None:
    entry, model = _fake_release(tmp_path)
    rel = tmp_path / "release"
    loaded = load_official(tiny_vq_test_config(), rel / "denoiser_small.pth", rel / "vq_small.pth")
    assert torch.equal(_io(model), _io(loaded))


@pytest.mark.parametrize("mode", ["url", "local-dir"])
def test_pull_downloads_verifies_and_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    entry, model = _fake_release(tmp_path)
    monkeypatch.setenv("TADSR_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(catalog.REGISTRY, entry.name, entry)
    seen: list[int] = []
    local = tmp_path / "release" if mode == "local-dir" else None
    path = download.pull(entry.name, local_dir=local, progress=lambda f, done, total: seen.append(done))
    assert path == tmp_path / "home" / "models" / "small-release.safetensors"
    assert (mode == "url") == bool(seen), "progress is reported for downloads"
    assert torch.equal(_io(model), _io(model_cache.resolve_model("small-release")))


def test_pull_with_wrong_weights_fails_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry, _ = _fake_release(tmp_path)
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, tmp_path / "release" / "denoiser_small.pth")
    monkeypatch.setenv("TADSR_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(catalog.REGISTRY, entry.name, entry)
    with pytest.raises(CheckpointError, match="missing"):
        download.pull(entry.name)
    assert not (tmp_path / "home" / "models" / "small-release.safetensors").exists()


def test_resolve_model_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TADSR_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="tadsr models pull sinsr-v1"):
        model_cache.resolve_model_path("sinsr-v1")
    with pytest.raises(ModelNotFoundError, match="neither a file nor a known model"):
        model_cache.resolve_model_path(tmp_path / "nope.safetensors")


def test_models_cli_list_and_info(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    for name in ("resshift-realsr-x4-v1", "resshift-realsr-x4-v3", "sinsr-v1", catalog.DEFAULT_MODEL_NAME):
        assert name in result.output
    path = save_model(_tiny(), tmp_path / "m.safetensors")
    result = runner.invoke(app, ["models", "info", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["name"] == "tiny-test"


def test_registry_entries_build_the_official_architecture() -> None:
    for entry in catalog.REGISTRY.values():
        if entry.embedded_file:
            continue
        cfg = entry.make_config()
        assert cfg.denoiser.model_channels == 160 and cfg.autoencoder.num_vq_embeddings == 8192
        assert cfg.schedule.steps == entry.steps or entry.steps == 1
