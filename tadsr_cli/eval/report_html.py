"""`report.html`: the eval report as one self-contained page (works from a file, fetches nothing).

It renders what the other report files hold (the dict of `report.json` or `temporal.json`) plus display crops
(`display.DisplaySet`, embedded as data: URIs): per image a before/after comparison over any two of LQ, each method
and GT with a synchronised zoom; sortable metric tables; the quality-vs-time plot (inline SVG); for a video, the
per-frame PSNR-Y / ST-LPIPS and flicker plots and a few frames (each with the next one, to see flicker).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.eval.display import DisplaySet
from tadsr_cli.eval.figure import PlotPoint
from tadsr_cli.eval.report_page import page
from tadsr_cli.eval.report_svg import hex_color, scatter_svg, series_svg

VIEW_PX = 480  # comparisons of small crops are shown enlarged by a whole factor up to about this size
DIGITS = {"psnr_y": 2, "niqe": 3, "warp_error": 3}


# ---- small helpers ------------------------------------------------------------------------------------------------
def _num(v: Any, key: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{DIGITS.get(key, 4)}f}"


def _td(v: Any, key: str = "", text: str | None = None) -> str:
    """A numeric cell: shown rounded, sorted by its exact value (`data-v`; empty = missing, sorted last)."""
    raw = "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))
    return f'<td data-v="{raw}">{escape(text if text is not None else _num(v, key))}</td>'


def _table(table_id: str, head: Sequence[tuple[str, bool]], rows: Sequence[str]) -> str:
    """A sortable table; `head` = (label, numeric) per column."""
    ths = "".join(f'<th data-type="num" scope="col">{escape(label)}</th>' if num
                  else f'<th data-type="text" scope="col" class="text">{escape(label)}</th>' for label, num in head)
    return (f'<table class="sortable" id="{table_id}"><thead><tr>{ths}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _json_script(obj: Any) -> str:
    """JSON inside <script>: `</` escaped so no text can close the element."""
    return json.dumps(obj, ensure_ascii=False).replace("</", "<\\/")


def _seconds(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


# ---- the comparison widget ----------------------------------------------------------------------------------------
def comparison(index: int, ds: DisplaySet, captions: Mapping[str, str] | None = None,
               default_b: str | None = None) -> str:
    """One image's widget: versions LQ (nearest-upscaled on screen), each method, GT; A/B selects, a slider that
    reveals B over A, and a zoom on both sides around the clicked point. `captions`: method -> text for its option."""
    captions = captions or {}
    versions = [{"key": "lq", "label": "LQ", "caption": f"LQ (nearest x{ds.scale})", "src": ds.lq.data_uri()}]
    for i, (name, img) in enumerate(ds.methods.items()):
        cap = captions.get(name)
        versions.append({"key": f"m{i}", "label": name, "caption": f"{name} — {cap}" if cap else name,
                         "src": img.data_uri()})
    if ds.gt is not None:
        versions.append({"key": "gt", "label": "GT", "caption": "GT (ground truth)", "src": ds.gt.data_uri()})
    keys = {v["label"]: v["key"] for v in versions}
    b = keys.get(default_b or "", versions[1]["key"] if len(versions) > 1 else "lq")
    y, x, h, w = ds.region
    k = max(1, VIEW_PX // max(h, w))
    where = f"{w}x{h} px region at ({x}, {y})"
    if ds.full_size:
        where += f" of the {ds.full_size[1]}x{ds.full_size[0]} output"
    shown = f"shown at {k}x" if k > 1 else "shown at 1:1"
    links = " ".join(f'<a href="{escape(quote(path))}">{escape(name)}</a>' for name, path in ds.links.items())
    return (
        f'<section class="cmp" id="cmp-{index}" data-name="{escape(ds.name)}" data-a="lq" data-b="{b}">'
        f"<h3>{escape(ds.name)}</h3>"
        f'<p class="cmp-caption">{escape(where)}, {shown}; A left of the divider, B right of it; click the image to '
        "zoom there (both sides), click again to move the centre.</p>"
        '<div class="cmp-controls">'
        '<label>A <select class="cmp-a"></select></label>'
        '<input type="range" class="cmp-slider" min="0" max="100" step="0.5" value="50" '
        'aria-label="divider position (A left, B right)">'
        '<label>B <select class="cmp-b"></select></label>'
        '<label>zoom <select class="cmp-zoom"></select></label>'
        '<button type="button" class="cmp-reset">reset zoom</button></div>'
        f'<div class="cmp-view" style="width:{w * k}px;aspect-ratio:{w}/{h}">'
        '<div class="cmp-layer cmp-layer-a"><img alt="A" draggable="false"></div>'
        '<div class="cmp-layer cmp-layer-b"><img alt="B" draggable="false"></div>'
        '<div class="cmp-divider"></div><span class="cmp-tag cmp-tag-a"></span>'
        '<span class="cmp-tag cmp-tag-b"></span></div>'
        + (f'<p class="note">full-size outputs: {links}</p>' if links else "")
        + f'<script type="application/json" class="cmp-data">{_json_script(versions)}</script></section>'
    )


# ---- the image report ---------------------------------------------------------------------------------------------
def _shown_metrics(report: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, m) for k, m in report.get("metrics", {}).items() if m.get("available")]


def _arrow(m: Mapping[str, Any]) -> str:
    return "↑" if m.get("higher_is_better") else "↓"


def _means_table(report: Mapping[str, Any], metrics: list[tuple[str, dict[str, Any]]]) -> str:
    head = [("method", False), ("kind", False), ("images", True)]
    head += [(f"{m['label']} {_arrow(m)}", True) for _, m in metrics] + [("s / image", True), ("MP/s", True)]
    rows = []
    for method in report.get("methods", []):
        row = report.get("mean", {}).get(method["name"], {})
        cells = [f'<td class="text">{escape(method["name"])}</td>', f'<td class="text">{escape(method["kind"])}</td>',
                 _td(row.get("images"), text=str(row.get("images", 0)))]
        cells += [_td(row.get(k), k) for k, _ in metrics]
        cells += [_td(row.get("seconds_per_image"), text=_seconds(row.get("seconds_per_image"))),
                  _td(row.get("megapixels_per_s"), text=_seconds(row.get("megapixels_per_s")))]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _table("means", head, rows)


def _per_image_table(report: Mapping[str, Any], metrics: list[tuple[str, dict[str, Any]]]) -> str:
    head = [("image", False), ("method", False), ("size", False)] + [(m["label"], True) for _, m in metrics]
    head.append(("s", True))
    rows = []
    for r in report.get("per_image", []):
        size = f"{r['width']}x{r['height']}" + (" (cropped)" if r.get("cropped_to_gt") else "")
        cells = [f'<td class="text">{escape(r["image"])}</td>', f'<td class="text">{escape(r["method"])}</td>',
                 f'<td class="text">{escape(size)}</td>']
        cells += [_td(r.get(k), k) for k, _ in metrics]
        cells.append(_td(r.get("seconds"), text=_seconds(r.get("seconds"))))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _table("per-image", head, rows)


def _skipped(report: Mapping[str, Any]) -> str:
    un = report.get("unpaired", {})
    items = [("LQ without GT", un.get("lq_without_gt", [])), ("GT without LQ", un.get("gt_without_lq", []))]
    items += [(f"missing from {k}", v) for k, v in un.get("missing_sr", {}).items()]
    items += [(f"in {k} without an LQ image", v) for k, v in un.get("sr_without_lq", {}).items()]
    lines = [f"<li>{escape(label)} ({len(v)}): {escape(', '.join(v))}</li>" for label, v in items if v]
    limited = un.get("counts", {}).get("left_out_by_limit")
    if limited:
        lines.append(f"<li>left out by --limit: {int(limited)}</li>")
    errors = [f"<li>{escape(e['image'])} / {escape(e['method'])}: {escape(e['error'])}</li>"
              for e in report.get("errors", [])]
    out = ""
    if lines:
        out += "<h2>Skipped</h2><ul>" + "".join(lines) + "</ul>"
    if errors:
        out += "<h2>Errors</h2><ul>" + "".join(errors) + "</ul>"
    return out


def render_eval_html(report: Mapping[str, Any], displays: Sequence[DisplaySet], plot_metric: str) -> str:
    """The page for `tadsr eval` on images: `report` is `report.to_json(result)`, `displays` the runner's crops,
    `plot_metric` the metric key the plot shows (`report.plot_metric`)."""
    settings = report.get("settings", {})
    versions = report.get("versions", {})
    metrics = _shown_metrics(report)
    info = report.get("metrics", {}).get(plot_metric, {})
    label = info.get("label", plot_metric)
    means = report.get("mean", {})
    points = [PlotPoint(m["name"], means.get(m["name"], {}).get(plot_metric),
                        means.get(m["name"], {}).get("seconds_per_image")) for m in report.get("methods", [])]
    per = {(r["image"], r["method"]): r for r in report.get("per_image", [])}
    gt = f", GT {settings['gt_dir']}" if settings.get("gt_dir") else " (no ground truth)"
    parts = [
        "<h1>tadsr eval report</h1>",
        f'<p class="meta">LQ {escape(str(settings.get("lq_dir")))}{escape(gt)}; {len(report.get("images", []))} '
        f"image(s), x{escape(str(settings.get('scale')))}, PSNR/SSIM on BT.601 Y with a "
        f"{escape(str(settings.get('crop_border')))} px border crop; created {escape(str(report.get('created')))}; "
        f"tadsr {escape(str(versions.get('tadsr')))}, torch {escape(str(versions.get('torch')))}, "
        f"device {escape(str(versions.get('device')))}.</p>",
        "<h2>Mean per method</h2>", _means_table(report, metrics),
        '<p class="note">Click a column header to sort. Ready outputs (--sr) are not timed.</p>',
    ]
    unavailable = [f"{m['label']}: {m.get('reason')}" for m in report.get("metrics", {}).values()
                   if not m.get("available")]
    if unavailable:
        parts.append(f'<p class="note">Unavailable metrics: {escape("; ".join(unavailable))}.</p>')
    parts += ["<h2>Quality vs time</h2>", '<div class="plots">',
              scatter_svg(points, f"mean {label}", not info.get("higher_is_better", True)), "</div>"]
    if displays:
        parts.append("<h2>Images</h2>")
        if len(displays) < len(report.get("images", [])):
            parts.append(f'<p class="note">Comparisons for the first {len(displays)} of '
                         f"{len(report.get('images', []))} images; every image is in the table below.</p>")
        first_model = next((m["name"] for m in report.get("methods", []) if m.get("kind") == "model"), None)
        for i, ds in enumerate(displays):
            captions = {}
            for name in ds.methods:
                v = per.get((ds.name, name), {}).get(plot_metric)
                captions[name] = f"{label} {_num(v, plot_metric)}" if v is not None else ""
            parts.append(comparison(i, ds, captions, default_b=first_model))
    parts += ["<h2>Per image</h2>", _per_image_table(report, metrics), _skipped(report)]
    return page("tadsr eval report", "\n".join(parts))


# ---- the video report ---------------------------------------------------------------------------------------------
def render_video_html(temporal: Mapping[str, Any], frames: Sequence[DisplaySet] = ()) -> str:
    """The page for `tadsr eval` on a video: `temporal` is `TemporalReport.to_json()`; `frames` optional display
    sets (`display.FramePicker.sets`), each a frame with the next one."""
    per_frame: Mapping[str, Mapping[str, list[float | None]]] = temporal.get("per_frame", {})
    summary: Mapping[str, Mapping[str, float | None]] = temporal.get("summary", {})
    flow = temporal.get("flow_source", "?")
    ref_label = f"reference ({'ground truth' if flow == 'gt' else flow} frames)"

    def label(name: str) -> str:
        return ref_label if name == "reference" else name

    colors = {label(n): hex_color(i) for i, n in enumerate(n for n in per_frame if n != "reference")}

    head = [("method", False), ("PSNR-Y ↑", True), ("ST-LPIPS ↓", True), ("warping error ↓", True)]
    rows = ["<tr>" + f'<td class="text">{escape(label(name))}</td>'
            + "".join(_td(row.get(k), k) for k in ("psnr_y", "st_lpips", "warp_error")) + "</tr>"
            for name, row in summary.items()]
    parts = [
        f"<h1>Temporal stability: {int(temporal.get('frames', 0))} frame(s), x{escape(str(temporal.get('scale')))}"
        "</h1>",
        f'<p class="meta">Flicker = {escape(str(temporal.get("warp_error_definition", "warping error")))}; '
        f"the flow comes from the {escape(ref_label)}, whose own row is the floor set by motion.</p>",
        "<h2>Summary</h2>", _table("summary", head, rows), "<h2>Per frame</h2>", '<div class="plots">',
    ]
    for key, title, unit in (("psnr_y", "PSNR-Y per frame (higher is better)", "dB"),
                             ("st_lpips", "ST-LPIPS per frame (lower is better)", "ST-LPIPS")):
        series = {label(n): v[key] for n, v in per_frame.items() if any(x is not None for x in v.get(key, []))}
        if series:
            parts.append(series_svg(series, title, unit, "frame", colors=colors))
    flicker = {label(n): v.get("warp_error", []) for n, v in per_frame.items()}
    if any(x is not None for s in flicker.values() for x in s):
        parts.append(series_svg(flicker, "flicker: warping error per frame pair (lower is steadier)", "0-255",
                                "frame pair (t, t+1)", dashed=[ref_label], colors=colors))
    parts.append("</div>")
    if frames:
        parts.append("<h2>Frames</h2>")
        parts.append('<p class="note">Each frame with the one after it: compare a method at t and t+1 to see '
                     "flicker, or against LQ and GT.</p>")
        parts += [comparison(i, ds) for i, ds in enumerate(frames)]
    else:
        parts.append('<p class="note">No frames were kept for this report.</p>')
    notes = temporal.get("notes", [])
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(str(n))}</li>" for n in notes) + "</ul>")
    return page("tadsr eval: temporal stability", "\n".join(parts))


def write_html(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    with atomic_write_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_video_html(temporal: Mapping[str, Any], out_dir: Path, frames: Sequence[DisplaySet] = ()) -> Path:
    """`report.html` for a video eval, beside temporal.json / temporal.md."""
    return write_html(Path(out_dir) / "report.html", render_video_html(temporal, frames))
