"""Metrics against independent references: scikit-image (PSNR/SSIM), BasicSR 1.4.2 (NIQE), stlpips-pytorch (ST-LPIPS).

Reference values were produced once, outside the project (see `tadsr_cli/eval/data/PROVENANCE.md`):

* NIQE — BasicSR 1.4.2 (`pip download --no-deps --no-binary :all: --no-build-isolation basicsr==1.4.2`, sdist
  sha256 in PROVENANCE.md). Its unmodified `basicsr/metrics/niqe.py`, `metrics/metric_util.py`,
  `utils/matlab_functions.py`, `utils/color_util.py`, `utils/registry.py` and `metrics/niqe_pris_params.npz` were
  copied into a throwaway `basicsr` package in /tmp (empty `__init__`s, `utils/__init__` re-exporting `bgr2ycbcr`)
  and run with numpy 2.4.6, scipy 1.17.1, torch 2.13.0 (CPU), OpenCV 5.0.0:
  `calculate_niqe(cv2.imread(path), crop_border=0, input_order="HWC", convert_to="y")`.
* ST-LPIPS — the stlpips-pytorch 0.0.2 wheel's own `LPIPS(net="alex", variant="shift_tolerant")` forward, run in
  /tmp with stub modules for torchvision / IPython / torchsummary (imported at module level, never called on the
  shift-tolerant AlexNet path), on the deterministic image pair `_ramp_pair()` below. Our network matched it
  bit for bit on that pair and on random pairs of sizes 64x64, 96x80 and 131x257 (all five feature taps too).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tadsr_cli.base.errors import CheckpointError, InputError
from tadsr_cli.eval import lpips_optional, stlpips
from tadsr_cli.eval.matlab_resize import imresize
from tadsr_cli.eval.niqe import PRISTINE_FILE, load_pristine, niqe
from tadsr_cli.eval.psnr_ssim import psnr, rgb_to_y, ssim

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REALSET = SHARED / "data" / "realset65"
TRAIN_HR = SHARED / "data" / "train-hr"

# BasicSR 1.4.2 calculate_niqe (see the module docstring), realset65 files as shipped in ../shared/data.
BASICSR_NIQE = {
    "0003.jpg": 6.924484846590489,
    "0015.jpg": 4.918431118585874,
    "00003.png": 4.032606975857542,
    "0003.jpg+white-patch": 7.243135772932129,  # pixels [40:280, 60:300] set to 255 (all channels)
}
# stlpips-pytorch 0.0.2 reference forward on `_ramp_pair()`.
STLPIPS_RAMP_REF = 0.2875353693962097


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: these tests need the shared data folder {SHARED}")
    return path


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(_shared(path)), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.ascontiguousarray(img[..., ::-1])


def _photo_crop(name: str = "Wood.jpg", h: int = 384, w: int = 576) -> np.ndarray:
    img = _read_rgb(TRAIN_HR / name)
    y0, x0 = img.shape[0] // 2 - h // 2, img.shape[1] // 2 - w // 2
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 1.0, img.shape) * sigma
    return np.clip(img + noise, 0, 255).astype(np.uint8)


# ---- PSNR / SSIM ----------------------------------------------------------------------------------------------------
def _sk_y(img: np.ndarray) -> np.ndarray:
    return rgb2ycbcr(img)[..., 0]  # skimage: BT.601 studio swing, Y in [16, 235]


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    gt = _photo_crop("Garden.jpg", 200, 264)
    h, w = gt.shape[:2]
    lq = cv2.resize(gt, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    sr = cv2.resize(lq, (w, h), interpolation=cv2.INTER_CUBIC)
    return sr, gt


def test_y_channel_matches_skimage(pair: tuple[np.ndarray, np.ndarray]) -> None:
    sr, _ = pair
    np.testing.assert_allclose(rgb_to_y(sr), _sk_y(sr), atol=1e-6)
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)


@pytest.mark.parametrize("degrade", ["bicubic", "noise", "shift"])
def test_psnr_ssim_match_skimage(pair: tuple[np.ndarray, np.ndarray], degrade: str) -> None:
    sr, gt = pair
    if degrade == "noise":
        sr = _noisy(gt, 12.0)
    elif degrade == "shift":
        sr = np.roll(gt, 1, axis=1)
    b = 4
    ys, yg = _sk_y(sr)[b:-b, b:-b], _sk_y(gt)[b:-b, b:-b]
    ref_psnr = peak_signal_noise_ratio(yg, ys, data_range=255)
    ref_ssim = structural_similarity(
        yg, ys, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert psnr(sr, gt, crop_border=4) == pytest.approx(ref_psnr, abs=1e-3)
    assert ssim(sr, gt, crop_border=4) == pytest.approx(ref_ssim, abs=1e-3)


def test_psnr_ssim_identity_and_errors(pair: tuple[np.ndarray, np.ndarray]) -> None:
    _, gt = pair
    assert psnr(gt, gt) == float("inf")
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(InputError):
        psnr(gt, gt[:-1])
    with pytest.raises(InputError):
        ssim(gt[:16, :16], gt[:16, :16], crop_border=4)  # 8x8 left: smaller than the 11x11 window


# ---- MATLAB imresize ------------------------------------------------------------------------------------------------
def test_matlab_imresize_reproduces_linear_ramps() -> None:
    # Cubic convolution reproduces linear functions: away from the borders the output is the input coordinate
    # u = x / scale + 0.5 (1 - 1 / scale) (1-based), for the antialiased shrink as well.
    ramp = np.tile(np.arange(1, 41, dtype=np.float64), (6, 1))
    half = imresize(ramp, 0.5)
    assert half.shape == (3, 20)
    x = np.arange(1, 21)
    np.testing.assert_allclose(half[:, 3:-3], np.tile(2 * x - 0.5, (3, 1))[:, 3:-3], atol=1e-9)
    up = imresize(ramp[:, :10], 4.0)
    assert up.shape == (24, 40)
    x = np.arange(1, 41)
    np.testing.assert_allclose(up[:, 8:-8], np.tile(x / 4 + 0.375, (24, 1))[:, 8:-8], atol=1e-9)
    const = np.full((9, 7, 3), 0.3)
    np.testing.assert_allclose(imresize(const, 0.5), 0.3, atol=1e-12)


# ---- NIQE ---------------------------------------------------------------------------------------------------------
def test_niqe_params_shipped_match_shared_reference() -> None:
    ref = np.load(_shared(SHARED / "reference" / "niqe" / "niqe_pris_params.npz"))
    ours = load_pristine(PRISTINE_FILE)
    np.testing.assert_array_equal(ours.mu, ref["mu_pris_param"].reshape(-1))
    np.testing.assert_array_equal(ours.cov, ref["cov_pris_param"])
    np.testing.assert_array_equal(ours.window, ref["gaussian_window"])


@pytest.mark.parametrize("name", ["0003.jpg", "0015.jpg"])
def test_niqe_matches_basicsr(name: str) -> None:
    value = niqe(_read_rgb(REALSET / name))
    assert value == pytest.approx(BASICSR_NIQE[name], abs=1e-2)
    # float64 arithmetic (MATLAB-like) stays close on images with many blocks
    assert niqe(_read_rgb(REALSET / name), float32=False) == pytest.approx(BASICSR_NIQE[name], abs=2e-2)


def test_niqe_flat_blocks_follow_the_conventional_implementation() -> None:
    # A saturated patch makes blocks whose normalised coefficients are all zero (no AGGD fit): MATLAB and BasicSR
    # then keep alpha = 0.2 (the first grid point) as a feature. BasicSR 1.4.2 on this image: 7.243135772932129.
    img = _read_rgb(REALSET / "0003.jpg")
    img[40:280, 60:300] = 255
    assert niqe(img) == pytest.approx(BASICSR_NIQE["0003.jpg+white-patch"], abs=1e-2)


def test_niqe_orders_clean_before_degraded() -> None:
    clean = _photo_crop("Wood.jpg")
    scores = {
        "clean": niqe(clean),
        "blur1.5": niqe(cv2.GaussianBlur(clean, (0, 0), 1.5)),
        "blur3": niqe(cv2.GaussianBlur(clean, (0, 0), 3.0)),
        "noise10": niqe(_noisy(clean, 10.0)),
        "noise25": niqe(_noisy(clean, 25.0)),
    }
    assert scores["clean"] < scores["blur1.5"] < scores["blur3"], scores
    assert scores["clean"] < scores["noise10"] < scores["noise25"], scores
    assert 2.0 < scores["clean"] < 8.0, scores


def test_niqe_rejects_images_with_fewer_than_two_blocks() -> None:
    with pytest.raises(InputError, match="too small"):
        niqe(np.full((150, 150, 3), 128, np.uint8))


# ---- ST-LPIPS -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def st_metric() -> stlpips.STLPIPSMetric:
    try:
        return stlpips.STLPIPSMetric()
    except stlpips.MetricUnavailable as exc:  # a declared test dependency: fail, do not skip
        pytest.fail(f"ST-LPIPS weights not found ({exc}); install the test extras")


def _ramp_pair() -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    img0 = torch.stack([torch.sin(xx / 5), torch.cos(yy / 7), torch.sin((xx + yy) / 11)])[None] * 0.8
    img1 = torch.stack([torch.sin(xx / 5 + 0.4), torch.cos(yy / 6), torch.sin((xx - yy) / 11)])[None] * 0.7
    return img0, img1


def test_stlpips_weights_located_without_importing_the_package() -> None:
    import sys

    path = stlpips.find_weights()
    assert path.name == "alex_shift_tolerant.pth" and path.parent.name == "vST0.0"
    assert "stlpips_pytorch" not in sys.modules and "torchvision" not in sys.modules


def test_stlpips_matches_reference_forward(st_metric: stlpips.STLPIPSMetric) -> None:
    a, b = _ramp_pair()
    with torch.inference_mode():
        value = float(st_metric.model(a, b)[0])
    assert value == pytest.approx(STLPIPS_RAMP_REF, abs=1e-5)


def test_stlpips_identity_symmetry_monotonicity(st_metric: stlpips.STLPIPSMetric) -> None:
    img = _photo_crop("Garden.jpg", 96, 128)
    assert st_metric(img, img) == 0.0
    blurred = cv2.GaussianBlur(img, (0, 0), 1.5)
    assert st_metric(img, blurred) == pytest.approx(st_metric(blurred, img), abs=1e-6)
    blur = [st_metric(cv2.GaussianBlur(img, (0, 0), s), img) for s in (0.5, 1.5, 3.0)]
    noise = [st_metric(_noisy(img, s, seed=1), img) for s in (4.0, 12.0, 32.0)]
    assert all(x < y for x, y in zip(blur, blur[1:], strict=False)), blur
    assert all(x < y for x, y in zip(noise, noise[1:], strict=False)), noise
    assert 0.0 < blur[0] and noise[-1] < 2.0


def test_stlpips_blurpool_and_tolerance_to_shift(st_metric: stlpips.STLPIPSMetric) -> None:
    pool = stlpips.BlurPool(1)
    delta = torch.zeros(1, 1, 9, 9)
    delta[0, 0, 4, 4] = 1.0
    out = pool(delta)  # reflect-pad 2 -> 13x13, 3x3 binomial at stride 2 -> 6x6; the delta lands on 4 corner taps
    assert out.shape == (1, 1, 6, 6)
    assert float(out[0, 0, 2, 2]) == pytest.approx(1 / 16) and float(out[0, 0, 3, 3]) == pytest.approx(1 / 16)
    assert float(out.sum()) == pytest.approx(0.25)
    np.testing.assert_allclose(pool(torch.full((1, 1, 8, 8), 0.7)).numpy(), 0.7, atol=1e-6)
    img = _photo_crop("Garden.jpg", 96, 130)
    base, shifted = np.ascontiguousarray(img[:, 1:-1]), np.ascontiguousarray(img[:, 2:])  # a 1-px translation
    assert st_metric(shifted, base) < 0.25 * st_metric(cv2.GaussianBlur(base, (0, 0), 1.0), base)


def test_stlpips_strict_load_and_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = torch.load(stlpips.find_weights(), map_location="cpu", weights_only=True)
    assert len(state) == 20
    state.pop("lin4.model.1.weight")
    bad = tmp_path / "partial.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="lin4"):
        stlpips.STLPIPS.from_file(bad)
    monkeypatch.setattr(stlpips.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(stlpips.MetricUnavailable, match="stlpips-pytorch is not installed"):
        stlpips.find_weights()


def test_stlpips_vgg_loads_strictly_whole_or_truncated(tmp_path: Path) -> None:
    """The VGG-16 variant (a training loss) loads all five slices or only the first ones; no other file passes."""
    full = stlpips.STLPIPS.from_file(net="vgg")
    short = stlpips.STLPIPS.from_file(net="vgg", taps=3)
    img = _photo_crop("Garden.jpg", 64, 64)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.5)
    a, b = stlpips.to_tensor_pm1(img), stlpips.to_tensor_pm1(blurred)
    assert float(full(a, a)[0]) == 0.0 and float(short(a, a)[0]) == 0.0
    # The truncated net sums exactly the full net's first three tap terms.
    fa, fb = full.features(a), full.features(b)
    first3 = sum(
        getattr(full, f"lin{i}")((stlpips.unit_normalise(fa[i]) - stlpips.unit_normalise(fb[i])) ** 2).mean()
        for i in range(3)
    )
    assert float(short(a, b)[0]) == pytest.approx(float(first3), rel=1e-5)
    assert 0.0 < float(short(a, b)[0]) < float(full(a, b)[0])
    with pytest.raises(CheckpointError, match="VGG-16"):
        stlpips.STLPIPS.from_file(stlpips.find_weights(), net="vgg")  # the AlexNet file
    state = torch.load(stlpips.find_weights(stlpips.VGG_WEIGHTS_RELPATH), map_location="cpu", weights_only=True)
    state.pop("net.slice5.32.bias")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError):
        stlpips.STLPIPS.from_file(tmp_path / "partial.pth", net="vgg", taps=3)


def test_lpips_reports_a_reason_when_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lpips_optional.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(stlpips.MetricUnavailable, match="lpips package is not installed"):
        lpips_optional.LPIPSMetric()
