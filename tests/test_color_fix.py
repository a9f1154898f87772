"""`--color-fix`: wavelet and AdaIN move the output's colour to the input's, keep its detail, ignore the tiling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from tadsr_cli.pipeline.color_fix import (
    ColorFixedUpscaler,
    adain_fix,
    color_fix,
    low_frequencies,
    wavelet_fix,
)
from tests.test_batch import img, run_cli
from tests.test_upscale_cli import model_file  # noqa: F401  (a pytest fixture)


def scene(size: int = 96, seed: int = 0) -> np.ndarray:
    """Smooth colour fields plus fine texture, float32 RGB in [0.15, 0.85]."""
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 8.0)
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-6)
    texture = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 0.7) - 0.5
    return np.clip(0.2 + 0.5 * smooth + 0.2 * texture, 0.15, 0.85).astype(np.float32)


def downscale(hr: np.ndarray) -> np.ndarray:
    return cv2.resize(hr, (hr.shape[1] // 4, hr.shape[0] // 4), interpolation=cv2.INTER_AREA)


def high_pass(x: np.ndarray) -> np.ndarray:
    return x - low_frequencies(x)


@pytest.mark.parametrize("fix", [wavelet_fix, adain_fix])
def test_a_colour_cast_is_removed_and_detail_kept(fix):
    hr = scene()
    lq = downscale(hr)
    cast = np.clip(hr * np.array([1.0, 0.8, 0.9], np.float32) + np.array([0.1, 0.0, -0.05], np.float32), 0, 1)
    fixed = fix(cast, lq)
    assert fixed.dtype == np.float32 and fixed.shape == hr.shape and 0 <= fixed.min() and fixed.max() <= 1
    before = np.abs(cast.mean(axis=(0, 1)) - hr.mean(axis=(0, 1))).max()
    after = np.abs(fixed.mean(axis=(0, 1)) - hr.mean(axis=(0, 1))).max()
    assert before > 0.05 and after < 0.01, (before, after)
    # the output's own fine detail survives (correlation of the high-pass bands)
    corr = np.corrcoef(high_pass(fixed).ravel(), high_pass(cast).ravel())[0, 1]
    assert corr > 0.9


def test_wavelet_takes_low_frequencies_from_the_input_only():
    hr = scene(seed=1)
    lq = downscale(hr)
    fixed = wavelet_fix(hr + 0.0, lq)
    # already right: changed little (only what bicubic of the 4x-smaller input loses at low frequencies)
    assert np.abs(fixed - hr).mean() < 0.02
    assert color_fix(hr, lq, "none") is hr
    with pytest.raises(ValueError, match="unknown colour fix"):
        color_fix(hr, lq, "hist")


class _Shift:
    """A fake upscaler: bicubic x4 with a colour cast, tiled or not (the cast is the same everywhere)."""

    scale = 4

    def upscale(self, rgb: np.ndarray, progress=None) -> np.ndarray:
        up = cv2.resize(rgb, (rgb.shape[1] * 4, rgb.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
        return np.clip(up * 0.8 + 0.1, 0, 1).astype(np.float32)


def test_wrapper_runs_on_the_whole_image_and_forwards_attributes():
    inner = _Shift()
    inner.tiles = "kept"  # type: ignore[attr-defined]
    wrapped = ColorFixedUpscaler(inner, "adain")
    lq = downscale(scene(seed=2))
    out = wrapped.upscale(lq)
    assert wrapped.scale == 4 and wrapped.tiles == "kept" and out.shape == (96, 96, 3)
    assert np.abs(out.mean(axis=(0, 1)) - lq.mean(axis=(0, 1))).max() < 0.01


def test_color_fix_on_the_command_line_is_independent_of_tiles(tmp_path, model_file, capsys):  # noqa: F811
    src = img(tmp_path / "p.png", 40, 36)
    outs = {}
    for fix in ("none", "wavelet"):
        for tile in ("0", "16"):
            dst = tmp_path / f"{fix}-{tile}.png"
            code, _, err = run_cli(["upscale", str(src), "-o", str(dst), "--model", str(model_file), "-q",
                                    "--color-fix", fix, "--tile", tile, "--tile-overlap", "4"], capsys)
            assert code == 0, err
            outs[fix, tile] = np.asarray(Image.open(dst)).astype(np.float64)
    assert np.abs(outs["none", "0"] - outs["wavelet", "0"]).mean() > 0.5  # the fix does something
    tiled_gap = np.abs(outs["none", "0"] - outs["none", "16"]).max()
    fixed_gap = np.abs(outs["wavelet", "0"] - outs["wavelet", "16"]).max()
    assert fixed_gap <= tiled_gap + 2  # the fix adds no tile seams of its own
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "--color-fix", "hist"], capsys)
    assert code == 2 and "--color-fix 'hist'" in err
