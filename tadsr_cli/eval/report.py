"""Writing the evaluation report: `report.json` (machine-readable), `report.md` (tables), `figure.png` (crops + plots),
`report.html` (interactive comparisons, sortable tables; see `report_html`).

Every file is written atomically (temp file in the report folder, then renamed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import OutputError
from tadsr_cli.eval import figure as fig
from tadsr_cli.eval.metric_suite import METRIC_BY_KEY, METRICS
from tadsr_cli.eval.report_html import render_eval_html
from tadsr_cli.eval.runner import EvalResult

REPORT_VERSION = 1


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats -> None, paths -> str, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def plot_metric(result: EvalResult) -> str:
    """The quality measure the plots show: ST-LPIPS, else LPIPS, else PSNR-Y, else NIQE (first that has values)."""
    means = result.means()
    for key in ("st_lpips", "lpips", "psnr_y", "niqe"):
        if result.metric_status.get(key) is None and any(m.get(key) is not None for m in means.values()):
            return key
    return "niqe"


def to_json(result: EvalResult) -> dict[str, Any]:
    cfg = result.config
    p = result.pairing
    settings = {
        "lq_dir": str(cfg.lq_dir), "gt_dir": str(cfg.gt_dir) if cfg.gt_dir else None,
        "scale": cfg.scale, "crop_border": cfg.border, "y_channel": "BT.601 studio swing (16-235)",
        "ssim_window": "11x11 Gaussian, sigma 1.5", "niqe": "Y, 96x96 blocks, crop 0, BasicSR-compatible float32",
        "outputs_quantized_to": "uint8", "device": cfg.engine.device,
        "precision": cfg.engine.precision, "sampler": cfg.engine.sampler, "tile": cfg.tiles.tile,
        "tile_overlap": cfg.tiles.overlap, "tile_batch": cfg.tiles.batch, "seed": cfg.engine.seed,
        "color_fix": cfg.color_fix, "limit": cfg.limit, "steps": cfg.steps or None,
        "stlpips_weights": result.stlpips_weights,
    }
    metrics = {
        m.key: {"label": m.label, "higher_is_better": m.higher_is_better, "full_reference": m.full_reference,
                "description": m.description, "available": result.metric_status.get(m.key) is None,
                "reason": result.metric_status.get(m.key)}
        for m in METRICS
    }
    unpaired = {
        "lq_without_gt": p.lq_without_gt, "gt_without_lq": p.gt_without_lq,
        "missing_sr": {k: v for k, v in result.missing_sr.items() if v}, "sr_without_lq": result.extra_sr,
        "counts": {
            "lq_without_gt": len(p.lq_without_gt), "gt_without_lq": len(p.gt_without_lq),
            "missing_sr": sum(len(v) for v in result.missing_sr.values()),
            "sr_without_lq": sum(len(v) for v in result.extra_sr.values()),
            "left_out_by_limit": p.limited_out,
        },
    }
    return _clean({
        "report_version": REPORT_VERSION,
        "tool": "tadsr eval",
        "created": result.started,
        "elapsed_s": result.elapsed_s,
        "versions": result.versions,
        "settings": settings,
        "metrics": metrics,
        "methods": [m.describe() for m in result.methods],
        "images": p.stems,
        "unpaired": unpaired,
        "mean": result.means(),
        "per_image": [r.to_json() for r in result.records],
        "errors": result.errors,
    })


def _cell(v: float | None, key: str) -> str:
    if v is None or not math.isfinite(v):
        return "—" if v is None else ("inf" if v > 0 else "nan")
    if key == "psnr_y":
        return f"{v:.2f}"
    if key == "niqe":
        return f"{v:.3f}"
    return f"{v:.4f}"


def _time_cell(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def to_markdown(result: EvalResult, figure_name: str | None = "figure.png") -> str:
    cfg = result.config
    means = result.means()
    shown = [m for m in METRICS if result.metric_status.get(m.key) is None]
    arrow = {True: "↑", False: "↓"}
    lines = ["# tadsr eval report", ""]
    lines.append(f"- LQ: `{cfg.lq_dir}`" + (f", GT: `{cfg.gt_dir}`" if cfg.gt_dir else " (no ground truth)"))
    lines.append(f"- images evaluated: {len(result.pairing.stems)}; scale x{cfg.scale}; border crop {cfg.border} px "
                 "(PSNR/SSIM on BT.601 Y); outputs quantised to 8 bits before measuring")
    lines.append(f"- created {result.started}, {result.elapsed_s:.1f} s; tadsr {result.versions.get('tadsr')}, "
                 f"torch {result.versions.get('torch')}, device {result.versions.get('device')}")
    lines.append("")
    lines.append("## Mean per method")
    lines.append("")
    head = ["method", "images"] + [f"{m.label} {arrow[m.higher_is_better]}" for m in shown] + ["s / image", "MP/s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for method in result.methods:
        row = means[method.name]
        cells = [method.name, str(row["images"])] + [_cell(row.get(m.key), m.key) for m in shown]
        cells += [_time_cell(row["seconds_per_image"]), _time_cell(row["megapixels_per_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    unavailable = [(m, result.metric_status[m.key]) for m in METRICS if result.metric_status.get(m.key)]
    if unavailable:
        lines.append("Unavailable metrics: " + "; ".join(f"{m.label}: {why}" for m, why in unavailable) + ".")
        lines.append("")
    lines.append("## Methods")
    lines.append("")
    for method in result.methods:
        d = method.describe()
        if method.kind == "model":
            lines.append(f"- **{method.name}**: model `{d['model']}` (file `{d['model_file']}`, "
                         f"sha256 `{d['model_sha256']}`), {d['steps']} step(s), device {d['device']}, {d['precision']}, "
                         f"tile {cfg.tiles.tile}/{cfg.tiles.overlap}, seed {cfg.engine.seed}, colour fix {d['color_fix']}")
        elif method.kind == "baseline":
            lines.append(f"- **{method.name}**: {d['implementation']}")
        else:
            lines.append(f"- **{method.name}**: ready outputs from `{d['sr_dir']}` (not timed)")
    lines.append("")
    if figure_name:
        lines += ["## Figure", "", f"![crops and quality vs time]({figure_name})", ""]
    lines.append("## Per image")
    lines.append("")
    head = ["image", "method", "size"] + [m.label for m in shown] + ["s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---", "---", "---"] + ["---:"] * (len(head) - 3)) + "|")
    for r in result.records:
        cells = [r.image, r.method, f"{r.width}x{r.height}" + (" (cropped)" if r.cropped_to_gt else "")]
        cells += [_cell(r.metrics.get(m.key), m.key) for m in shown] + [_time_cell(r.seconds)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    p = result.pairing
    skipped = [("LQ without GT", p.lq_without_gt), ("GT without LQ", p.gt_without_lq)]
    skipped += [(f"missing from {k}", v) for k, v in result.missing_sr.items() if v]
    skipped += [(f"in {k} without an LQ image", v) for k, v in result.extra_sr.items() if v]
    if any(v for _, v in skipped) or p.limited_out:
        lines += ["## Skipped", ""]
        for label, stems in skipped:
            if stems:
                lines.append(f"- {label} ({len(stems)}): " + ", ".join(f"`{s}`" for s in stems))
        if p.limited_out:
            lines.append(f"- left out by --limit: {p.limited_out}")
        lines.append("")
    if result.errors:
        lines += ["## Errors", ""]
        for e in result.errors:
            lines.append(f"- `{e['image']}` / {e['method']}: {e['error']}")
        lines.append("")
    return "\n".join(lines)


def render_figure(result: EvalResult, tile: int = 160) -> np.ndarray:
    """Crops (LQ nearest / each method / GT) for the first few images, then a bar chart and a scatter plot."""
    key = plot_metric(result)
    info = METRIC_BY_KEY[key]
    per_image = {(r.image, r.method): r for r in result.records}
    has_gt = any(row.gt is not None for row in result.figure_rows)
    columns = ["LQ (nearest)"] + [m.name for m in result.methods] + (["GT"] if has_gt else [])
    rows = []
    for row in result.figure_rows:
        tiles: list[np.ndarray | None] = [row.lq]
        caps = [f"{row.lq.shape[1] // result.config.scale}px crop x{result.config.scale}"]
        for m in result.methods:
            tiles.append(row.methods.get(m.name))
            rec = per_image.get((row.stem, m.name))
            v = rec.metrics.get(key) if rec else None
            caps.append(f"{info.label} {_cell(v, key)}" if v is not None else "")
        if has_gt:
            tiles.append(row.gt)
            caps.append("ground truth" if row.gt is not None else "")
        rows.append(fig.CropRow(label=row.stem, tiles=tiles, captions=caps))
    parts = []
    if rows:
        parts.append(fig.crop_grid(columns, rows, tile=tile))
    means = result.means()
    points = [fig.PlotPoint(m.name, means[m.name].get(key), means[m.name]["seconds_per_image"])
              for m in result.methods]
    label = f"mean {info.label}"
    plots = fig.stack([fig.bar_chart(points, label, not info.higher_is_better),
                       fig.scatter_plot(points, label, not info.higher_is_better)], axis=1, gap=12)
    parts.append(plots)
    return fig.stack(parts, axis=0, gap=12)


def write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_write_path(path) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OutputError(f"{path}: PNG encoding failed")
        buf.tofile(str(tmp))


def write_text(path: Path, text: str) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(result: EvalResult, out_dir: Path | None = None) -> dict[str, Path]:
    """Write report.json, report.md, figure.png and report.html into `out_dir` (default: the config's); returns
    their paths."""
    out_dir = Path(out_dir or result.config.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the report folder ({exc.strerror or exc})") from exc
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "figure": out_dir / "figure.png",
             "html": out_dir / "report.html"}
    data = to_json(result)
    write_png(paths["figure"], render_figure(result))
    write_text(paths["json"], json.dumps(data, indent=2, allow_nan=False) + "\n")
    write_text(paths["markdown"], to_markdown(result, paths["figure"].name))
    displays = [result.displays[s] for s in result.pairing.stems if s in result.displays]
    write_text(paths["html"], render_eval_html(data, displays, plot_metric(result)))
    return paths
