"""Regenerates the README tables that come from committed JSON under benchmarks/results/.

    python benchmarks/readme_tables.py            # print every table
    python benchmarks/readme_tables.py --check    # exit 1 and show the differences when README.md disagrees
    python benchmarks/readme_tables.py --write    # rewrite them in README.md

Each table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in README.md; only those lines (and the
inline figures in FIGURES) are ever rewritten. tests/test_readme_figures.py runs the --check logic.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


def fmt(value: float, places: int) -> str:
    """Half-up rounding of the value as JSON wrote it (24.65 -> 24.7; float formatting would give 24.6)."""
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def seconds(value: float) -> str:
    return fmt(value, 3 if value < 0.01 else 2)


def load(rel: str) -> dict:
    return json.loads((RESULTS / rel).read_text())


# ---- held-out quality tables (tadsr eval reports) ----------------------------------------------------------------
# (metric key, places, higher is better)
QUALITY = [("psnr_y", 2, True), ("ssim_y", 4, True), ("st_lpips", 4, False), ("niqe", 2, False)]
QUALITY_HEADER = "| method | PSNR-Y | SSIM-Y | ST-LPIPS ↓ | NIQE ↓ |"


def quality_table(rows: list[tuple[str, str, str]], with_time: bool) -> list[str]:
    """rows: (README label, report folder under results/, method name in that report). The best value of each
    metric column is bold, as are labels the README writes in bold."""
    means = [load(f"{folder}/report.json")["mean"][method] for _, folder, method in rows]
    best = {key: (max if up else min)(round(m[key], places) for m in means) for key, places, up in QUALITY}
    header = QUALITY_HEADER + (" s / image (512x512 out)* |" if with_time else "")
    lines = [header, "|---" + "|---:" * (len(QUALITY) + with_time) + "|"]
    for (label, _, _), m in zip(rows, means, strict=True):
        cells = [label]
        for key, places, _ in QUALITY:
            text = fmt(m[key], places)
            cells.append(f"**{text}**" if round(m[key], places) == best[key] else text)
        if with_time:
            cells.append(seconds(m["seconds_per_image"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def heldout_degraded() -> list[str]:
    t, s = "heldout-teacher", "heldout-students"
    return quality_table([
        ("bicubic", t, "bicubic"),
        ("Real-ESRGAN x4plus (`--baseline realesrgan`)", t, "realesrgan"),
        ("teacher, 15 steps", t, "tadsr-tiny-x4-teacher (15 steps)"),
        ("teacher, 1 step (no distillation)", t, "tadsr-tiny-x4-teacher (1 step)"),
        ("regression-only student (same warm start, data, iterations)", s, "regression-only (1 step)"),
        ("student without D (regression + HFSD)", s, "without-D (1 step)"),
        ("**full TAD-SR student = the embedded default**", s, "tadsr-tiny-x4 (1 step)"),
        ("video default (the same + fidelity on clean crops)", s, "tadsr-tiny-x4-video (1 step)"),
    ], with_time=True)


def heldout_clean() -> list[str]:
    c = "heldout-clean"
    return quality_table([
        ("bicubic", c, "bicubic"),
        ("Real-ESRGAN x4plus", c, "realesrgan"),
        ("teacher, 15 steps", c, "tadsr-tiny-x4-teacher (15 steps)"),
        ("regression-only student", c, "regression-only (1 step)"),
        ("**the embedded default**", c, "tadsr-tiny-x4 (1 step)"),
        ("video default", c, "tadsr-tiny-x4-video (1 step)"),
    ], with_time=False)


# ---- speed tables ------------------------------------------------------------------------------------------------
def openvino_cli() -> list[str]:
    cli = load("bench_openvino.json")["cli"]
    rows = [("96-frame 192x144 video -> x4", "video_96x192x144_auto"),
            ("batch of 32 images 64x64 -> 256x256", "batch_32x64x64_auto"),
            ("same video, `--precision fp32` (a CPU without bf16)", "video_96x192x144_fp32"),
            ("same batch, `--precision fp32`", "batch_32x64x64_fp32")]
    lines = ["| job (default settings vs `--backend torch`, same run) | default | torch | speed-up |",
             "|---|---:|---:|---:|"]
    for label, key in rows:
        r = cli[key]
        lines.append(f"| {label} | {fmt(r['default_seconds'], 1)} s | {fmt(r['torch_seconds'], 1)} s "
                     f"| {fmt(r['speedup_default_vs_torch'], 1)}x |")
    return lines


def pipeline_512() -> list[str]:
    speed = load("bench_pipeline_512.json")["speed"]
    # (settings, runs as, JSON row): the text columns describe how each row was run (bench_pipeline.py's rows)
    rows = [("**defaults** (`--backend auto --tile auto --precision auto`)",
             "torch bf16, whole image (auto measured it faster)", "default"),
            ("`--tile 0 --backend torch`", "torch bf16", "torch_tile0"),
            ("`--tile 0 --backend onnx`", "ONNX Runtime fp32", "onnx_tile0"),
            ("before (`--backend torch --precision fp32 --tile 128 --tile-overlap 16`, tile-local norms)",
             "torch fp32", "old_default"),
            ("`--tile 128` (whole-image norms)", "torch bf16 in lockstep", "tile128_whole_image_norms")]
    lines = ["| settings | runs as | tiles | CPU s | end-to-end / network alone | PSNR vs default |",
             "|---|---|---:|---:|---:|---:|"]
    for label, runs_as, key in rows:
        r = speed[key]
        cpu = fmt(r["seconds"], 2)
        db = r.get("psnr_vs_default")
        vs = "-" if db is None else "same output" if math.isinf(db) else f"{fmt(db, 1)} dB"
        lines.append(f"| {label} | {runs_as} | {r['tiles']} | {f'**{cpu}**' if key == 'default' else cpu} "
                     f"| {fmt(r['end_to_end_vs_model_only'], 2)} | {vs} |")
    return lines


TABLES: dict[str, Callable[[], list[str]]] = {
    "heldout-degraded": heldout_degraded,
    "heldout-clean": heldout_clean,
    "openvino-cli": openvino_cli,
    "pipeline-512": pipeline_512,
}


# ---- inline figures (prose, not tables): a pattern whose groups are the figures, and their values from JSON ------
def tiling_quality() -> list[str]:
    quality = list(load("bench_pipeline_512.json")["quality"].values())
    out = []
    for key in ("tile64_whole_image_norms_db", "tile128_whole_image_norms_db", "tile64_tile_local_norms_db",
                "tile128_tile_local_norms_db"):
        vals = [q[key] for q in quality]
        out.append(f"{fmt(min(vals), 1)}-{fmt(max(vals), 1)}")
    return out


def realesrgan_slowdown() -> list[str]:
    """Real-ESRGAN's time per image over the default's, in the held-out table above (degraded LR)."""
    resr = load("heldout-teacher/report.json")["mean"]["realesrgan"]["seconds_per_image"]
    default = load("heldout-students/report.json")["mean"]["tadsr-tiny-x4 (1 step)"]["seconds_per_image"]
    return [fmt(resr / default, 0)]


FIGURES: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "realesrgan-slowdown": (r"16\.7 M parameter network, about (\d+)x slower here", realesrgan_slowdown),
    "tiling-quality": (r"tile 64 gives\s+(\S+) dB and tile 128 gives (\S+) dB, against (\S+) dB and (\S+) dB with"
                       r"\s+tile-local norms", tiling_quality),
}


def fill(match: re.Match[str], values: list[str]) -> str:
    """The matched text with its groups replaced by values (the line breaks around them stay)."""
    text, pos, parts = match.group(0), match.start(), []
    last = 0
    for i, value in enumerate(values, 1):
        parts += [text[last:match.start(i) - pos], value]
        last = match.end(i) - pos
    return "".join(parts) + text[last:]


# ---- check / write -----------------------------------------------------------------------------------------------
def block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def render(text: str) -> str:
    """README text with every table and inline figure regenerated from JSON."""
    for name, make in TABLES.items():
        pattern = block(name)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- table:{name} --> ... <!-- /table:{name} --> block")
        body = "\n".join(make()) + "\n"
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(3), text, count=1)
    for name, (regex, make) in FIGURES.items():
        new, n = re.subn(regex, lambda m, make=make: fill(m, make()), text, count=1)
        if n != 1:
            raise SystemExit(f"README.md: the figure {name!r} ({regex}) was not found")
        text = new
    return text


def differences(text: str) -> list[str]:
    """Unified diff lines between the README and what the JSON gives; empty when they agree."""
    return list(difflib.unified_diff(text.splitlines(), render(text).splitlines(), "README.md", "from JSON",
                                     lineterm="", n=0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md differs from the JSON")
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    if args.check:
        diff = differences(text)
        print("\n".join(diff) if diff else "README.md tables match benchmarks/results/")
        return 1 if diff else 0
    if args.write:
        new = render(text)
        if new != text:
            args.readme.write_text(new)
        print(f"{args.readme}: {'rewritten' if new != text else 'already up to date'}")
        return 0
    for name, make in TABLES.items():
        print(f"<!-- table:{name} -->", *make(), "", sep="\n")
    for name, (_, make) in FIGURES.items():
        print(f"{name}: {make()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
