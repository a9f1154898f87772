"""`tadsr eval` on a video runs what `tadsr upscale` runs: same reader, session, options, frames and output file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tadsr_cli.eval.temporal import TemporalMeter, to_u8
from tests.test_batch import run_cli
from tests.test_upscale_cli import model_file  # noqa: F401 - the tiny model fixture
from tests.test_video import frames, make_clip

LABEL = "tiny (1 step)"  # the fixture's model file, at its default steps
SAVED = Path("sr") / "tiny_1_step" / "clip_x4.mkv"  # --save-sr: REPORT/sr/<method>/<upscale's own file name>


def record_measured(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[np.ndarray]]:
    """Every frame eval measures, by method (the 8-bit values the metrics see)."""
    seen: dict[str, list[np.ndarray]] = {}
    real = TemporalMeter.add

    def add(self: TemporalMeter, lq: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        for name, out in outputs.items():
            seen.setdefault(name, []).append(to_u8(out).copy())
            seen.setdefault(f"LQ seen by {name}", []).append(lq.copy())
        real(self, lq, outputs)

    monkeypatch.setattr(TemporalMeter, "add", add)
    return seen


def decoded(path: Path, fmt: str | None = None) -> list[np.ndarray]:
    return [f.to_ndarray(format=fmt) if fmt else f.to_ndarray() for f in frames(path)]


@pytest.mark.parametrize(("pix_fmt", "color", "options"), [
    ("yuv420p", {"color_range": 2}, []),  # 8-bit, full ("JPEG") range: the range decides the RGB values
    ("yuv420p10le", {}, ["--tile", "16", "--tile-overlap", "4", "--noise-scale", "0.3", "--temporal-smoothing",
                         "0.5", "--seed", "3", "--color-fix", "none"]),  # 10-bit, every engine option changed
], ids=["8-bit-full-range", "10-bit-options"])
def test_eval_measures_the_frames_upscale_writes(tmp_path: Path, model_file: Path,  # noqa: F811
                                                  capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                  pix_fmt: str, color: dict[str, int], options: list[str]) -> None:
    clip = make_clip(tmp_path / "clip.mkv", size=(32, 32), n=4, pix_fmt=pix_fmt, color=color, audio=False,
                     subtitles=False)
    common = ["--model", str(model_file), "--device", "cpu", "--backend", "torch", *options]
    lossless = tmp_path / "lossless.mkv"  # upscale's frames, exactly: 8-bit RGB, lossless codec
    code, _, err = run_cli(["upscale", str(clip), "-o", str(lossless), "--codec", "ffv1", "--pix-fmt", "bgr0",
                            *common], capsys)
    assert code == 0, err
    code, _, err = run_cli(["upscale", str(clip), "-o", f"{tmp_path / 'up'}/", *common], capsys)
    assert code == 0, err

    measured = record_measured(monkeypatch)
    report = tmp_path / "report"
    code, _, err = run_cli(["eval", "--lq", str(clip), "-o", str(report), "--save-sr", *common], capsys)
    assert code == 0, err
    want = decoded(lossless, "rgb24")
    assert len(measured[LABEL]) == len(want) == 4
    for got, frame in zip(measured[LABEL], want, strict=True):
        assert np.array_equal(got, frame)
    # bicubic (and GT) frames come from the pipeline's reader too: the LQ frames the upscaler got
    for a, b in zip(measured[f"LQ seen by {LABEL}"], measured["LQ seen by bicubic"], strict=True):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    steps_of_255 = np.abs(a * 255 - np.round(a * 255)).max()
    assert steps_of_255 > 0.01 if "10" in pix_fmt else steps_of_255 < 1e-3  # 10-bit input read with >8 bits
    # --save-sr: the video upscale writes by default (same name, codec, pixel format and frames)
    saved = decoded(report / SAVED)
    assert [a.shape for a in saved] == [a.shape for a in decoded(tmp_path / "up" / "clip_x4.mkv")]
    assert all(np.array_equal(a, b) for a, b in zip(saved, decoded(tmp_path / "up" / "clip_x4.mkv"), strict=True))
    assert {p.name for p in report.iterdir()} == {"sr", "temporal.json", "temporal.md", "report.html"}  # no temporary
    page = (report / "report.html").read_text()  # frames 0, 1, 2 of 4, each beside the frame after it
    assert page.count('<section class="cmp"') == 3 and f"{LABEL} · frame 3" in page
    data = json.loads((report / "temporal.json").read_text())
    run = data["runs"][LABEL]
    assert data["frames"] == 4 and run["video"] == str(report / SAVED)
    assert run["backend"] == "torch" and run["steps"] == 1
    if options:  # every option reached the run
        assert (run["tile"], run["noise_scale"], run["temporal_smoothing"], run["seed"], run["color_fix"]) == \
            (16, 0.3, 0.5, 3, "none")


def test_teacher_precision_is_resolved_for_its_steps(tmp_path: Path, model_file: Path,  # noqa: F811
                                                     capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tadsr_cli.pipeline import settings

    monkeypatch.setattr(settings, "cpu_has_fast_bf16", lambda: True)  # `auto` -> bf16, for one step only
    clip = make_clip(tmp_path / "clip.mkv", size=(16, 16), n=2, audio=False, subtitles=False)
    code, _, err = run_cli(["eval", "--lq", str(clip), "-o", str(tmp_path / "r"), "--model", str(model_file),
                            "--device", "cpu", "--backend", "torch", "--steps", "1", "--steps", "15",
                            "--temporal-smoothing", "0"], capsys)
    assert code == 0, err
    runs = json.loads((tmp_path / "r" / "temporal.json").read_text())["runs"]
    assert runs[LABEL]["precision"] == "bf16" and runs["tiny (15 steps)"]["precision"] == "fp32"


@pytest.mark.parametrize(("extra", "named"), [
    (["--sr", "x=somewhere", "--no-niqe", "--figure-images", "2"], "--sr, --no-niqe, --figure-images: "),
    (["--no-niqe"], "--no-niqe: "),
    (["--no-model", "--save-sr"], "--save-sr: "),
    (["--gt", "."], "--gt .: "),
])
def test_options_that_cannot_apply_to_a_video_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           extra: list[str], named: str) -> None:
    clip = make_clip(tmp_path / "clip.mkv", size=(16, 16), n=2, audio=False, subtitles=False)
    code, out, err = run_cli(["eval", "--lq", str(clip), "-o", str(tmp_path / "r"), *extra], capsys)
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith(f"error: {named}"), err
    assert not (tmp_path / "r").exists()  # refused before anything is written
