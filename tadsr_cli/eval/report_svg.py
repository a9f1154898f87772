"""Inline SVG charts for `report.html`: quality vs time (log time axis) and per-frame series.

Plain SVG text, no script and no external resource, so the page works from a file. Axis ticks come from
`figure.log_ticks` / `figure.nice_ticks`, the same rules as figure.png.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

from tadsr_cli.eval.figure import PALETTE, PlotPoint, fmt_value, log_ticks, nice_ticks

FONT_PX = 11
CHAR_PX = 7.0  # upper bound of a character's width at FONT_PX in a sans-serif font: keeps tick labels apart
MAX_POINTS = 1500  # longer series are reduced to per-bucket min and max (spikes stay visible)


def hex_color(i: int) -> str:
    r, g, b = PALETTE[i % len(PALETTE)]
    return f"#{r:02x}{g:02x}{b:02x}"


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "", extra: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}{extra}>{escape(text)}</text>'


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(title)}" font-size="{FONT_PX}">' + "".join(body) + "</svg>")


def scatter_svg(points: Sequence[PlotPoint], metric: str, lower_is_better: bool, width: int = 520,
                height: int = 340) -> str:
    """Mean quality (y) against seconds per image (x, log scale), one labelled dot per timed method."""
    left, right, top, bottom = 62, 20, 34, 46
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    better = "lower is better" if lower_is_better else "higher is better"
    title = f"{metric} vs time per image ({better})"
    body = [_text(8, 20, title, cls="plot-title"),
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" class="plot-frame"/>',
            _text((x0 + x1) / 2, height - 8, "time per image (log scale)", "middle", "plot-axis")]
    pts = [(i, p) for i, p in enumerate(points)
           if p.quality is not None and math.isfinite(p.quality) and p.seconds is not None and p.seconds > 0]
    if not pts:
        body.append(_text((x0 + x1) / 2, (y0 + y1) / 2, "no timed methods", "middle", "plot-axis"))
        return _frame(width, height, title, body)
    lx = [math.log10(float(p.seconds)) for _, p in pts]  # type: ignore[arg-type]
    qv = [float(p.quality) for _, p in pts]  # type: ignore[arg-type]
    lo, hi = min(lx), max(lx)
    if hi - lo < 0.5:
        mid = (lo + hi) / 2
        lo, hi = mid - 0.25, mid + 0.25
    pad = (hi - lo) * 0.1
    lo, hi = lo - pad, hi + pad
    q_lo, q_hi = _padded(qv)

    def px(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * (x1 - x0)

    def py(q: float) -> float:
        return y1 - (q - q_lo) / (q_hi - q_lo) * (y1 - y0)

    for t in log_ticks(lo, hi, px, lambda s: CHAR_PX * len(s), bounds=(2, width - 2)):
        x = px(t.value)
        body.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1 + 4}" class="plot-grid"/>')
        body.append(_text((t.left + t.right) / 2, y1 + 17, t.label, "middle", "plot-tick"))
    body += _y_ticks(q_lo, q_hi, py, x0, x1)
    for (i, p), v, q in zip(pts, lx, qv, strict=True):
        x, y = px(v), py(q)
        tip = f"{p.name}: {fmt_value(q)} at {p.seconds:.3g} s per image"
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{hex_color(i)}"><title>{escape(tip)}</title>'
                    "</circle>")
        anchor, dx = ("end", -8) if x > (x0 + x1) / 2 else ("start", 8)
        body.append(_text(x + dx, y - 6, p.name, anchor, extra=f' fill="{hex_color(i)}"'))
    return _frame(width, height, title, body)


def _padded(values: Sequence[float], frac: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        d = max(abs(lo) * 0.05, 1e-3)
        lo, hi = lo - d, hi + d
    pad = (hi - lo) * frac
    return lo - pad, hi + pad


def _y_ticks(lo: float, hi: float, py: Callable[[float], float], x0: float, x1: float) -> list[str]:
    out = []
    for t in nice_ticks(lo, hi, 5):
        y = py(t)
        out.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" class="plot-grid"/>')
        out.append(_text(x0 - 7, y + 4, fmt_value(t), "end", "plot-tick"))
    return out


def _reduce(values: Sequence[float | None]) -> list[tuple[int, float | None]]:
    """(index, value) pairs; series longer than MAX_POINTS become each bucket's min and max, in index order."""
    if len(values) <= MAX_POINTS:
        return list(enumerate(values))
    out: list[tuple[int, float | None]] = []
    size = math.ceil(len(values) / (MAX_POINTS // 2))
    for start in range(0, len(values), size):
        part = [(i, v) for i, v in enumerate(values[start:start + size], start) if v is not None]
        if not part:
            out.append((start, None))
            continue
        lo, hi = min(part, key=lambda t: t[1]), max(part, key=lambda t: t[1])
        out += [lo] if lo == hi else sorted([lo, hi])
    return out


def series_svg(series: Mapping[str, Sequence[float | None]], title: str, y_label: str, x_label: str,
               width: int = 680, height: int = 300, dashed: Sequence[str] = (),
               colors: Mapping[str, str] | None = None) -> str:
    """One line per series against its index (frame or frame pair); None breaks the line. `dashed` series are
    grey and dashed (a reference); `colors` fixes a series' colour (the same method alike in every plot)."""
    left, right, top, bottom = 62, 150, 34, 46
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    body = [_text(8, 20, title, cls="plot-title"),
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" class="plot-frame"/>',
            _text((x0 + x1) / 2, height - 8, x_label, "middle", "plot-axis"),
            _text(14, (y0 + y1) / 2, y_label, "middle", "plot-axis",
                  extra=f' transform="rotate(-90 14 {(y0 + y1) / 2:.1f})"')]
    finite = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    n = max((len(s) for s in series.values()), default=0)
    if not finite:
        body.append(_text((x0 + x1) / 2, (y0 + y1) / 2, "no values", "middle", "plot-axis"))
        return _frame(width, height, title, body)
    q_lo, q_hi = _padded(finite)
    span = max(1, n - 1)

    def px(i: float) -> float:
        return x0 + i / span * (x1 - x0)

    def py(q: float) -> float:
        return y1 - (q - q_lo) / (q_hi - q_lo) * (y1 - y0)

    for t in nice_ticks(0, span, 6):
        if t != int(t):
            continue  # frames are whole numbers
        body.append(f'<line x1="{px(t):.1f}" y1="{y0}" x2="{px(t):.1f}" y2="{y1 + 4}" class="plot-grid"/>')
        body.append(_text(px(t), y1 + 17, str(int(t)), "middle", "plot-tick"))
    body += _y_ticks(q_lo, q_hi, py, x0, x1)
    for k, (name, values) in enumerate(series.items()):
        color = "#777777" if name in dashed else (colors or {}).get(name, hex_color(k))
        dash = ' stroke-dasharray="5 4"' if name in dashed else ""
        clean = [v if v is not None and math.isfinite(v) else None for v in values]
        path, pen = [], False
        for i, v in _reduce(clean):
            if v is None:
                pen = False
                continue
            path.append(f"{'L' if pen else 'M'}{px(i):.1f} {py(v):.1f}")
            pen = True
        if len(path) == 1:  # a single value: a dot, not an invisible line
            x, y = path[0][1:].split()
            body.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>')
        elif path:
            body.append(f'<path d="{"".join(path)}" fill="none" stroke="{color}" stroke-width="1.5"{dash}>'
                        f"<title>{escape(name)}</title></path>")
        ly = y0 + 12 + 16 * k
        body.append(f'<line x1="{x1 + 10}" y1="{ly - 4}" x2="{x1 + 28}" y2="{ly - 4}" stroke="{color}" '
                    f'stroke-width="2"{dash}/>')
        body.append(_text(x1 + 33, ly, name if len(name) <= 16 else name[:15] + "…", cls="plot-legend"))
    return _frame(width, height, title, body)
