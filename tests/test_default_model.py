"""The embedded default model: ships with the package, loads offline, runs, and beats bicubic on held-out pairs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engines import create_engine
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


def test_default_model_beats_bicubic_stlpips_on_heldout_pairs(upscaler: Upscaler) -> None:
    # Mean over the two held-out pairs (Real-ESRGAN-degraded LQ), the way `tadsr eval` reports methods. Per pair the
    # tiny student wins clearly on yellowflower and is about level with bicubic on dragonfly (see the README table).
    metric = STLPIPSMetric("cpu")
    names = sorted(p.name for p in (PAIRS / "gt").glob("*.png"))
    assert len(names) == 2
    model_scores, bicubic_scores = [], []
    for name in names:
        gt, lq = _read(PAIRS / "gt" / name), _read(PAIRS / "lq" / name)
        bicubic = np.clip(cv2.resize(lq, gt.shape[1::-1], interpolation=cv2.INTER_CUBIC), 0, 1)
        sr = np.round(upscaler.upscale(lq) * 255) / 255
        model_scores.append(metric(sr, gt))
        bicubic_scores.append(metric(bicubic, gt))
    d_model, d_bicubic = float(np.mean(model_scores)), float(np.mean(bicubic_scores))
    assert d_model < d_bicubic, f"mean ST-LPIPS model {d_model:.4f} vs bicubic {d_bicubic:.4f}"


def test_teacher_ships_and_default_alias_resolves() -> None:
    """`--model tadsr-tiny-x4-teacher --steps 15` and `--model default` work offline, from package data."""
    teacher = registry.resolve_model_path(registry.TEACHER_MODEL_NAME)
    assert teacher.parent == registry.WEIGHTS_DIR and teacher.stat().st_size <= 20 * 2**20
    assert registry.default_steps(registry.TEACHER_MODEL_NAME) == 15
    assert registry.resolve_model(registry.TEACHER_MODEL_NAME).schedule.steps == 15
    assert registry.resolve_model_path("default") == registry.resolve_model_path(None)
    assert registry.default_steps("default") == 1


def test_teacher_15_steps_beats_bicubic_stlpips_on_heldout_pairs() -> None:
    metric = STLPIPSMetric("cpu")
    model = registry.resolve_model(registry.TEACHER_MODEL_NAME)
    up = Upscaler(create_engine("torch", model, device="cpu", steps=15), TileOptions(tile=0), seed=0)
    gt, lq = _read(PAIRS / "gt" / "yellowflower.png"), _read(PAIRS / "lq" / "yellowflower.png")
    bicubic = np.clip(cv2.resize(lq, gt.shape[1::-1], interpolation=cv2.INTER_CUBIC), 0, 1)
    assert metric(np.round(up.upscale(lq) * 255) / 255, gt) < metric(bicubic, gt)
