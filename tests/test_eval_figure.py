"""The eval figure's time axis (eval.figure): log-scale tick labels never overlap, whatever the range of times."""

from __future__ import annotations

import math

import cv2
import pytest

from tadsr_cli.eval import figure as fig


def drawn_tick_labels(points: list[fig.PlotPoint], monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """(text, left, right) of every label `scatter_plot` draws on its time-axis row, read from the drawing calls."""
    calls: list[tuple[str, int, int, float]] = []
    real = cv2.putText

    def spy(img, text, org, font, scale, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((text, org[0], org[1], scale))
        return real(img, text, org, font, scale, *args, **kwargs)

    monkeypatch.setattr(fig.cv2, "putText", spy)
    height = 300
    fig.scatter_plot(points, "PSNR-Y", False, height=height)
    monkeypatch.undo()
    row = height - 42 + 16  # the tick labels' baseline: below the plot frame
    out = []
    for text, x, y, scale in calls:
        if y == row:
            w = cv2.getTextSize(text, fig.FONT, scale, 1)[0][0]
            out.append((text, x, x + w))
    return sorted(out, key=lambda t: t[1])


@pytest.mark.parametrize(("fast", "slow"), [(1e-3, 30.0), (2e-4, 2000.0), (0.01, 0.3), (0.3, 0.45), (5e-5, 1e-4),
                                            (0.002, 5.0), (1.0, 1.2), (0.07, 40.0)])
def test_time_axis_labels_never_overlap(fast: float, slow: float, monkeypatch: pytest.MonkeyPatch) -> None:
    points = [fig.PlotPoint("fast", 25.0, fast), fig.PlotPoint("mid", 26.0, math.sqrt(fast * slow)),
              fig.PlotPoint("slow", 27.0, slow)]
    labels = drawn_tick_labels(points, monkeypatch)
    assert len(labels) >= 2, labels  # an axis with one label (or none) says nothing about the scale
    for (a, _, a_right), (b, b_left, _) in zip(labels, labels[1:], strict=False):
        assert b_left - a_right >= 6, f"{a!r} and {b!r} overlap or touch: {labels}"
    assert all(0 <= left and right <= 420 for _, left, right in labels)  # inside the canvas
    assert all(len(text) <= 6 for text, _, _ in labels)  # compact: 20ms, 0.5s, 300s


def test_log_ticks_prefer_1_2_5_and_thin_out_when_crowded() -> None:
    def ticks(lo: float, hi: float, width: float) -> list[str]:
        to_px = lambda v: (v - lo) / (hi - lo) * width  # noqa: E731
        return [t.label for t in fig.log_ticks(lo, hi, to_px, lambda s: 7.0 * len(s), bounds=(0, width))]

    assert ticks(-2, 0, 600) == ["10ms", "20ms", "50ms", "0.1s", "0.2s", "0.5s", "1s"]
    assert ticks(-3, 2, 200) == ["10ms", "1s", "100s"]  # one decade in two when a label per decade does not fit
    assert ticks(math.log10(0.3), math.log10(0.45), 300) == ["0.3s", "0.4s"]  # a narrow range still gets two
    assert fig.seconds_label(0.05) == "50ms" and fig.seconds_label(2.0) == "2s" and fig.seconds_label(3000) == "3000s"
