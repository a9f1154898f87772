"""A crop sheet of the worst images of an eval: one PNG, a row per image, the same crop from every method.

    python benchmarks/crop_sheet.py REPORT_DIR --methods bicubic,realesrgan,default --worst 6 --by st_lpips \
        --of default -o sheet.png

REPORT_DIR is a `tadsr eval ... --save-sr -o REPORT_DIR` folder: the ranking and the per-image PSNR-Y / ST-LPIPS
come from its report.json, each method's outputs from REPORT_DIR/sr/<method slug>/<stem>.png (ready `--sr` outputs
from their own folder), LQ and GT from the folders the report names (or --lq / --gt). Without a report, give the
outputs as --sr NAME=DIR (and --gt): the images are then ranked by PSNR-Y computed here.

Each row: the whole image (GT, else LQ) with the crop marked, the LQ crop (nearest-upscaled to HR), each method, GT.
The crop (--crop HR pixels, default 128) sits where the ranked method's local Y error against the GT is highest
(the worst spot of a worst image), or at --at Y,X; with no GT, on the LQ's most detailed area. Every tile is
magnified --zoom times (nearest), so JPEG blocks, ringing and grain stay visible pixel for pixel.
Methods are named as in the report ("tadsr-tiny-x4 (1 step)"), by the part before " (", or by the --model given
to eval ("default", "tadsr-tiny-x4-teacher") when that is unambiguous. OpenCV / numpy only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tadsr_cli.eval.psnr_ssim import psnr, rgb_to_y
from tadsr_cli.pipeline.image_read import IMAGE_EXTENSIONS, read_samples

FONT = cv2.FONT_HERSHEY_SIMPLEX
INK, GREY, RED, WHITE = (20, 20, 20), (95, 95, 95), (200, 30, 30), (255, 255, 255)
LABELS = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "st_lpips": "ST-LPIPS", "lpips": "LPIPS", "niqe": "NIQE"}


# ---- inputs ---------------------------------------------------------------------------------------------------------
def slug(name: str) -> str:
    """The folder name `tadsr eval --save-sr` gives a method (tadsr_cli.eval.runner.slug)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "method"


def list_images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(Path(folder).iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS}


def read_u8(path: Path) -> np.ndarray:
    img = read_samples(path)  # eval's own reader, so the sheet shows what was measured
    return img if img.dtype == np.uint8 else np.clip(np.rint(img / 257.0), 0, 255).astype(np.uint8)


@dataclass
class Method:
    name: str
    folder: Path
    model: str | None = None  # the --model eval was given, when a model
    kind: str = "sr"


@dataclass
class Sheet:
    methods: list[Method]
    stems: list[str]  # ranked, worst first
    lq: dict[str, Path]
    gt: dict[str, Path]
    of: str
    by: str
    values: dict[tuple[str, str], dict[str, float | None]] = field(default_factory=dict)  # (stem, method) -> metrics
    title: str = ""


def resolve(token: str, methods: list[Method]) -> Method:
    """A user's method name -> the method: exact name, slug, the name before " (", or eval's --model value."""
    for test in (lambda m: m.name == token, lambda m: slug(m.name) == token,
                 lambda m: m.name.split(" (")[0] == token, lambda m: m.model == token):
        hits = [m for m in methods if test(m)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            sys.exit(f"crop_sheet: {token!r} matches {', '.join(m.name for m in hits)}: give the full name")
    sys.exit(f"crop_sheet: no method {token!r}; the report has: {', '.join(m.name for m in methods)}")


def parse_sr(values: list[str]) -> list[Method]:
    out = []
    for text in values:
        name, sep, folder = text.partition("=")
        if not sep or not name or not Path(folder).is_dir():
            sys.exit(f"crop_sheet: --sr expects NAME=DIR with an existing folder, got {text!r}")
        out.append(Method(name=name, folder=Path(folder)))
    return out


def worst_first(rows: list[tuple[str, float | None]], lower_is_better: bool) -> list[str]:
    """Stems ranked worst first (missing values left out)."""
    finite = [(s, v) for s, v in rows if v is not None and math.isfinite(v)]
    return [s for s, _ in sorted(finite, key=lambda sv: sv[1], reverse=lower_is_better)]


def from_report(args: argparse.Namespace) -> Sheet:
    report_dir = Path(args.report)
    data = json.loads((report_dir / "report.json").read_text())
    methods = []
    for d in data["methods"]:
        # a model or baseline was saved by --save-sr under sr/<slug>/; ready outputs stay in their own folder
        folder = Path(d["sr_dir"]) if d["kind"] == "sr" else report_dir / "sr" / slug(d["name"])
        methods.append(Method(name=d["name"], folder=folder, model=d.get("model"), kind=d["kind"]))
    extra = parse_sr(args.sr)
    for m in extra:  # --sr NAME=DIR adds a method or points a report method at another folder
        methods = [x for x in methods if x.name != m.name] + [m]
    chosen = [resolve(t.strip(), methods) for t in args.methods.split(",") if t.strip()] if args.methods \
        else methods
    of = resolve(args.of, methods) if args.of else next((m for m in chosen if m.kind == "model"), chosen[0])
    missing = [m.name for m in chosen if not m.folder.is_dir()]
    if missing:
        sys.exit(f"crop_sheet: no saved outputs for {', '.join(missing)} (run eval with --save-sr, or --sr NAME=DIR)")
    settings = data["settings"]
    lq_dir = Path(args.lq or settings["lq_dir"])
    gt_dir = args.gt or settings.get("gt_dir")
    values: dict[tuple[str, str], dict[str, float | None]] = {}
    for r in data["per_image"]:
        values[(r["image"], r["method"])] = {k: r.get(k) for k in LABELS}
    info = data.get("metrics", {}).get(args.by)
    if info is None:
        sys.exit(f"crop_sheet: the report has no metric {args.by!r} ({', '.join(data.get('metrics', {}))})")
    rows = [(s, values.get((s, of.name), {}).get(args.by)) for s in data["images"]]
    stems = worst_first(rows, not info["higher_is_better"])
    if not stems:
        sys.exit(f"crop_sheet: no {args.by} values for {of.name} in {report_dir / 'report.json'}")
    return Sheet(methods=chosen, stems=stems, lq=list_images(lq_dir), gt=list_images(Path(gt_dir)) if gt_dir else {},
                 of=of.name, by=args.by, values=values, title=f"{report_dir}")


def from_folders(args: argparse.Namespace) -> Sheet:
    """No report: methods from --sr, ranked by PSNR-Y computed here."""
    methods = parse_sr(args.sr)
    if not methods or not args.lq or not args.gt:
        sys.exit("crop_sheet: without REPORT_DIR give --sr NAME=DIR (one or more), --lq and --gt")
    if args.by != "psnr_y":
        sys.exit("crop_sheet: without a report only --by psnr_y can be computed")
    if args.methods:
        methods = [resolve(t.strip(), methods) for t in args.methods.split(",") if t.strip()]
    of = resolve(args.of, methods) if args.of else methods[0]
    lq, gt, outs = list_images(Path(args.lq)), list_images(Path(args.gt)), list_images(of.folder)
    values: dict[tuple[str, str], dict[str, float | None]] = {}
    for stem in sorted(set(lq) & set(gt) & set(outs)):
        values[(stem, of.name)] = {"psnr_y": local_psnr(read_u8(outs[stem]), read_u8(gt[stem]), args.scale)}
    stems = worst_first([(s, v["psnr_y"]) for (s, _), v in values.items()], lower_is_better=False)
    return Sheet(methods=methods, stems=stems, lq=lq, gt=gt, of=of.name, by="psnr_y", values=values,
                 title="folders")


def local_psnr(sr: np.ndarray, gt: np.ndarray, border: int) -> float:
    h, w = min(sr.shape[0], gt.shape[0]), min(sr.shape[1], gt.shape[1])  # as eval aligns sizes: top-left area
    return psnr(sr[:h, :w], gt[:h, :w], crop_border=border)


# ---- where to crop --------------------------------------------------------------------------------------------------
def worst_spot(sr: np.ndarray, gt: np.ndarray, crop: int, scale: int) -> tuple[int, int]:
    """Top-left (on the scale grid, so the LQ crop matches) of the `crop` window with the largest mean squared Y
    error, among windows clear of eval's `scale`-pixel border crop."""
    h, w = min(sr.shape[0], gt.shape[0]), min(sr.shape[1], gt.shape[1])
    err = (rgb_to_y(sr[:h, :w]) - rgb_to_y(gt[:h, :w])).astype(np.float32) ** 2
    return best_window(err, crop, scale)


def detail_spot(lq: np.ndarray, crop: int, scale: int) -> tuple[int, int]:
    """No GT: the most detailed area of the LQ (gradient energy), where a method has the most to get right."""
    y = rgb_to_y(lq).astype(np.float32)
    energy = cv2.Sobel(y, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(y, cv2.CV_32F, 0, 1) ** 2
    energy = cv2.resize(energy, (lq.shape[1] * scale, lq.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    return best_window(energy, crop, scale)


def best_window(score: np.ndarray, crop: int, scale: int) -> tuple[int, int]:
    h, w = score.shape[:2]
    b = scale if min(h, w) >= crop + 2 * scale else 0
    mean = cv2.boxFilter(score, -1, (crop, crop), normalize=True, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    # windows fully inside, on the scale grid (so the LQ crop is exactly the HR crop / scale)
    valid = mean[b:max(b + 1, h - crop - b + 1):scale, b:max(b + 1, w - crop - b + 1):scale]
    iy, ix = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return snap(b + iy * scale, h, crop, scale), snap(b + ix * scale, w, crop, scale)


def snap(v: int, size: int, crop: int, scale: int) -> int:
    """Onto the scale grid (the LQ crop is then exactly the HR crop / scale), inside the image."""
    v = min(max(0, v), max(0, size - crop))
    return v // scale * scale


def cut(img: np.ndarray | None, y: int, x: int, s: int) -> np.ndarray | None:
    if img is None:
        return None
    out = np.full((s, s, 3), 235, dtype=np.uint8)  # light grey where an image is smaller than the crop
    part = img[y:y + s, x:x + s]
    out[: part.shape[0], : part.shape[1]] = part
    return out


# ---- drawing --------------------------------------------------------------------------------------------------------
def text_width(s: str, scale: float) -> int:
    return cv2.getTextSize(s, FONT, scale, 1)[0][0]


def put(canvas: np.ndarray, s: str, x: int, y: int, width: int, color: tuple[int, int, int] = INK,
        scale: float = 0.5) -> None:
    """Text with its baseline at (x, y), shrunk (then cut with '...') to fit `width` pixels."""
    while scale > 0.36 and text_width(s, scale) > width:
        scale -= 0.02
    while len(s) > 4 and text_width(s, scale) > width:
        s = s[:-4] + "..."
    cv2.putText(canvas, s, (x, y), FONT, scale, color, 1, cv2.LINE_AA)


def wrap(s: str, width: int, scale: float) -> list[str]:
    """Split a long name into lines that fit (at any character: names have few spaces)."""
    lines, cur = [], ""
    for ch in s:
        if cur and text_width(cur + ch, scale) > width:
            lines.append(cur)
            cur = ""
        cur += ch
    return lines + [cur] if cur else lines


def fmt(key: str, v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return f"{LABELS[key]} -"
    return f"{LABELS[key]} {v:.2f} dB" if key == "psnr_y" else f"{LABELS[key]} {v:.3f}"


def context_tile(img: np.ndarray, y: int, x: int, s: int, tile: int) -> np.ndarray:
    """The whole image fitted into the tile, the crop marked in red."""
    h, w = img.shape[:2]
    f = min(tile / w, tile / h)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))),
                       interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_NEAREST)
    out = np.full((tile, tile, 3), 255, dtype=np.uint8)
    oy, ox = (tile - small.shape[0]) // 2, (tile - small.shape[1]) // 2
    out[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
    p0 = (ox + int(x * f), oy + int(y * f))
    p1 = (ox + int((x + s) * f) - 1, oy + int((y + s) * f) - 1)
    cv2.rectangle(out, p0, p1, RED, 2)
    return out


def render(sheet: Sheet, args: argparse.Namespace) -> np.ndarray:
    scale, crop, zoom = args.scale, args.crop // args.scale * args.scale, args.zoom
    tile, gap, cap_h, head_h, title_h = crop * zoom, 8, 40, 26, 46
    has_gt = bool(sheet.gt)
    columns = ["image (crop in red)", f"LQ x{scale} nearest"] + [m.name for m in sheet.methods] \
        + (["GT"] if has_gt else [])
    rows = sheet.stems[: args.worst]
    width = len(columns) * (tile + gap) + gap
    height = title_h + head_h + len(rows) * (tile + cap_h + gap) + gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    by = LABELS.get(sheet.by, sheet.by)
    put(canvas, f"worst {len(rows)} of {len(sheet.stems)} by {by} of {sheet.of}  ({sheet.title})",
        gap, 20, width - 2 * gap, scale=0.6)
    where = f"at {args.at}" if args.at else ("where its local Y error is highest" if has_gt else
                                             "on the LQ's most detailed area")
    put(canvas, f"{crop}x{crop} HR crop {where}; tiles x{zoom} nearest", gap, 40, width - 2 * gap, GREY)
    for j, name in enumerate(columns):
        put(canvas, name, gap + j * (tile + gap) + 2, title_h + head_h - 8, tile - 4,
            RED if name == sheet.of else INK)
    folders = {m.name: list_images(m.folder) for m in sheet.methods}
    for i, stem in enumerate(rows):
        top = title_h + head_h + i * (tile + cap_h + gap)
        lq = read_u8(sheet.lq[stem])
        gt = read_u8(sheet.gt[stem]) if stem in sheet.gt else None
        outs = {name: read_u8(f[stem]) if stem in f else None for name, f in folders.items()}
        ranked = outs.get(sheet.of)
        if ranked is None and sheet.of not in outs:  # the ranked method is not shown: its spot all the same
            of_files = next((list_images(m.folder) for m in sheet.methods if m.name == sheet.of), {})
            ranked = read_u8(of_files[stem]) if stem in of_files else None
        if args.at:
            h, w = gt.shape[:2] if gt is not None else (lq.shape[0] * scale, lq.shape[1] * scale)
            ay, ax = (int(v) for v in args.at.split(","))
            y, x = snap(ay, h, crop, scale), snap(ax, w, crop, scale)
        elif gt is not None and ranked is not None:
            y, x = worst_spot(ranked, gt, crop, scale)
        else:
            y, x = detail_spot(lq, crop, scale)
        c = crop // scale
        lq_c = cut(lq, y // scale, x // scale, c)
        # the whole GT, else the whole LQ (then the box in LQ pixels)
        tiles = [context_tile(gt, y, x, crop, tile) if gt is not None
                 else context_tile(lq, y // scale, x // scale, c, tile)]
        tiles.append(cv2.resize(lq_c, (tile, tile), interpolation=cv2.INTER_NEAREST))
        caps: list[list[tuple[str, tuple[int, int, int]]]] = [
            [(f"#{i + 1} {line}", INK) if k == 0 else (line, INK) for k, line in
             enumerate(wrap(stem, tile - 4, 0.42)[:2])],
            [(f"LQ {lq.shape[1]}x{lq.shape[0]}, crop at", GREY), (f"y={y // scale} x={x // scale} (HR {y},{x})", GREY)],
        ]
        for m in sheet.methods:
            t = cut(outs[m.name], y, x, crop)
            tiles.append(None if t is None else cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST))
            vals = dict(sheet.values.get((stem, m.name), {}))
            if vals.get("psnr_y") is None and gt is not None and outs[m.name] is not None:
                vals["psnr_y"] = local_psnr(outs[m.name], gt, scale)  # outputs the report did not measure
            keys = ["psnr_y", "st_lpips"] if has_gt else []  # full-reference metrics only with a GT
            keys = keys if sheet.by in keys else keys[:1] + [sheet.by]
            caps.append([(fmt(k, vals.get(k)), RED if (m.name == sheet.of and k == sheet.by) else INK)
                         for k in keys])
        if has_gt:
            tiles.append(None if gt is None else cv2.resize(cut(gt, y, x, crop), (tile, tile),
                                                            interpolation=cv2.INTER_NEAREST))
            caps.append([(f"ground truth {gt.shape[1]}x{gt.shape[0]}" if gt is not None else "no GT", GREY)])
        for j, (img, cap) in enumerate(zip(tiles, caps, strict=True)):
            left = gap + j * (tile + gap)
            if img is None:
                canvas[top:top + tile, left:left + tile] = 235
                put(canvas, "missing", left + tile // 2 - 30, top + tile // 2, tile - 8, GREY)
            else:
                canvas[top:top + tile, left:left + tile] = img
            for k, (line, color) in enumerate(cap[:2]):
                put(canvas, line, left + 2, top + tile + 16 + 17 * k, tile - 4, color, scale=0.45)
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", nargs="?", help="a `tadsr eval --save-sr` report folder (report.json, sr/)")
    p.add_argument("--lq", help="LQ folder (default: the report's)")
    p.add_argument("--gt", help="GT folder (default: the report's)")
    p.add_argument("--sr", action="append", default=[], metavar="NAME=DIR",
                   help="outputs of a method in a folder (repeatable): added to the report's, or alone")
    p.add_argument("--methods", help="comma list of the methods to show, in order (default: all)")
    p.add_argument("--worst", type=int, default=6, help="rows: the N worst images")
    p.add_argument("--by", default="st_lpips", help="metric to rank by (psnr_y, ssim_y, st_lpips, lpips, niqe)")
    p.add_argument("--of", help="method ranked (default: the first model shown)")
    p.add_argument("--crop", type=int, default=128, help="crop side in HR pixels")
    p.add_argument("--at", help="Y,X: the crop's top-left in HR pixels for every row (default: worst spot)")
    p.add_argument("--zoom", type=int, default=2, help="nearest magnification of every tile")
    p.add_argument("--scale", type=int, default=4, help="SR factor (also eval's border crop)")
    p.add_argument("-o", "--output", default="sheet.png")
    args = p.parse_args()
    if args.by not in LABELS:
        sys.exit(f"crop_sheet: --by must be one of {', '.join(LABELS)}")
    sheet = from_report(args) if args.report else from_folders(args)
    canvas = render(sheet, args)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        sys.exit(f"crop_sheet: cannot write {out}")
    print(json.dumps({"sheet": str(out), "size": [canvas.shape[1], canvas.shape[0]], "ranked": sheet.of,
                      "by": sheet.by, "rows": sheet.stems[: args.worst]}))


if __name__ == "__main__":
    main()
