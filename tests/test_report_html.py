"""`report.html` (eval.report_html): self-contained, and working in a real browser (headless Chromium).

The browser tests load the page from a file and read back what the page's own self-check (`#selftest`) wrote
into the DOM: no JavaScript errors, one comparison per image with both images decoded, the slider moving the
clip, a zoom applied to both sides, tables sorting. Screenshots at two slider positions prove that the pixels shown
change, and that they are the LQ on the left of the divider and the method's output on the right.
They are skipped only when no Chromium binary is installed (CI installs it: `.ci/run`, which also sets
TADSR_REQUIRE_CHROMIUM=1 so that a missing browser fails there instead).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tadsr_cli.eval.display import FramePicker, choose_region, encode_display
from tadsr_cli.eval.report_html import render_video_html, write_video_html
from tadsr_cli.eval.temporal import bicubic_upscale, measure_temporal
from tests.test_eval_cli import make_set, textured, write

SCALE = 4
STEMS = ["a", "b"]
WINDOW = (1200, 2200)  # tall enough that every comparison lies in the first screen (no scrolling needed)
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("TADSR_REQUIRE_CHROMIUM"):
            pytest.fail("TADSR_REQUIRE_CHROMIUM is set but no chromium binary is on PATH")
        pytest.skip("no chromium binary on PATH (apt-get install chromium) to test report.html in a browser")
    return CHROMIUM


def run_chromium(page: Path, fragment: str, profile: Path, *args: str) -> str:
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000", *args,
           page.resolve().as_uri() + fragment]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def self_check(page: Path, profile: Path) -> dict[str, Any]:
    """The page's `#selftest` JSON (plus the `#js-errors` box's text), after loading it in Chromium."""
    dom = run_chromium(page, "#selftest", profile, "--dump-dom")
    box = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    m = re.search(r'<pre id="selftest"[^>]*>(.*?)</pre>', dom, re.S)
    assert m and m.group(1).strip(), "the page's self-check did not run (a script failed?)\n" + dom[-3000:]
    out = json.loads(html.unescape(m.group(1)))
    out["error_box"] = html.unescape(box.group(1)) if box else None
    return out


def screenshot(page: Path, fragment: str, profile: Path, tmp: Path) -> np.ndarray:
    shot = tmp / f"shot{abs(hash(fragment))}.png"
    run_chromium(page, fragment, profile, f"--screenshot={shot}")
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None, "no screenshot written"
    return img[..., ::-1].astype(np.int16)  # RGB


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tadsr eval` over two generated pairs: the bicubic baseline (saved with --save-sr) and ready outputs."""
    root = tmp_path_factory.mktemp("htmlreport")
    gts = make_set(root, STEMS, h=96, w=160)
    write(root / "sr" / "a.png", cv2.GaussianBlur(gts["a"], (0, 0), 1.2))  # "b" missing: a gap in the tables
    out = root / "report"
    from tadsr_cli.cli import main

    try:
        main(["eval", "--lq", str(root / "lq"), "--gt", str(root / "gt"), "--no-model", "--baseline", "bicubic",
              "--sr", f"blur={root / 'sr'}", "-o", str(out), "--device", "cpu", "--save-sr", "--no-niqe"])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    return out


# ---- the file itself ---------------------------------------------------------------------------------------------
def test_report_html_is_written_and_self_contained(report: Path) -> None:
    page = report / "report.html"
    text = page.read_text(encoding="utf-8")
    assert {"report.json", "report.md", "figure.png", "report.html"} <= {p.name for p in report.iterdir()}
    for needle in ("http://", "https://", "<link", "@import", "<iframe"):
        assert needle not in text, f"the page refers to something outside itself: {needle}"
    srcs = re.findall(r'"src": "([^"]{0,40})', text)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert text.count('<section class="cmp"') == len(STEMS)
    assert text.count("<svg") == 1 and 'class="sortable" id="means"' in text and 'id="per-image"' in text
    assert 'href="sr/bicubic/a.png"' in text and (report / "sr" / "bicubic" / "a.png").is_file()
    assert page.stat().st_size < 400_000  # two images x (LQ + 2 methods + GT) crops


def test_display_crops_stay_bounded() -> None:
    img = textured(900, 700, seed=3)
    y, x, h, w = choose_region(img[::SCALE, ::SCALE], SCALE, 384)
    assert (h, w) == (384, 384) and y % SCALE == 0 and x % SCALE == 0
    assert y + h <= 900 and x + w <= 700
    enc = encode_display(img[:384, :384])
    assert enc.mime in ("image/png", "image/jpeg") and (enc.width, enc.height) == (384, 384)
    assert len(enc.data) < 384 * 384 * 3 // 2  # encoded, never a raw array
    small = textured(20, 30, seed=4)
    assert choose_region(small, SCALE, 384) == (0, 0, 80, 120)  # a small image is shown whole


# ---- in the browser ----------------------------------------------------------------------------------------------
def test_report_renders_in_chromium_with_a_comparison_per_image(report: Path, tmp_path: Path) -> None:
    check = self_check(report / "report.html", tmp_path / "profile")
    assert check["errors"] == [] and not (check["error_box"] or "").strip(), check["errors"]
    widgets = check["widgets"]
    assert [w["name"] for w in widgets] == STEMS  # every image has its comparison
    assert widgets[0]["versions"] == ["lq", "m0", "m1", "gt"] and widgets[1]["versions"] == ["lq", "m0", "gt"]
    for w in widgets:
        assert w["loaded"], w  # both shown images decoded
        assert w["natural"][0] * SCALE == w["natural"][1]  # A = LQ at LQ size, B = the output at HR size
        assert w["clips"][0] != w["clips"][1] and "10%" in w["clips"][0] and "90%" in w["clips"][1]
        assert w["zoom_both"]
        assert w["view"][2] > 100 and w["view"][3] > 50
    tables = {t["id"]: t for t in check["tables"]}
    assert tables["means"]["text"] == [["bicubic", "blur"], ["blur", "bicubic"]]
    num_up, num_down = tables["per-image"]["num"]
    assert len(num_up) == 3
    values = [float(v) for v in num_up if v != ""]
    assert values == sorted(values) and num_up[len(values):] == [""] * (3 - len(values))  # missing ones last
    assert [float(v) for v in num_down if v != ""] == sorted(values, reverse=True)


def test_moving_the_slider_changes_the_pixels_shown(report: Path, tmp_path: Path) -> None:
    page = report / "report.html"
    profile = tmp_path / "profile"
    view = self_check(page, profile)["widgets"][0]["view"]
    left, top, width, height = (int(round(v)) for v in view)
    assert top + height <= WINDOW[1]
    at10 = screenshot(page, "#slider=10", profile, tmp_path)[top:top + height, left:left + width]
    at90 = screenshot(page, "#slider=90", profile, tmp_path)[top:top + height, left:left + width]
    diff = np.abs(at10 - at90).mean(axis=2)
    cut = lambda f: int(f * width)  # noqa: E731
    between, outside = diff[:, cut(0.13):cut(0.87)].mean(), diff[:, cut(0.92):].mean() + diff[:, :cut(0.08)].mean()
    print(f"mean |difference| between the divider positions {between:.2f}, outside {outside:.3f} (0-255)")
    assert between > 2 and outside < 0.1  # A in one shot and B in the other between them; the same outside

    # what is shown is the LQ (nearest-upscaled) left of the divider and the bicubic output right of it
    k = width // 160
    sr = cv2.imread(str(report / "sr" / "bicubic" / "a.png"))[..., ::-1]
    lq = cv2.imread(str(report.parent / "lq" / "a.png"))[..., ::-1]
    expect_b = np.repeat(np.repeat(sr, k, 0), k, 1).astype(np.int16)
    expect_a = np.repeat(np.repeat(lq, k * SCALE, 0), k * SCALE, 1).astype(np.int16)
    inner = slice(30, height - 4)  # below the A/B name tags
    right = np.abs(at10[inner, cut(0.5):] - expect_b[inner, cut(0.5):]).mean()
    left_ = np.abs(at90[inner, 4:cut(0.5)] - expect_a[inner, 4:cut(0.5)]).mean()
    print(f"mean |shown - expected|: B {right:.2f}, A {left_:.2f}")
    assert right < 4 and left_ < 1, (right, left_)  # B is a JPEG crop (quality 95), A a PNG


# ---- the video page ----------------------------------------------------------------------------------------------
def test_video_report_plots_and_frames_in_chromium(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tex = textured(160, 240, seed=5)
    gt = [tex[8:72, 4 + 3 * i:68 + 3 * i].copy() for i in range(6)]  # a pan, 64x64 HR
    lq = [cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in gt]

    def noisy(x: np.ndarray) -> np.ndarray:
        up = bicubic_upscale(x, SCALE)
        return np.clip(up + rng.normal(0, 0.03, up.shape).astype(np.float32), 0, 1)

    picker = FramePicker(len(lq), picks=2, scale=SCALE)
    for i, (f, g) in enumerate(zip(lq, gt, strict=True)):  # the frames a measuring loop would offer
        picker.offer(i, f, {"bicubic": bicubic_upscale(f, SCALE), "noisy": noisy(f)}, g)
    temporal = measure_temporal(lq, {"noisy": noisy}, gt, scale=SCALE).to_json()
    assert [ds.name for ds in picker.sets] == ["frame 0", "frame 4"]
    assert list(picker.sets[0].methods) == ["bicubic · frame 0", "noisy · frame 0", "bicubic · frame 1",
                                            "noisy · frame 1"]

    text = render_video_html(temporal, picker.sets)
    assert text.count("<svg") == 2 and text.count("<path") >= 5  # PSNR-Y (2 lines) and flicker (3 lines)
    assert "http" not in text
    page = write_video_html(temporal, tmp_path / "rep", picker.sets)
    check = self_check(page, tmp_path / "profile")
    assert check["errors"] == [] and not (check["error_box"] or "").strip(), check["errors"]
    assert [w["name"] for w in check["widgets"]] == ["frame 0", "frame 4"]
    assert all(w["loaded"] and w["zoom_both"] and w["clips"][0] != w["clips"][1] for w in check["widgets"])
    assert check["tables"][0]["rows"] == 3  # reference, bicubic, noisy
