"""Real-ESRGAN degradation, blur kernels and the training/validation datasets (CPU, fast)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tadsr_cli.base.errors import RecipeError, TrainingError
from tadsr_cli.train import kernels as K
from tadsr_cli.train.data_files import TRAIN_HR_HOLDOUT, list_images, split_holdout
from tadsr_cli.train.datasets import HRFolderDataset, PairedFolderDataset, ValidationSet, worker_init_fn
from tadsr_cli.train.degradation_config import DegradationConfig
from tadsr_cli.train.degradations import degrade
from tadsr_cli.train.image_ops import bicubic_downscale, filter_image, jpeg_compress, quantize

TRAIN_HR = Path(__file__).resolve().parents[2] / "shared" / "data" / "train-hr"


def _photo(h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth image with edges and texture (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / 9.0 + c) * np.cos(yy / 13.0 - c) for c in range(3)], axis=-1)
    base += (xx > w / 2)[..., None] * 0.8 - (yy > h / 3)[..., None] * 0.5
    base += rng.normal(0, 0.05, size=base.shape)
    base = (base - base.min()) / (base.max() - base.min())
    return (base * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def hr_crop() -> np.ndarray:
    return _photo(256, 256)


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "hr"
    (root / "sub").mkdir(parents=True)
    sizes = [(300, 280), (260, 320), (200, 150), (400, 300)]  # one smaller than the crop: reflect padding
    for i, (h, w) in enumerate(sizes):
        folder = root / "sub" if i == 3 else root
        ext = ".png" if i % 2 == 0 else ".jpg"
        Image.fromarray(_photo(h, w, seed=i)).save(folder / f"img{i}{ext}")
    (root / "notes.txt").write_text("not an image")
    return root


# --------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("size", [7, 13, 21])
def test_kernels_sum_to_one_odd_and_centred(size: int) -> None:
    kernels = [
        K.gaussian_kernel(size, 1.5),
        K.gaussian_kernel(size, 2.5, 0.7, 0.6),
        K.generalized_gaussian_kernel(size, 2.0, 1.0, -0.4, 0.5),
        K.generalized_gaussian_kernel(size, 2.0, None, 0.0, 3.5),
        K.plateau_kernel(size, 1.5, 0.8, 1.0, 1.7),
        K.plateau_kernel(size, 1.5, None, 0.0, 1.0),
        K.sinc_kernel(size, math.pi / 4),
        K.sinc_kernel(size, math.pi),
    ]
    for k in kernels:
        assert k.shape == (size, size) and size % 2 == 1
        assert abs(k.sum() - 1.0) < 1e-10
        # centrally symmetric: correlation == convolution
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
        c = size // 2
        assert k[c, c] == k.max()


def test_gaussian_kernel_matches_separable_and_rotation() -> None:
    g1 = np.exp(-0.5 * (np.arange(-10, 11) / 1.7) ** 2)
    np.testing.assert_allclose(
        K.gaussian_kernel(21, 1.7), np.outer(g1, g1) / np.outer(g1, g1).sum(), atol=1e-14
    )
    # a 90-degree rotation swaps the axes
    np.testing.assert_allclose(
        K.gaussian_kernel(21, 3.0, 1.0, math.pi / 2), K.gaussian_kernel(21, 1.0, 3.0, 0.0), atol=1e-12
    )
    # beta = 1 generalised Gaussian is the Gaussian
    np.testing.assert_allclose(
        K.generalized_gaussian_kernel(15, 2.0, 1.2, 0.3, 1.0),
        K.gaussian_kernel(15, 2.0, 1.2, 0.3),
        atol=1e-14,
    )


def test_bessel_and_sinc() -> None:
    # reference values of J1 (scipy.special.j1)
    np.testing.assert_allclose(
        K.bessel_j1(np.array([0.0, 1.0, 5.0, 20.0, 44.0])),
        [0.0, 0.44005058574493355, -0.3275791375914653, 0.0668331241758502, -0.08280335937602906],
        atol=1e-12,
    )
    k = K.sinc_kernel(21, math.pi / 5)
    assert (k < 0).any()  # ringing lobes
    padded = K.sinc_kernel(7, math.pi / 2, pad_to=21)
    assert padded.shape == (21, 21) and abs(padded.sum() - 1) < 1e-12
    np.testing.assert_array_equal(padded[7:14, 7:14], K.sinc_kernel(7, math.pi / 2))
    with pytest.raises(ValueError):
        K.sinc_kernel(8, 1.0)


def test_random_mixed_kernel_types() -> None:
    rng = np.random.default_rng(0)
    for kind in K.KERNEL_TYPES:
        k, params = K.random_mixed_kernel(rng, [kind], [1.0], 15, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0))
        assert params["type"] == kind and k.shape == (15, 15) and abs(k.sum() - 1) < 1e-10
        if kind.endswith("_iso") or kind == "iso":
            assert params["sigma_x"] == params["sigma_y"]
        if kind.startswith("plateau"):
            assert 1.0 <= params["beta"] <= 2.0


def test_filter_trimming_is_exact_enough(hr_crop: np.ndarray) -> None:
    img = hr_crop.astype(np.float32) / 255
    k = K.gaussian_kernel(21, 0.3)  # numerically 3x3
    full = cv2.filter2D(img, cv2.CV_32F, k.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(filter_image(img, k), full, atol=1e-6)


# --------------------------------------------------------------------------------------------- degradation


def test_degrade_reproducible_and_seed_dependent(hr_crop: np.ndarray) -> None:
    cfg = DegradationConfig()
    a = degrade(hr_crop, np.random.default_rng(123), cfg)
    b = degrade(hr_crop, np.random.default_rng(123), cfg)
    c = degrade(hr_crop, np.random.default_rng(124), cfg)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_degrade_lq_size_levels_and_branches(hr_crop: np.ndarray) -> None:
    cfg = DegradationConfig()
    seen = set()
    for seed in range(24):
        log: dict = {}
        lq = degrade(hr_crop, np.random.default_rng(seed), cfg, log=log)
        assert lq.shape == (64, 64, 3) and lq.dtype == np.float32
        assert lq.min() >= 0 and lq.max() <= 1
        np.testing.assert_array_equal(lq, quantize(lq))  # on 8-bit levels
        seen.add(log["resize1"]["direction"])
        seen.add(("second", log["second_order"]))
    assert {"up", "down", ("second", True), ("second", False)} <= seen
    # forced extreme branches: always up (x1.5 then x1.2 of the LQ size), always the strongest down-scale
    up = DegradationConfig(resize_prob=(1, 0, 0), resize_prob2=(1, 0, 0), second_order_prob=1.0)
    down = DegradationConfig(resize_prob=(0, 1, 0), resize_prob2=(0, 1, 0), second_order_prob=1.0)
    for cfg2 in (up, down):
        for seed in range(4):
            log = {}
            lq = degrade(hr_crop, np.random.default_rng(seed), cfg2, log=log)
            assert lq.shape == (64, 64, 3)
            assert log["resize1"]["direction"] == ("up" if cfg2 is up else "down")
            if cfg2 is up:
                assert log["resize1"]["size"][0] >= 256 and log["resize2"]["size"][0] >= 64
    # non-square input, and the bicubic kind
    assert degrade(_photo(200, 120), np.random.default_rng(0)).shape == (50, 30, 3)
    assert degrade(hr_crop, np.random.default_rng(0), {"kind": "bicubic"}).shape == (64, 64, 3)


def test_jpeg_changes_image_keeps_size(hr_crop: np.ndarray) -> None:
    img = hr_crop.astype(np.float32) / 255
    out = jpeg_compress(img, 30)
    assert out.shape == img.shape and out.dtype == np.float32
    diff = np.abs(out - img)
    assert diff.mean() > 1e-3 and diff.mean() < 0.1
    # colour order is kept (a red image stays red)
    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 1.0
    assert jpeg_compress(red, 90)[..., 0].mean() > 0.9


def test_bicubic_kind_equals_pil(hr_crop: np.ndarray) -> None:
    lq = degrade(hr_crop, np.random.default_rng(0), {"kind": "bicubic"})
    img = hr_crop.astype(np.float32) / 255
    ref = np.stack(
        [
            np.asarray(Image.fromarray(img[..., c], mode="F").resize((64, 64), Image.Resampling.BICUBIC))
            for c in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_array_equal(lq, quantize(ref))
    np.testing.assert_allclose(bicubic_downscale(img, 4), ref)
    # close to PIL's own 8-bit bicubic (which rounds internally)
    pil8 = (
        np.asarray(Image.fromarray(hr_crop).resize((64, 64), Image.Resampling.BICUBIC)).astype(np.float32)
        / 255
    )
    assert np.abs(lq - pil8).max() <= 1.5 / 255


def test_config_from_dict_and_errors() -> None:
    cfg = DegradationConfig.from_dict(
        {"noise_range": [1, 10], "jpeg_range": [60, 95], "second_order_prob": 1}
    )
    assert cfg.noise_range == (1.0, 10.0) and cfg.second_order_prob == 1.0
    assert DegradationConfig.from_dict(cfg.to_dict()) == cfg
    assert DegradationConfig.from_dict(None) == DegradationConfig()
    with pytest.raises(RecipeError, match="degradation.*'blur_sigmaa'"):
        DegradationConfig.from_dict({"blur_sigmaa": [0.2, 3]})
    with pytest.raises(RecipeError, match="noise_range"):
        DegradationConfig.from_dict({"noise_range": "big"})
    with pytest.raises(RecipeError, match="kernel_prob"):
        DegradationConfig.from_dict({"kernel_prob": [0.5, 0.5]})
    with pytest.raises(RecipeError, match="blur_kernel_size"):
        DegradationConfig.from_dict({"blur_kernel_size": 20})
    with pytest.raises(RecipeError, match="kind"):
        DegradationConfig.from_dict({"kind": "bsrgan"})
    with pytest.raises(RecipeError, match="scale"):
        DegradationConfig.from_dict({"scale": 2.5})


# --------------------------------------------------------------------------------------------- datasets


def test_hr_folder_items(image_folder: Path) -> None:
    ds = HRFolderDataset(image_folder, gt_size=128, scale=4, seed=7, length=10)
    assert len(ds.files) == 4 and len(ds) == 10  # recursive, .txt ignored
    for i in range(len(ds)):
        item = ds[i]
        assert item["gt"].shape == (3, 128, 128) and item["lq"].shape == (3, 32, 32)
        assert item["gt"].dtype == torch.float32 and item["lq"].dtype == torch.float32
        for key in ("gt", "lq"):
            assert item[key].min() >= -1 and item[key].max() <= 1
        assert item["index"] == i and isinstance(item["seed"], int)
    # every image used (10 items over 4 images: per-block permutations)
    assert {ds.image_index(i) for i in range(8)} == set(range(4))
    # reproducible; epochs differ
    again = HRFolderDataset(image_folder, gt_size=128, scale=4, seed=7, length=10)
    torch.testing.assert_close(again[3]["lq"], ds[3]["lq"], rtol=0, atol=0)
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["gt"], again[3]["gt"])
    assert HRFolderDataset(image_folder, gt_size=128, seed=8)[0]["seed"] != again[0]["seed"]


def test_hr_folder_same_items_with_workers(image_folder: Path) -> None:
    ds = HRFolderDataset(
        image_folder, gt_size=64, scale=4, seed=3, length=8, degradation={"kind": "realesrgan"}
    )

    def collect(workers: int, epoch: int) -> list[dict]:
        ds.set_epoch(epoch)
        loader = DataLoader(
            ds,
            batch_size=3,
            num_workers=workers,
            shuffle=False,
            worker_init_fn=worker_init_fn,
            persistent_workers=workers > 0,
        )
        return list(loader)

    serial = collect(0, 0)
    parallel = collect(2, 0)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        torch.testing.assert_close(a["gt"], b["gt"], rtol=0, atol=0)
        torch.testing.assert_close(a["lq"], b["lq"], rtol=0, atol=0)
        assert torch.equal(a["seed"], b["seed"])
    # a fresh dataset object (another rank) gives the same item for the same index
    other = HRFolderDataset(image_folder, gt_size=64, scale=4, seed=3, length=8)
    torch.testing.assert_close(other[5]["lq"], ds[5]["lq"], rtol=0, atol=0)


def test_hr_folder_exclusion_and_errors(image_folder: Path, tmp_path: Path) -> None:
    ds = HRFolderDataset(image_folder, gt_size=64, exclude=["img0.png", "img3"])
    assert sorted(p.name for p in ds.files) == ["img1.jpg", "img2.png"]
    assert "sub/img3.jpg" in {p.relative_to(image_folder).as_posix() for p in list_images(image_folder)}
    assert len(HRFolderDataset(image_folder, gt_size=64, exclude=["sub/img3.jpg"]).files) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(TrainingError, match="no usable images"):
        HRFolderDataset(empty)
    with pytest.raises(TrainingError, match="does not exist"):
        HRFolderDataset(tmp_path / "missing")
    with pytest.raises(TrainingError, match="no usable images.*excluded"):
        HRFolderDataset(image_folder, exclude=["img0", "img1", "img2", "img3"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    Image.fromarray(_photo(64, 64)).save(broken / "good.png")
    with pytest.raises(TrainingError, match="unreadable.*bad.jpg"):
        HRFolderDataset(broken, gt_size=64)
    with pytest.raises(TrainingError, match="multiple"):
        HRFolderDataset(image_folder, gt_size=66)


def test_paired_folder_alignment(tmp_path: Path) -> None:
    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    gt_dir.mkdir()
    lq_dir.mkdir()
    for i, (h, w) in enumerate([(256, 320), (200, 160)]):
        gt = _photo(h, w, seed=10 + i)
        lq = cv2.resize(gt, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        Image.fromarray(gt).save(gt_dir / f"p{i}.png")
        Image.fromarray(lq).save(lq_dir / f"p{i}.png")
    Image.fromarray(_photo(64, 64)).save(gt_dir / "lonely.png")
    ds = PairedFolderDataset(lq_dir, gt_dir, gt_size=128, scale=4, seed=1, length=6)
    assert ds.unmatched == ["lonely"] and len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["gt"].shape == (3, 128, 128) and item["lq"].shape == (3, 32, 32)
        gt = ((item["gt"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        lq = ((item["lq"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.float32)
        # box downscaling commutes with the flips/transposes: the crop pair stays aligned
        ref = cv2.resize(gt, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        assert np.abs(ref - lq).max() <= 1.0
    whole = PairedFolderDataset(lq_dir, gt_dir, gt_size=None, use_hflip=False, use_rot=False)
    shapes = {tuple(whole[i]["gt"].shape) for i in range(2)}
    assert shapes == {(3, 256, 320), (3, 200, 160)}
    with pytest.raises(TrainingError, match="no LQ/GT pairs"):
        PairedFolderDataset(lq_dir, tmp_path, gt_size=128)


def test_validation_set_fixed(image_folder: Path) -> None:
    files = list_images(image_folder)
    a = ValidationSet(files, gt_size=128, seed=5)
    b = ValidationSet(list(reversed(files)), gt_size=128, seed=5)
    assert len(a) == 4
    item = a[0]
    assert (
        item["gt"].shape == (3, 128, 128)
        and item["lq"].shape == (3, 32, 32)
        and item["name"] == files[0].name
    )
    # the LQ depends on the file (by name) and seed only, not on its position in the list
    torch.testing.assert_close(b[3]["lq"], item["lq"], rtol=0, atol=0)
    torch.testing.assert_close(a[0]["lq"], item["lq"], rtol=0, atol=0)
    # centre crop of the GT
    img = np.asarray(Image.open(files[0]).convert("RGB"))
    h, w = img.shape[:2]
    y, x = (h - 128) // 2, (w - 128) // 2
    expect = torch.from_numpy(
        img[y : y + 128, x : x + 128].transpose(2, 0, 1).astype(np.float32) / 255 * 2 - 1
    )
    torch.testing.assert_close(item["gt"], expect, rtol=0, atol=1e-6)
    bic = ValidationSet(image_folder, gt_size=None, degradation={"kind": "bicubic"})
    sizes = {tuple(bic[i]["lq"].shape[1:]) for i in range(len(bic))}
    assert sizes == {(75, 70), (65, 80), (50, 37), (100, 75)}  # whole images (H x W) / 4, floored


def test_split_holdout() -> None:
    names = [f"im{i:02d}.png" for i in range(26)]
    train, hold = split_holdout(list(reversed(names)), 4)
    assert hold == ["im03.png", "im09.png", "im16.png", "im22.png"]
    assert len(train) == 22 and not set(train) & set(hold)
    t1, h1 = split_holdout(names, 4, seed=11)
    assert (t1, h1) == split_holdout(names, 4, seed=11) and len(h1) == 4
    with pytest.raises(TrainingError):
        split_holdout(names[:3], 4)


@pytest.mark.skipif(not TRAIN_HR.is_dir(), reason="shared data folder missing")
def test_train_hr_folder_and_holdout_constant() -> None:
    names = [p.name for p in list_images(TRAIN_HR)]
    assert len(names) == 26
    assert tuple(split_holdout(names, 4)[1]) == TRAIN_HR_HOLDOUT
    ds = HRFolderDataset(TRAIN_HR, gt_size=256, scale=4, exclude=TRAIN_HR_HOLDOUT, seed=0, length=2)
    assert len(ds.files) == 22 and not {p.name for p in ds.files} & set(TRAIN_HR_HOLDOUT)
    item = ds[0]
    assert item["gt"].shape == (3, 256, 256) and item["lq"].shape == (3, 64, 64)


def test_light_share_is_a_clean_downscale():
    from tadsr_cli.train.image_ops import resize

    hr = np.random.default_rng(0).random((64, 48, 3)).astype(np.float32)
    cfg = DegradationConfig(light_prob=1.0, light_jpeg_prob=0.0)
    clean = [quantize(resize(hr, (16, 12), "area")), quantize(bicubic_downscale(hr, 4))]
    modes = set()
    for seed in range(8):
        log: dict = {}
        lq = degrade(hr, np.random.default_rng(seed), cfg, log=log)
        modes.add(log["light"]["mode"])
        assert any(np.array_equal(lq, c) for c in clean)
    assert modes == {"area", "bicubic-aa"}
    with pytest.raises(RecipeError, match="light_prob"):
        DegradationConfig(light_prob=1.5)


def test_training_items_say_which_inputs_are_clean(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    for prob, want in ((0.0, {False}), (1.0, {True})):
        ds = HRFolderDataset(tmp_path, gt_size=64, scale=4, degradation=DegradationConfig(light_prob=prob), length=6)
        assert {ds[i]["light"] for i in range(6)} == want
