"""The embedded default model: ships with the package, loads offline, runs, and beats bicubic on held-out pairs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tadsr_cli.engines import create_engine
from tadsr_cli.eval.stlpips import STLPIPSMetric
from tadsr_cli.models import catalog, model_cache
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

PAIRS = Path(__file__).parent / "data" / "heldout_pairs"


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    model = model_cache.resolve_model(None)  # no --model: the embedded default
    return Upscaler(create_engine("torch", model, device="cpu"), TileOptions(tile=0), seed=0)


def test_default_model_is_embedded_and_small() -> None:
    path = model_cache.resolve_model_path(None)
    assert path.parent == model_cache.WEIGHTS_DIR, "the default must come from package data, not the network"
    assert path.stat().st_size <= 20 * 2**20
    config = model_cache.resolve_model(None).config
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
    ST-LPIPS 0.69x bicubic's at -0.23 dB PSNR-Y. Here (torch fp32, no colour fix) measured 0.3082 vs 0.4475 (0.689x)
    and 26.90 vs 27.21 dB (-0.31 dB); the thresholds keep only a rounding margin."""
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
    assert np.mean(model_d) <= 0.70 * np.mean(bic_d), (np.mean(model_d), np.mean(bic_d))
    assert np.mean(model_p) >= np.mean(bic_p) - 0.4, (np.mean(model_p), np.mean(bic_p))


def test_teacher_ships_and_default_alias_resolves() -> None:
    """`--model tadsr-tiny-x4-teacher --steps 15` and `--model default` work offline, from package data."""
    teacher = model_cache.resolve_model_path(catalog.TEACHER_MODEL_NAME)
    assert teacher.parent == model_cache.WEIGHTS_DIR and teacher.stat().st_size <= 20 * 2**20
    assert catalog.default_steps(catalog.TEACHER_MODEL_NAME) == 15
    assert model_cache.resolve_model(catalog.TEACHER_MODEL_NAME).schedule.steps == 15
    assert model_cache.resolve_model_path("default") == model_cache.resolve_model_path(None)
    assert catalog.default_steps("default") == 1



def test_video_inputs_get_the_embedded_video_student_unless_a_model_is_named(tmp_path) -> None:
    from tadsr_cli.pipeline.session import Session
    from tadsr_cli.pipeline.settings import ModelSettings, RunSettings

    video = model_cache.resolve_model_path(catalog.VIDEO_MODEL_NAME)
    assert video.parent == model_cache.WEIGHTS_DIR and video.stat().st_size <= 20 * 2**20
    assert catalog.default_steps(catalog.VIDEO_MODEL_NAME) == 1
    assert model_cache.resolve_model(catalog.VIDEO_MODEL_NAME).config.name == catalog.VIDEO_MODEL_NAME
    for model in (None, "default"):
        session = Session(RunSettings(model=ModelSettings(model=model)))
        assert session.model_paths == {"image": model_cache.resolve_model_path(None), "video": video}
        assert str(video.resolve()) in session.resume_key()  # a video resumes only with the model that began it
    named = Session(RunSettings(model=ModelSettings(model=catalog.TEACHER_MODEL_NAME)))
    assert set(named.model_paths.values()) == {model_cache.resolve_model_path(catalog.TEACHER_MODEL_NAME)}
    assert named.steps == {"image": 15, "video": 15}
    shared = Session(RunSettings(model=ModelSettings(model=str(video))))  # one model for both: one engine
    assert shared.upscaler_for("image") is shared.upscaler_for("video")


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "train-hr-extra").is_dir(),
                    reason="needs ../shared/data")
def test_video_default_follows_a_clean_pan_without_flicker() -> None:
    """What `tadsr upscale clip.mp4` runs, on a camera pan over a held-out photo of sand (the hardest of the
    README's three clips): PSNR-Y within 1.5 dB of bicubic and less flicker than the original frames."""
    from tadsr_cli.eval.temporal import REFERENCE, measure_temporal, video_method
    from tadsr_cli.pipeline.session import Session
    from tadsr_cli.pipeline.settings import ModelSettings, RunSettings

    photo = _read(Path(__file__).resolve().parents[2] / "shared" / "data" / "train-hr-extra"
                  / "lifeograph__sands.jpg")
    size, h, w = 256, photo.shape[0], photo.shape[1]
    gt = []
    for i in range(8):  # 1.3 px right and 0.52 px down per frame, zooming in slowly
        s, x0, y0 = 1.0 + 0.002 * i, w / 2 + 1.3 * i, h / 2 + 0.52 * i
        m = np.array([[1 / s, 0, x0 - size / 2 / s], [0, 1 / s, y0 - size / 2 / s]])
        frame = cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        gt.append((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))
    lq = [cv2.resize(f, (size // 4, size // 4), interpolation=cv2.INTER_AREA) for f in gt]
    run = RunSettings(model=ModelSettings(backend="torch", device="cpu", precision="fp32"), tiles=TileOptions(tile=0))
    label, method = video_method(Session(run))  # what `tadsr upscale clip.mp4` runs, frames in memory
    assert label.startswith(catalog.VIDEO_MODEL_NAME)
    got = measure_temporal(lq, {label: method}, gt_frames=gt).summary()
    # measured: PSNR-Y 33.00 vs bicubic 34.21 dB, warping error 0.43 vs the original's 1.37 (the image default
    # tadsr-tiny-x4 fails here: it invents sand grain, more than 1.5 dB under bicubic)
    assert got[label]["psnr_y"] >= got["bicubic"]["psnr_y"] - 1.5, got
    assert got[label]["warp_error"] <= got[REFERENCE]["warp_error"], got
