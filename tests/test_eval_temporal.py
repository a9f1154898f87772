"""Temporal stability measure (eval.temporal): warping error along optical flow, per-frame PSNR, reports."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tadsr_cli.base.errors import InputError
from tadsr_cli.eval.temporal import (
    REFERENCE,
    FlowEstimator,
    evaluate_video,
    measure_temporal,
    warp,
    warp_error,
    write_temporal_report,
)
from tadsr_cli.pipeline.video_demux import read_frames

SIZE = 96  # HR side; LQ is SIZE // 4


def _texture(seed: int = 0, side: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.random((side // 8, side // 8, 3)).astype(np.float32)
    return (cv2.resize(noise, (side, side), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def pan(n: int, step: int = 2) -> list[np.ndarray]:
    """HR frames of a camera moving `step` px right per frame over a smooth texture."""
    tex = _texture()
    return [tex[40:40 + SIZE, 20 + i * step:20 + i * step + SIZE].copy() for i in range(n)]


def lq_of(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.resize(f, (SIZE // 4, SIZE // 4), interpolation=cv2.INTER_AREA) for f in frames]


def steady(lq01: np.ndarray) -> np.ndarray:
    h, w = lq01.shape[:2]
    return np.clip(cv2.resize(lq01, (w * 4, h * 4), interpolation=cv2.INTER_LINEAR), 0, 1)


class Flickery:
    """Steady upscale plus fresh noise every frame: what a per-frame random prior does to video."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(1)

    def __call__(self, lq01: np.ndarray) -> np.ndarray:
        out = steady(lq01)
        return np.clip(out + self.rng.normal(0, 0.04, out.shape).astype(np.float32), 0, 1)


def test_warp_follows_the_flow() -> None:
    img = _texture(2)[:64, :64]
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0] = 3.0  # every pixel comes from 3 px to its right
    out = warp(img, flow)
    assert np.array_equal(out[:, :-3], img[:, 3:])


def test_flow_recovers_a_pan_and_warp_error_is_small_on_it() -> None:
    a, b = pan(2, step=2)
    flow, valid = FlowEstimator().backward(a, b)
    inner = flow[16:-16, 16:-16]
    assert abs(float(np.median(inner[..., 0])) - 2.0) < 0.3  # b[x] = a[x + 2] and abs(float(np.median(inner[..., 1]))) < 0.3
    assert valid[16:-16, 16:-16].mean() > 0.9
    still = warp_error(a, a, np.zeros_like(flow), np.ones_like(valid))
    assert still == 0.0
    moved = warp_error(a, b, flow, valid)
    unaligned = warp_error(a, b, np.zeros_like(flow), np.ones_like(valid))
    assert moved < 0.3 * unaligned


def test_flicker_ranks_noisy_above_steady_and_bicubic() -> None:
    gt = pan(6)
    rep = measure_temporal(lq_of(gt), {"steady": steady, "flickery": Flickery()}, gt_frames=gt)
    s = rep.summary()
    assert rep.frames == 6 and rep.flow_source == "gt"
    for name in ("bicubic", "steady", "flickery", REFERENCE):
        assert len(rep.methods[name].warp_error) == 5
    assert s["flickery"]["warp_error"] > 2 * s["steady"]["warp_error"]
    assert s["flickery"]["warp_error"] > 2 * s["bicubic"]["warp_error"]
    assert s[REFERENCE]["warp_error"] < s["flickery"]["warp_error"]
    assert len(rep.methods["steady"].psnr_y) == 6 and s["steady"]["psnr_y"] > s["flickery"]["psnr_y"]
    assert not rep.methods[REFERENCE].psnr_y  # the GT is not scored against itself


def test_without_gt_flow_comes_from_bicubic_and_no_psnr() -> None:
    rep = measure_temporal(lq_of(pan(4)), {"flickery": Flickery()})
    assert rep.flow_source == "bicubic" and rep.frames == 4
    assert rep.summary()["flickery"]["psnr_y"] is None
    assert rep.summary()[REFERENCE]["warp_error"] == rep.summary()["bicubic"]["warp_error"]
    with pytest.raises(InputError, match="reserved"):
        measure_temporal(lq_of(pan(2)), {"bicubic": steady})
    with pytest.raises(InputError, match="no frames"):
        measure_temporal([], {})


def _write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264rgb", rate=24)
        v.width, v.height, v.pix_fmt = w, h, "rgb24"
        v.codec_context.time_base = Fraction(1, 24)
        v.codec_context.options = {"qp": "0", "preset": "ultrafast"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    return path


def test_video_files_through_the_pipeline_reader_and_report(tmp_path: Path) -> None:
    gt = pan(5)
    lq_path = _write_clip(tmp_path / "lq.mkv", lq_of(gt))
    gt_path = _write_clip(tmp_path / "gt.mkv", gt)
    seen: list[tuple[int, int | None]] = []
    rep = measure_temporal(read_frames(lq_path), {"steady": steady}, read_frames(gt_path),
                           progress=lambda d, t: seen.append((d, t)), total=5)
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    # lossless clips: the PSNR equals the in-memory one
    direct = measure_temporal(lq_of(gt), {"steady": steady}, gt_frames=gt)
    assert np.allclose(rep.methods["steady"].psnr_y, direct.methods["steady"].psnr_y)
    paths = write_temporal_report(rep, tmp_path / "report")
    data = json.loads(paths["json"].read_text())
    assert data["frames"] == 5 and data["flow_source"] == "gt"
    assert len(data["per_frame"]["steady"]["warp_error"]) == 4
    assert "| steady |" in paths["markdown"].read_text()
    short = evaluate_video(lq_path, None, [], max_frames=3)  # no model: bicubic alone, first 3 frames
    assert short.frames == 3 and set(short.methods) == {REFERENCE, "bicubic"}
    with pytest.raises(InputError):
        evaluate_video(tmp_path / "report" / "temporal.md", None, [])


def test_eval_cli_on_a_video_scores_the_video_default_beside_bicubic(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tadsr_cli.cli import app

    gt = pan(4)
    lq_path = _write_clip(tmp_path / "lq.mkv", lq_of(gt))
    gt_path = _write_clip(tmp_path / "gt.mkv", gt)
    res = CliRunner().invoke(app, ["eval", "--lq", str(lq_path), "--gt", str(gt_path), "-o", str(tmp_path / "r"),
                                   "--device", "cpu", "--limit", "3"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r" / "temporal.json").read_text())
    assert data["frames"] == 3 and set(data["summary"]) == {REFERENCE, "bicubic", "tadsr-tiny-x4-video (1 step)"}
    row = data["summary"]["tadsr-tiny-x4-video (1 step)"]
    assert row["psnr_y"] > 15 and row["warp_error"] > 0 and row["st_lpips"] is not None and len(data["per_frame"]["bicubic"]["psnr_y"]) == 3
    assert "warping error" in res.output
