"""Prior-noise temperature at inference (`--noise-scale`): images 1, video 0.5 by default, 0 removes the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tadsr_cli.engines import create_engine
from tadsr_cli.models.presets import tiny_test_config
from tadsr_cli.models.sr_model import DiffusionSR
from tadsr_cli.pipeline.noise import NoiseField
from tadsr_cli.pipeline.settings import VIDEO_NOISE_SCALE, ModelSettings
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler
from tests.test_batch import img, run_cli
from tests.test_upscale_cli import model_file  # noqa: F401  (fixture)


def _model(prior: float = 1.0) -> DiffusionSR:
    torch.manual_seed(0)
    model = DiffusionSR(tiny_test_config())
    with torch.no_grad():  # not plain bicubic: the noise must matter
        model.denoiser.out[-1].weight.normal_(0, 0.05)
    model.config.prior_noise_scale = prior
    return model.eval()


def test_noise_field_scale_keeps_the_pattern():
    one, half = NoiseField(7, 4), NoiseField(7, 4, scale=0.5)
    assert np.array_equal(half.region(3, 5, 20, 30), 0.5 * one.region(3, 5, 20, 30))


def test_upscaler_temperature_equals_the_models_prior_temperature():
    rgb = np.random.default_rng(0).random((24, 32, 3), dtype=np.float32)
    cooler_field = Upscaler(create_engine("torch", _model(1.0), device="cpu", precision="fp32"),
                            TileOptions(tile=0), seed=3, noise_scale=0.5).upscale(rgb)
    cooler_model = Upscaler(create_engine("torch", _model(0.5), device="cpu", precision="fp32"),
                            TileOptions(tile=0), seed=3).upscale(rgb)
    full = Upscaler(create_engine("torch", _model(1.0), device="cpu", precision="fp32"),
                    TileOptions(tile=0), seed=3).upscale(rgb)
    assert np.abs(cooler_field - cooler_model).max() < 1e-5
    assert np.abs(cooler_field - full).max() > 1e-3
    up = Upscaler(create_engine("torch", _model(1.0), device="cpu", precision="fp32"), TileOptions(tile=0), seed=3)
    up.upscale(rgb)
    up.noise_scale = 0.5  # switching (image -> video) drops the cached whole-frame noise
    assert np.abs(up.upscale(rgb) - cooler_field).max() < 1e-6


def test_auto_temperature_is_lower_for_video():
    auto = ModelSettings()
    assert auto.noise_scale_for("image") == 1.0 and auto.noise_scale_for("video") == VIDEO_NOISE_SCALE < 1.0
    assert ModelSettings(noise_scale=0.8).noise_scale_for("video") == 0.8


def test_cli_noise_scale_zero_makes_the_seed_irrelevant(tmp_path, model_file, capsys):  # noqa: F811
    src = img(tmp_path / "a.png", 12, 10)

    def run(name: str, *extra: str) -> np.ndarray:
        code, _, err = run_cli(["upscale", str(src), "-o", str(tmp_path / name), "--model", str(model_file), "-q",
                                "--backend", "torch", "--precision", "fp32", *extra], capsys)
        assert code == 0, err
        return np.asarray(Image.open(tmp_path / name)).astype(int)

    assert np.abs(run("s1.png", "--seed", "1") - run("s2.png", "--seed", "2")).max() > 1
    assert np.array_equal(run("z1.png", "--seed", "1", "--noise-scale", "0"),
                          run("z2.png", "--seed", "2", "--noise-scale", "0"))
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "--noise-scale", "9"], capsys)
    assert code == 2


@pytest.mark.parametrize("kind", ["image", "video"])
def test_session_applies_the_temperature_of_each_job_kind(kind, monkeypatch):
    from tadsr_cli.pipeline import session as session_module

    class Probe:
        noise_scale = 1.0

    class Stop(Exception):
        pass

    def stop(*_a, **_k):
        raise Stop

    s = object.__new__(session_module.Session)  # only what process() reads
    probe = Probe()
    s.upscaler_for = lambda kind: probe
    s.settings = type("S", (), {"model": ModelSettings(), "image": None, "temporal_smoothing": 0.0})()
    if kind == "video":  # what upscale_video hands the video pipeline (process() and eval both go through it)
        assert s.video_upscaler() is probe
    else:
        monkeypatch.setattr(session_module.image_io, "upscale_image", stop)
        job = type("J", (), {"kind": kind, "src": "x", "dst": "y"})()
        with pytest.raises(Stop):
            s.process(job, lambda unit: None)
    assert probe.noise_scale == (VIDEO_NOISE_SCALE if kind == "video" else 1.0)
