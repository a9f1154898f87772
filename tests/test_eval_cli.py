"""End-to-end `tadsr eval` on small generated paired sets (baselines, ready outputs, a tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tadsr_cli.base.errors import InputError
from tadsr_cli.cli import app, main
from tadsr_cli.eval.images import align_to_gt, pair_folders

SCALE = 4


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A deterministic image with edges, smooth shading and fine texture (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 6.0)
    base = (base - base.min()) / (np.ptp(base) + 1e-6)
    img = (base * 180 + 40).astype(np.uint8)
    for _ in range(6):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.rectangle(img, p1, p2, c, int(rng.integers(1, 4)))
        cv2.circle(img, p2, int(rng.integers(4, 20)), c, -1)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def make_set(root: Path, stems: list[str], h: int = 96, w: int = 192) -> dict[str, np.ndarray]:
    gts = {}
    for i, stem in enumerate(stems):
        gt = textured(h, w, seed=i)
        gts[stem] = gt
        write(root / "gt" / f"{stem}.png", gt)
        lq = cv2.resize(gt, (w // SCALE, h // SCALE), interpolation=cv2.INTER_AREA)
        write(root / "lq" / f"{stem}.png", lq)
    return gts


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalset")
    gts = make_set(root, ["a", "b", "c"])
    # an LQ image without ground truth
    write(root / "lq" / "lonely.png", textured(24, 48, seed=9))
    # ready outputs: exact for "a", 2 px short for "b" (cropped), missing "c", plus an unrelated file
    sr = root / "sr"
    write(sr / "a.png", cv2.GaussianBlur(gts["a"], (0, 0), 1.0))
    write(sr / "b.png", cv2.GaussianBlur(gts["b"], (0, 0), 1.0)[:-2, :-1])
    write(sr / "zzz.png", gts["a"])
    return root


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_eval_writes_all_report_files(paired: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code, text = invoke([
        "eval", "--lq", str(paired / "lq"), "--gt", str(paired / "gt"), "--baseline", "bicubic",
        "--sr", f"blur={paired / 'sr'}", "-o", str(out), "--device", "cpu", "--no-model",
    ])
    assert code == 0, text
    for name in ("report.json", "report.md", "figure.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*part*")), "temp files left behind"

    rep = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in rep["methods"]] == ["bicubic", "blur"]
    assert rep["images"] == ["a", "b", "c"]
    assert rep["unpaired"]["lq_without_gt"] == ["lonely"]
    assert rep["unpaired"]["missing_sr"] == {"blur": ["c"]}
    assert rep["unpaired"]["sr_without_lq"] == {"blur": ["zzz"]}
    assert rep["unpaired"]["counts"]["lq_without_gt"] == 1
    assert rep["metrics"]["st_lpips"]["available"] is True
    assert rep["metrics"]["lpips"]["available"] in (True, False)
    if not rep["metrics"]["lpips"]["available"]:
        assert rep["metrics"]["lpips"]["reason"]
    for key in ("tadsr", "torch", "numpy", "opencv", "python"):
        assert rep["versions"][key]
    assert rep["settings"]["crop_border"] == SCALE

    per = {(r["image"], r["method"]): r for r in rep["per_image"]}
    assert len(per) == 3 + 2
    assert per[("b", "blur")]["cropped_to_gt"] is True and per[("b", "blur")]["width"] == 191
    assert per[("a", "blur")]["cropped_to_gt"] is False
    for r in per.values():
        assert 10 < r["psnr_y"] < 60 and 0 < r["ssim_y"] <= 1 and 0 <= r["st_lpips"] < 1
    for key, r in per.items():  # NIQE needs two 96x96 blocks: the cropped 191x94 output has none
        if key == ("b", "blur"):
            assert r["niqe"] is None and "too small" in " ".join(r["notes"])
        else:
            assert r["niqe"] > 0
    assert per[("a", "bicubic")]["seconds"] > 0 and per[("a", "bicubic")]["megapixels_per_s"] > 0
    assert per[("a", "blur")]["seconds"] is None

    mean = rep["mean"]
    assert mean["bicubic"]["images"] == 3 and mean["blur"]["images"] == 2 and mean["blur"]["missing"] == 1
    expected = np.mean([per[(s, "bicubic")]["psnr_y"] for s in "abc"])
    assert mean["bicubic"]["psnr_y"] == pytest.approx(expected)
    assert mean["bicubic"]["seconds_per_image"] > 0 and mean["blur"]["seconds_per_image"] is None

    md = (out / "report.md").read_text()
    assert "| bicubic | 3 |" in md and "ST-LPIPS" in md and "figure.png" in md and "`lonely`" in md
    fig = cv2.imread(str(out / "figure.png"))
    assert fig is not None and fig.shape[0] > 300 and fig.shape[1] > 500


def test_size_mismatch_is_a_per_file_error(paired: Path, tmp_path: Path) -> None:
    sr = tmp_path / "sr"
    gt_a = cv2.imread(str(paired / "gt" / "a.png"))
    sr.mkdir()
    cv2.imwrite(str(sr / "a.png"), gt_a[:-SCALE])  # 4 px short: too much to crop
    cv2.imwrite(str(sr / "b.png"), cv2.imread(str(paired / "gt" / "b.png")))
    out = tmp_path / "rep"
    code, text = invoke(["eval", "--lq", str(paired / "lq"), "--gt", str(paired / "gt"),
                         "--sr", f"odd={sr}", "-o", str(out), "--device", "cpu", "--no-niqe", "--no-model"])
    assert code == 1
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["errors"]) == 1
    err = rep["errors"][0]
    assert err["image"] == "a" and str(sr / "a.png") in err["error"] and "192x92" in err["error"]
    assert [r["image"] for r in rep["per_image"]] == ["b"]
    assert rep["metrics"]["niqe"]["available"] is False


def test_no_ground_truth_reports_niqe_only(paired: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    code, text = invoke(["eval", "--lq", str(paired / "lq"), "--baseline", "bicubic,lanczos", "-o", str(out),
                         "--limit", "2", "--figure-images", "1", "--no-model"])
    assert code == 0, text
    rep = json.loads((out / "report.json").read_text())
    assert rep["images"] == ["a", "b"] and rep["unpaired"]["counts"]["left_out_by_limit"] == 2
    assert [m["name"] for m in rep["methods"]] == ["bicubic", "lanczos"]
    for key in ("psnr_y", "ssim_y", "st_lpips", "lpips"):
        assert rep["metrics"][key]["available"] is False and "ground truth" in rep["metrics"][key]["reason"]
    assert all(r["psnr_y"] is None and r["niqe"] > 0 for r in rep["per_image"])
    assert (out / "figure.png").is_file()


def test_tiny_model_runs_through_the_upscale_pipeline(paired: Path, tmp_path: Path) -> None:
    import torch

    from tadsr_cli.models.checkpoints import save_model, sha256_file
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    model_file = save_model(DiffusionSR(tiny_test_config()), tmp_path / "tiny.safetensors")
    out = tmp_path / "rep"
    code, text = invoke(["eval", "--lq", str(paired / "lq"), "--gt", str(paired / "gt"), "--model", str(model_file),
                         "--steps", "1", "--baseline", "bicubic", "-o", str(out), "--device", "cpu", "--limit", "1",
                         "--save-sr", "--no-niqe"])
    assert code == 0, text
    rep = json.loads((out / "report.json").read_text())
    m = rep["methods"][0]
    assert m["kind"] == "model" and m["steps"] == 1 and m["model_sha256"] == sha256_file(model_file)
    rec = next(r for r in rep["per_image"] if r["method"] == m["name"])
    assert (rec["width"], rec["height"]) == (192, 96)
    assert rec["seconds"] > 0 and rec["megapixels_per_s"] > 0
    # residual parameterisation with a zero last layer starts at bicubic: close to the OpenCV bicubic baseline
    bic = next(r for r in rep["per_image"] if r["method"] == "bicubic")
    assert abs(rec["psnr_y"] - bic["psnr_y"]) < 1.0
    assert (out / "sr" / "tiny_1_step" / "a.png").is_file()
    # steps other than 1 or the model's T are refused before any work
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--lq", str(paired / "lq"), "--model", str(model_file), "--steps", "7", "-o", str(tmp_path / "x")])
    assert exc.value.code == 2 and not (tmp_path / "x").exists()


def test_usage_errors_exit_2(paired: Path, tmp_path: Path) -> None:
    code, _ = invoke(["eval", "--lq", str(paired / "lq"), "--sr", "nodir", "-o", str(tmp_path / "r")])
    assert code == 2
    code, _ = invoke(["eval", "--lq", str(paired / "lq"), "--baseline", "nearest", "-o", str(tmp_path / "r")])
    assert code == 2
    for args in (["eval", "--lq", str(paired / "lq"), "-o", str(tmp_path / "r"), "--no-model"],  # nothing to do
                 ["eval", "--lq", str(tmp_path / "missing"), "--baseline", "bicubic", "-o", str(tmp_path / "r")]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2


def test_align_and_pairing_rules(paired: Path) -> None:
    gt = np.zeros((100, 120, 3), np.uint8)
    sr, g, cropped = align_to_gt(np.zeros((97, 120, 3), np.uint8), gt, 4, "x.png")
    assert cropped and sr.shape == g.shape == (97, 120, 3)
    with pytest.raises(InputError, match="x.png"):
        align_to_gt(np.zeros((96, 120, 3), np.uint8), gt, 4, "x.png")
    p = pair_folders(paired / "lq", paired / "gt")
    assert p.stems == ["a", "b", "c"] and p.lq_without_gt == ["lonely"] and p.gt_without_lq == []
