"""Motion-compensated temporal smoothing of video frames (`--temporal-smoothing`): steadier, without ghosts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tadsr_cli.eval.temporal import bicubic_upscale
from tadsr_cli.pipeline.settings import VIDEO_TEMPORAL_SMOOTHING, RunSettings
from tadsr_cli.pipeline.temporal_filter import TemporalStabilizer
from tests.test_batch import run_cli
from tests.test_upscale_cli import model_file  # noqa: F401  (fixture)
from tests.test_video import frames, make_clip


class NoisyBicubic:
    """A per-frame upscaler that flickers: bicubic plus fresh noise every call (as a noise-driven model would)."""

    scale = 4

    def __init__(self, sigma: float = 0.03, seed: int = 0) -> None:
        self.sigma, self.rng = sigma, np.random.default_rng(seed)

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        up = bicubic_upscale(rgb, 4)
        return np.clip(up + self.rng.normal(0, self.sigma, up.shape).astype(np.float32), 0, 1)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (structure the optical flow can follow), RGB float32 [0, 1]."""
    small = np.random.default_rng(seed).random((h // 4 + 2, w // 4 + 2, 3)).astype(np.float32)
    big = cv2.resize(small, (w + 8, h + 8), interpolation=cv2.INTER_CUBIC)
    return np.clip(cv2.GaussianBlur(big, (0, 0), 1.0)[4:4 + h, 4:4 + w], 0, 1)


def pan(n: int, size: int = 48, step: int = 1) -> list[np.ndarray]:
    """n LQ frames of a texture moving `step` px right per frame."""
    world = texture(size, size + n * step + 8, seed=1)
    return [world[:, n * step - i * step: n * step - i * step + size].copy() for i in range(n)]


def flicker(outputs: list[np.ndarray], shift_hr: int) -> float:
    """Mean |out[t+1] - out[t] moved by the known motion| inside the frame (0-1)."""
    diffs = [np.abs(b[8:-8, 8 + shift_hr:-8] - a[8:-8, 8:-8 - shift_hr]).mean() for a, b in zip(outputs, outputs[1:], strict=False)]
    return float(np.mean(diffs))


def test_smoothing_reduces_flicker_on_a_pan_and_follows_the_motion():
    lq = pan(10)
    plain = [NoisyBicubic(seed=3).upscale(f) for f in lq]
    stab = TemporalStabilizer(NoisyBicubic(seed=3), 0.7)
    smoothed = [stab.upscale(f) for f in lq]
    assert flicker(smoothed, 4) < 0.6 * flicker(plain, 4)
    clean = [bicubic_upscale(f, 4) for f in lq]  # the noise-free truth: smoothing moves towards it, not away
    err_plain = np.mean([np.abs(p - c).mean() for p, c in zip(plain[3:], clean[3:], strict=True)])
    err_smooth = np.mean([np.abs(s - c)[8:-8, 8:-8].mean() for s, c in zip(smoothed[3:], clean[3:], strict=True)])
    assert err_smooth < 0.8 * err_plain
    assert stab.restarts == 0


def test_scene_cut_takes_the_new_frame_alone():
    a, b = texture(40, 40, seed=5), texture(40, 40, seed=9)
    inner = NoisyBicubic(sigma=0.0)
    stab = TemporalStabilizer(inner, 0.9)
    for _ in range(3):
        stab.upscale(a)
    out = stab.upscale(b)
    assert stab.restarts == 1
    assert np.array_equal(out, inner.upscale(b))


def test_no_ghost_where_an_object_has_moved_away():
    background = texture(48, 48, seed=2) * 0.4  # dark texture; a bright square crosses it
    clips = []
    for i in range(8):
        f = background.copy()
        x = 4 + 4 * i
        f[18:30, x:x + 10] = 1.0
        clips.append(f)
    inner = NoisyBicubic(sigma=0.0)
    stab = TemporalStabilizer(inner, 0.9)
    outs = [stab.upscale(f) for f in clips]
    # Where the square was two frames ago and is not any more, the output must be the background, not a trail.
    last = outs[-1]
    region = (slice(4 * 20, 4 * 28), slice(4 * (4 + 4 * 5), 4 * (4 + 4 * 6)))  # square of frame 5, gone at 7
    truth = inner.upscale(clips[-1])
    assert np.abs(last[region] - truth[region]).mean() < 0.02
    assert last[region].mean() < 0.6  # the square was 1.0, the background < 0.4


def test_static_frames_keep_their_content_and_zero_strength_is_off():
    f = texture(32, 32, seed=4)
    stab = TemporalStabilizer(NoisyBicubic(seed=1), 0.7)
    outs = [stab.upscale(f) for _ in range(12)]
    clean = bicubic_upscale(f, 4)
    assert abs(float(outs[-1].mean() - clean.mean())) < 0.01  # no drift, no darkening
    assert np.std(outs[-1] - clean) < 0.75 * 0.03  # the noise averaged down
    off = TemporalStabilizer(NoisyBicubic(seed=1), 0.0)
    ref = NoisyBicubic(seed=1)
    assert all(np.array_equal(off.upscale(f), ref.upscale(f)) for _ in range(3))


def test_frame_size_change_starts_over_and_bad_strength_is_refused():
    stab = TemporalStabilizer(NoisyBicubic(sigma=0.0), 0.5)
    stab.upscale(texture(32, 32))
    small = texture(16, 24)
    assert np.array_equal(stab.upscale(small), bicubic_upscale(small, 4))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            TemporalStabilizer(NoisyBicubic(), bad)
    assert stab.scale == 4 and stab.sigma == 0.0  # other attributes are the inner upscaler's


def test_tiny_frames_pass_through():
    stab = TemporalStabilizer(NoisyBicubic(sigma=0.0), 0.7)
    tiny = texture(8, 8)
    for _ in range(3):  # the optical flow cannot run this small: plain per-frame output, no error
        assert np.array_equal(stab.upscale(tiny), bicubic_upscale(tiny, 4))


def test_run_settings_check_the_strength():
    assert RunSettings().validate().temporal_smoothing == VIDEO_TEMPORAL_SMOOTHING > 0
    with pytest.raises(Exception, match="temporal-smoothing"):
        RunSettings(temporal_smoothing=0.99).validate()


def test_cli_video_smoothing_option(tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture):  # noqa: F811
    src = make_clip(tmp_path / "clip.mp4", size=(32, 24), n=5, audio=False, subtitles=False)

    def run(name: str, *extra: str) -> list[np.ndarray]:
        dst = tmp_path / name
        code, _, err = run_cli(["upscale", str(src), "-o", str(dst), "--model", str(model_file), "-q", "--crf", "0",
                                "--backend", "torch", "--precision", "fp32", *extra], capsys)  # crf 0: lossless
        assert code == 0, err
        return [f.to_ndarray(format="rgb24").astype(int) for f in frames(dst)]

    off, on = run("off.mp4", "--temporal-smoothing", "0"), run("on.mp4")
    assert len(off) == len(on) == 5
    assert np.array_equal(off[0], on[0])  # the first frame has no past
    assert any(np.abs(a - b).max() > 0 for a, b in zip(off[1:], on[1:], strict=True))
    code, _, _ = run_cli(["upscale", str(src), "--model", str(model_file), "--temporal-smoothing", "1.5"], capsys)
    assert code == 2
