"""The embedded default model: ships with the package, loads offline, runs, and beats bicubic on held-out pairs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tadsr_cli.engines import create_engine
from tadsr_cli.eval.stlpips import STLPIPSMetric
from tadsr_cli.models import registry
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

PAIRS = Path(__file__).parent / "data" / "heldout_pairs"


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    model = registry.resolve_model(None)  # no --model: the embedded default
    return Upscaler(create_engine("torch", model, device="cpu"), TileOptions(tile=0), seed=0)


def test_default_model_is_embedded_and_small() -> None:
    path = registry.resolve_model_path(None)
    assert path.parent == registry.WEIGHTS_DIR, "the default must come from package data, not the network"
    assert path.stat().st_size <= 20 * 2**20
    config = registry.resolve_model(None).config
    assert config.autoencoder.kind == "pixel_unshuffle" and config.scale == 4


def test_default_model_runs_on_a_small_odd_image(upscaler: Upscaler) -> None:
    rgb = np.random.default_rng(0).random((23, 37, 3), dtype=np.float32)
    out = upscaler.upscale(rgb)
    assert out.shape == (92, 148, 3)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "train-hr-extra").is_dir(), reason="needs ../shared/data beside the checkout")
def test_default_model_beats_bicubic_on_the_20_heldout_photos(upscaler: Upscaler) -> None:
    """The README's claim, on its set: the 20 held-out whole photos (centre crops, Real-ESRGAN degradation), mean
    ST-LPIPS <= 0.75x bicubic's and PSNR-Y >= bicubic's - 1.5 dB."""
    import sys
    import zlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from make_heldout_sets import centre_crop, heldout_photos

    from tadsr_cli.eval.psnr_ssim import psnr as psnr_y
    from tadsr_cli.pipeline.image_read import read_samples
    from tadsr_cli.train.degradation_config import DegradationConfig
    from tadsr_cli.train.degradations import degrade

    metric = STLPIPSMetric("cpu")
    real = DegradationConfig.from_dict({"kind": "realesrgan"})
    model_d, bic_d, model_p, bic_p = [], [], [], []
    for photo in heldout_photos(SHARED_DATA):
        gt = centre_crop(read_samples(photo).astype(np.float32) / 255.0)
        lq = degrade(gt, np.random.default_rng(zlib.crc32(photo.stem.encode())), real)
        lq = np.round(np.clip(lq, 0, 1) * 255) / 255
        gt = np.round(gt * 255) / 255
        bicubic = np.clip(cv2.resize(lq, gt.shape[1::-1], interpolation=cv2.INTER_CUBIC), 0, 1)
        sr = np.round(upscaler.upscale(lq.astype(np.float32)) * 255) / 255
        model_d.append(metric(sr, gt))
        bic_d.append(metric(bicubic, gt))
        model_p.append(psnr_y(sr, gt, 4))
        bic_p.append(psnr_y(bicubic, gt, 4))
    assert len(model_d) == 20
    assert np.mean(model_d) <= 0.75 * np.mean(bic_d), (np.mean(model_d), np.mean(bic_d))
    assert np.mean(model_p) >= np.mean(bic_p) - 1.5, (np.mean(model_p), np.mean(bic_p))


def test_teacher_ships_and_default_alias_resolves() -> None:
    """`--model tadsr-tiny-x4-teacher --steps 15` and `--model default` work offline, from package data."""
    teacher = registry.resolve_model_path(registry.TEACHER_MODEL_NAME)
    assert teacher.parent == registry.WEIGHTS_DIR and teacher.stat().st_size <= 20 * 2**20
    assert registry.default_steps(registry.TEACHER_MODEL_NAME) == 15
    assert registry.resolve_model(registry.TEACHER_MODEL_NAME).schedule.steps == 15
    assert registry.resolve_model_path("default") == registry.resolve_model_path(None)
    assert registry.default_steps("default") == 1

