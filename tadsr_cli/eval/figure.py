"""The report figure, drawn with OpenCV only (no matplotlib): labelled side-by-side crops and quality-vs-time plots.

All canvases are RGB uint8; `cv2` drawing calls write the given tuples straight into the channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (200, 200, 200)
DARK = (90, 90, 90)
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def put_text_fit(img: np.ndarray, text: str, x: int, y: int, width: int, color_: tuple[int, int, int] = BLACK,
                 scale: float = 0.45, min_scale: float = 0.32, thickness: int = 1) -> None:
    """Draw `text` with its baseline at (x, y), shrinking (then truncating) it to fit `width` pixels."""
    s = scale
    while s > min_scale and cv2.getTextSize(text, FONT, s, thickness)[0][0] > width:
        s -= 0.02
    while len(text) > 3 and cv2.getTextSize(text, FONT, s, thickness)[0][0] > width:
        text = text[:-4] + "..."
    cv2.putText(img, text, (x, y), FONT, s, color_, thickness, cv2.LINE_AA)


def _fit_tile(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)


@dataclass
class CropRow:
    label: str
    tiles: list[np.ndarray | None]  # one per column; None = not available
    captions: list[str]


def crop_grid(columns: Sequence[str], rows: Sequence[CropRow], tile: int = 160, gap: int = 4) -> np.ndarray:
    """A grid of crops: a header with the column names, one row per image (label on the first tile)."""
    header, caption_h = 26, 18
    n = len(columns)
    width = n * tile + (n + 1) * gap
    height = header + len(rows) * (tile + caption_h + gap) + gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for j, name in enumerate(columns):
        put_text_fit(canvas, name, gap + j * (tile + gap) + 2, header - 8, tile - 4)
    for i, row in enumerate(rows):
        y = header + i * (tile + caption_h + gap)
        for j in range(n):
            x = gap + j * (tile + gap)
            img = row.tiles[j] if j < len(row.tiles) else None
            if img is None:
                canvas[y:y + tile, x:x + tile] = 235
                put_text_fit(canvas, "n/a", x + tile // 2 - 12, y + tile // 2, tile - 8, DARK)
            else:
                canvas[y:y + tile, x:x + tile] = _fit_tile(img, tile)
            cap = row.captions[j] if j < len(row.captions) else ""
            if cap:
                put_text_fit(canvas, cap, x + 2, y + tile + caption_h - 5, tile - 4, DARK, scale=0.4)
        # the image name, white on a dark band over the first tile
        band = canvas[y:y + 18, gap:gap + tile]
        band[:] = (band.astype(np.float32) * 0.35).astype(np.uint8)
        put_text_fit(canvas, row.label, gap + 3, y + 13, tile - 6, WHITE, scale=0.42)
    return canvas


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks


def fmt_value(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    return f"{v:.1e}"


def seconds_label(v: float) -> str:
    """A compact time label for a log axis (20ms, 0.5s, 2s, 300s): short labels leave room for more ticks."""
    if v < 0.1:
        return f"{v * 1e3:.3g}ms"
    return f"{v:.3g}s" if v < 1000 else f"{v:.0f}s"


@dataclass
class Tick:
    value: float  # log10 of the value
    label: str
    left: float  # x of the label's left edge, pixels
    right: float


# Per-decade mantissas, tried as tick sets; then one tick every 2, 3, ... decades for very wide ranges.
_MANTISSAS: tuple[tuple[int, ...], ...] = ((1, 2, 5), (1,), (1, 3), (1, 2, 3, 4, 5, 6, 7, 8, 9))
_DECADE_STEPS = (2, 3, 5, 10)


def log_ticks(lo: float, hi: float, to_px: Callable[[float], float], text_width: Callable[[str], float],
              bounds: tuple[float, float], gap: float = 8.0, max_ticks: int = 8,
              label: Callable[[float], str] = seconds_label) -> list[Tick]:
    """Ticks for a log axis over [lo, hi] (log10 units) whose labels, centred on their tick and kept inside
    `bounds` (pixels), are at least `gap` pixels apart: the candidate set with the most ticks (at most
    `max_ticks`) that fits, 1-2-5 preferred on ties. Labels overlapped when every 1-2-5 tick was printed."""
    candidates = [(1, m) for m in _MANTISSAS] + [(step, (1,)) for step in _DECADE_STEPS]
    best: list[Tick] = []
    for step, mantissas in candidates:
        ticks = []
        for e in range(math.floor(lo), math.ceil(hi) + 1):
            if e % step:
                continue
            for m in mantissas:
                v = e + math.log10(m)
                if lo <= v <= hi:
                    text = label(m * 10.0**e)
                    w = text_width(text)
                    left = min(max(to_px(v) - w / 2, bounds[0]), bounds[1] - w)
                    ticks.append(Tick(v, text, left, left + w))
        fits = all(b.left - a.right >= gap for a, b in zip(ticks, ticks[1:], strict=False))
        if fits and len(best) < len(ticks) <= max_ticks:
            best = ticks
    return best


@dataclass
class PlotPoint:
    name: str
    quality: float | None
    seconds: float | None  # per image; None = not timed (ready outputs)


def bar_chart(points: Sequence[PlotPoint], metric: str, lower_is_better: bool, width: int = 420,
              row_h: int = 26) -> np.ndarray:
    """Horizontal bars of the mean quality per method, each labelled with its value and time per image."""
    pts = [p for p in points if p.quality is not None]
    top, left, right = 34, 150, 16
    height = top + max(1, len(pts)) * row_h + 12
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    arrow = "lower is better" if lower_is_better else "higher is better"
    put_text_fit(canvas, f"{metric} ({arrow})", 8, 20, width - 16, BLACK, scale=0.5)
    if not pts:
        put_text_fit(canvas, "no values", 8, top + 18, width - 16, DARK)
        return canvas
    vals = [float(p.quality) for p in pts]  # type: ignore[arg-type]
    vmax = max(max(vals), 1e-12)
    vmin = min(0.0, min(vals))
    span = (vmax - vmin) or 1.0
    bar_w = width - left - right
    for i, (p, v) in enumerate(zip(pts, vals, strict=True)):
        y = top + i * row_h
        put_text_fit(canvas, p.name, 6, y + row_h - 10, left - 10, BLACK, scale=0.42)
        x0 = left + int((0 - vmin) / span * bar_w)
        x1 = left + int((v - vmin) / span * bar_w)
        cv2.rectangle(canvas, (min(x0, x1), y + 4), (max(x0, x1, min(x0, x1) + 1), y + row_h - 6),
                      color(points.index(p)), -1)
        t = f"{p.seconds:.3g} s/img" if p.seconds is not None else "not timed"
        label = f"{fmt_value(v)}  ({t})"
        tw = cv2.getTextSize(label, FONT, 0.38, 1)[0][0]
        tx = x1 + 4 if x1 + 4 + tw < width - 2 else max(left + 2, x1 - tw - 4)
        tc = BLACK if tx > x1 else WHITE
        cv2.putText(canvas, label, (tx, y + row_h - 11), FONT, 0.38, tc, 1, cv2.LINE_AA)
    return canvas


TICK_SCALE = 0.36


def time_ticks(lo: float, hi: float, x0: int, x1: int, width: int) -> list[Tick]:
    """The scatter plot's time-axis ticks (log10 seconds from `lo` at x0 to `hi` at x1), measured in its font."""
    def to_px(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * (x1 - x0)

    def text_width(text: str) -> float:
        return cv2.getTextSize(text, FONT, TICK_SCALE, 1)[0][0]

    return log_ticks(lo, hi, to_px, text_width, bounds=(2, width - 2))


def scatter_plot(points: Sequence[PlotPoint], metric: str, lower_is_better: bool, width: int = 420,
                 height: int = 300) -> np.ndarray:
    """Quality (y) against seconds per image (x, log scale) for the timed methods."""
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 58, 16, 30, 42
    put_text_fit(canvas, f"{metric} vs time per image", 8, 20, width - 16, BLACK, scale=0.5)
    pts = [p for p in points if p.quality is not None and p.seconds is not None and p.seconds > 0]
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    cv2.rectangle(canvas, (x0, y0), (x1, y1), GREY, 1)
    put_text_fit(canvas, "time per image (log scale)", x0 + (x1 - x0) // 2 - 80, height - 8, 200, DARK, scale=0.42)
    if not pts:
        put_text_fit(canvas, "no timed methods", x0 + 10, (y0 + y1) // 2, x1 - x0 - 20, DARK)
        return canvas
    lx = [math.log10(float(p.seconds)) for p in pts]  # type: ignore[arg-type]
    qv = [float(p.quality) for p in pts]  # type: ignore[arg-type]
    lx_lo, lx_hi = min(lx), max(lx)
    if lx_hi - lx_lo < 0.5:
        mid = (lx_hi + lx_lo) / 2
        lx_lo, lx_hi = mid - 0.25, mid + 0.25
    pad = (lx_hi - lx_lo) * 0.1
    lx_lo, lx_hi = lx_lo - pad, lx_hi + pad
    q_lo, q_hi = min(qv), max(qv)
    if q_hi - q_lo < 1e-9:
        q_lo, q_hi = q_lo - max(abs(q_lo) * 0.05, 1e-3), q_hi + max(abs(q_hi) * 0.05, 1e-3)
    qpad = (q_hi - q_lo) * 0.12
    q_lo, q_hi = q_lo - qpad, q_hi + qpad

    def px(lxv: float) -> int:
        return int(round(x0 + (lxv - lx_lo) / (lx_hi - lx_lo) * (x1 - x0)))

    def py(q: float) -> int:
        return int(round(y1 - (q - q_lo) / (q_hi - q_lo) * (y1 - y0)))

    for tick in time_ticks(lx_lo, lx_hi, x0, x1, width):
        x = px(tick.value)
        cv2.line(canvas, (x, y0), (x, y1), (235, 235, 235), 1)
        cv2.line(canvas, (x, y1), (x, y1 + 4), DARK, 1)
        cv2.putText(canvas, tick.label, (int(round(tick.left)), y1 + 16), FONT, TICK_SCALE, DARK, 1, cv2.LINE_AA)
    for t in nice_ticks(q_lo, q_hi, 5):
        y = py(t)
        cv2.line(canvas, (x0, y), (x1, y), (235, 235, 235), 1)
        cv2.line(canvas, (x0 - 4, y), (x0, y), DARK, 1)
        put_text_fit(canvas, fmt_value(t), 4, y + 4, left - 10, DARK, scale=0.36)
    for p, lxv, q in zip(pts, lx, qv, strict=True):
        c = color(points.index(p))
        x, y = px(lxv), py(q)
        cv2.circle(canvas, (x, y), 5, c, -1, cv2.LINE_AA)
        tw = cv2.getTextSize(p.name, FONT, 0.38, 1)[0][0]
        tx = x + 8 if x + 8 + tw < width - 2 else x - 8 - tw
        cv2.putText(canvas, p.name, (max(2, tx), y - 6), FONT, 0.38, c, 1, cv2.LINE_AA)
    return canvas


def stack(parts: Sequence[np.ndarray], axis: int, gap: int = 8) -> np.ndarray:
    """Concatenate canvases along `axis` (0 = vertical, 1 = horizontal), padding with white."""
    parts = [p for p in parts if p is not None and p.size]
    if not parts:
        return np.full((10, 10, 3), 255, dtype=np.uint8)
    other = 1 - axis
    size = max(p.shape[other] for p in parts)
    padded = []
    for i, p in enumerate(parts):
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (0, size - p.shape[other])
        padded.append(np.pad(p, pad, constant_values=255))
        if i < len(parts) - 1:
            shape = [0, 0, 3]
            shape[axis], shape[other] = gap, size
            padded.append(np.full(shape, 255, dtype=np.uint8))
    return np.concatenate(padded, axis=axis)
