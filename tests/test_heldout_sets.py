"""The web-image held-out variant (benchmarks/make_heldout_sets.py) and the crop sheet's ranking and placement
(benchmarks/crop_sheet.py), on synthetic images: fast, no shared data needed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import crop_sheet  # noqa: E402
import make_heldout_sets as mhs  # noqa: E402


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish 8-bit test photo (noise blurred by a coarse-to-fine upscale), so JPEG has something to do."""
    import cv2

    small = np.random.default_rng(seed).integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_web_photo_is_deterministic_and_shaped() -> None:
    img = photo(600, 900)
    jpg, pairs, info = mhs.web_photo(img, "some_photo", crops=3, draws=2)
    jpg2, pairs2, info2 = mhs.web_photo(img, "some_photo", crops=3, draws=2)
    assert jpg == jpg2 and info == info2
    assert [n for n, _, _ in pairs] == [f"some_photo_c{c}_d{d}" for c in range(3) for d in range(2)]
    for (_, gt, lq), (_, gt2, lq2) in zip(pairs, pairs2, strict=True):
        assert np.array_equal(gt, gt2) and np.array_equal(lq, lq2)
        assert gt.shape == (256, 256, 3) and gt.dtype == np.uint8
        assert lq.shape == (64, 64, 3)
    assert np.array_equal(pairs[0][1], pairs[1][1])  # the GT is duplicated per draw...
    assert not np.array_equal(pairs[0][2], pairs[1][2])  # ...and the draws differ
    assert 70 <= info["jpeg_quality"] <= 90
    assert 448 <= max(info["web_hw"]) <= 560 and min(info["web_hw"]) >= 256
    other = mhs.web_photo(img, "another_photo", crops=1, draws=1)[2]
    assert other != info  # the seed follows the name


@pytest.mark.parametrize(("h", "w", "disjoint"), [(300, 800, 3), (256, 512, 2), (389, 519, 2), (600, 600, 3)])
def test_crops_are_disjoint_where_there_is_room(h: int, w: int, disjoint: int) -> None:
    boxes = mhs.choose_crops(np.random.default_rng(1), h, w, 3, 256)
    assert len(boxes) == 3
    for y, x in boxes:
        assert 0 <= y <= h - 256 and 0 <= x <= w - 256
    first = boxes[:disjoint]
    for i, (ya, xa) in enumerate(first):
        for yb, xb in first[i + 1:]:
            assert abs(ya - yb) >= 256 or abs(xa - xb) >= 256


def test_web_size_never_upscales_and_holds_a_crop() -> None:
    assert mhs.web_size(480, 960, 448, 256) == (256, 512)  # 2:1: raised so the short side holds a crop
    assert mhs.web_size(300, 400, 500, 256) == (300, 400)  # already small: kept
    h, w = mhs.web_size(1536, 2048, 500, 256)
    assert w == 500 and h == 375


def test_sheet_ranks_worst_first_and_crops_at_the_error() -> None:
    assert crop_sheet.worst_first([("a", 0.2), ("b", 0.5), ("c", None), ("d", 0.1)], True) == ["b", "a", "d"]
    assert crop_sheet.worst_first([("a", 30.0), ("b", 20.0)], False) == ["b", "a"]
    gt = np.full((256, 256, 3), 128, dtype=np.uint8)
    sr = gt.copy()
    sr[150:170, 40:60] = 255  # the only error
    y, x = crop_sheet.worst_spot(sr, gt, 64, 4)
    assert y % 4 == 0 and x % 4 == 0
    assert y <= 150 and y + 64 >= 170 and x <= 40 and x + 64 >= 60


def test_sheet_resolves_method_names_as_eval_writes_them() -> None:
    methods = [crop_sheet.Method("tadsr-tiny-x4-teacher (15 steps)", Path("t"), model="tadsr-tiny-x4-teacher"),
               crop_sheet.Method("tadsr-tiny-x4 (1 step)", Path("d"), model="default"),
               crop_sheet.Method("bicubic", Path("b"))]
    assert crop_sheet.resolve("default", methods).name == "tadsr-tiny-x4 (1 step)"
    assert crop_sheet.resolve("tadsr-tiny-x4-teacher", methods).name.startswith("tadsr-tiny-x4-teacher")
    assert crop_sheet.resolve("tadsr-tiny-x4_1_step", methods).name == "tadsr-tiny-x4 (1 step)"  # the sr/ folder
    with pytest.raises(SystemExit):
        crop_sheet.resolve("realesrgan", methods)
