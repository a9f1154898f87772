"""Regenerates the README tables and figures that come from committed JSON under benchmarks/results/.

    python benchmarks/readme_tables.py            # print every table
    python benchmarks/readme_tables.py --check    # exit 1 and show the differences when README.md disagrees
    python benchmarks/readme_tables.py --write    # rewrite them in README.md

Each table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in README.md; only those lines and the
figures in prose listed in FIGURES (a pattern around them; its groups are the figures) are ever rewritten.
tests/test_readme_figures.py runs the --check logic. README figures that no committed JSON holds (the training wall
times, earlier models' figures) are not here; the README says where each comes from.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


def fmt(value: float, places: int) -> str:
    """Half-up rounding of the value as JSON wrote it (24.65 -> 24.7; float formatting would give 24.6)."""
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def seconds(value: float) -> str:
    return fmt(value, 3 if value < 0.01 else 2)


def floor(value: float, places: int) -> str:
    """Rounded down: for a lower bound (">= 57.0 dB" when the JSON has 57.05)."""
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR))


def signed(value: float, places: int) -> str:
    text = fmt(value, places)
    return text if text.startswith("-") else "+" + text


def bold(text: str, condition: bool) -> str:
    return f"**{text}**" if condition else text


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


def color_fix() -> list[str]:
    """benchmarks/bench_color_fix.py: quality of each fix (best bold), CPU time of the fix alone."""
    fixes = load("bench_color_fix.json")["fixes"]
    columns = [("psnr_y", 2, True), ("psnr_cbcr", 2, True), ("cast", 4, False)]  # (key, places, higher is better)
    best = {key: (max if up else min)(Decimal(fmt(f[key], places)) for f in fixes.values())
            for key, places, up in columns}
    lines = ["| `--color-fix` | PSNR-Y | chroma PSNR (Cb, Cr) | largest channel-mean error | CPU s / 512x512 image |",
             "|---|---:|---:|---:|---:|"]
    for name in ("none", "wavelet", "adain"):
        f = fixes[name]
        cells = [bold(name, name == "wavelet")]  # the default (`--color-fix wavelet`) in bold
        cells += [bold(fmt(f[key], places), Decimal(fmt(f[key], places)) == best[key]) for key, places, _ in columns]
        cells.append(fmt(f["cpu_seconds"], 3))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


VIDEO = "tadsr-tiny-x4-video (1 step)"
IMAGE = "tadsr-tiny-x4 (1 step)"
VIDEO_CLIPS = [("dense texture (krank level-23)", "krank__level-23.jpg"),
               ("sand (lifeograph sands)", "lifeograph__sands.jpg"),
               ("smooth landscape (valley10)", "endless-sky-high-dpi__valley10-sfiera@2x.jpg")]


def video_stability() -> list[str]:
    """benchmarks/bench_video_stability.py (default settings, and --temporal-smoothing 0): flicker / PSNR-Y per clip;
    the video default's figures are bold where they beat bicubic's. Indented: the table sits in a list item."""
    smoothed = load("video_stability.json")["clips"]
    alone = load("video_stability_no_smoothing.json")["clips"]

    def pair(row: dict, bicubic: dict | None = None) -> str:
        flicker, psnr = fmt(row["warp_error"], 2), fmt(row["psnr_y"], 2)
        if bicubic is None:
            return f"{flicker} / {psnr}"
        less, more = row["warp_error"] < bicubic["warp_error"], row["psnr_y"] > bicubic["psnr_y"]
        return f"**{flicker} / {psnr}**" if less and more else f"{bold(flicker, less)} / {bold(psnr, more)}"

    lines = ["| clip | original frames | bicubic | **video default** | its frames on their own (smoothing 0) "
             "| image default, video settings |", "|---|---:|---:|---:|---:|---:|"]
    for label, key in VIDEO_CLIPS:
        s = smoothed[key]
        cells = [label, fmt(s["reference"]["warp_error"], 2), pair(s["bicubic"]), pair(s[VIDEO], s["bicubic"]),
                 pair(alone[key][VIDEO]), pair(s[IMAGE])]
        lines.append("| " + " | ".join(cells) + " |")
    return ["  " + line for line in lines]


def ray_speedup() -> list[str]:
    """benchmarks/bench_ray.py: local run, 1 and 2 workers (work / wall), speed-up of 2 workers over 1."""
    r = load("bench_ray.json")
    s = r["settings"]
    rows = [(f"folder: {s['images']} images, {s['size']} px", "folder"),
            (f"video: {s['frames']} frames, {s['video_size']} px", "video")]
    lines = ["| input | local (1 thread) | 1 worker: work / wall | 2 workers: work / wall | speed-up (work / wall) |",
             "|---|---:|---:|---:|---:|"]
    for label, key in rows:
        one, two = r[key]["1_worker"], r[key]["2_workers"]
        lines.append(f"| {label} | {fmt(r[key + '_local']['wall_s'], 1)} s "
                     f"| {fmt(one['work_s'], 1)} s / {fmt(one['wall_s'], 1)} s "
                     f"| {fmt(two['work_s'], 1)} s / {fmt(two['wall_s'], 1)} s "
                     f"| {fmt(r[key]['speedup_work'], 2)}x / {fmt(r[key]['speedup_wall'], 2)}x |")
    return lines


TABLES: dict[str, Callable[[], list[str]]] = {
    "color-fix": color_fix,
    "openvino-cli": openvino_cli,
    "pipeline-512": pipeline_512,
    "heldout-degraded": heldout_degraded,
    "heldout-clean": heldout_clean,
    "video-stability": video_stability,
    "ray-speedup": ray_speedup,
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


def mean(folder: str, method: str) -> dict:
    return load(f"{folder}/report.json")["mean"][method]


def st_lpips_wins(folder: str, a: str, b: str) -> list[str]:
    """On how many photos of a report method a has the lower ST-LPIPS than method b, and of how many."""
    per = {}
    for row in load(f"{folder}/report.json")["per_image"]:
        per.setdefault(row["method"], {})[row["image"]] = row["st_lpips"]
    return [str(sum(per[a][k] < per[b][k] for k in per[a])), str(len(per[a]))]


def realesrgan_slowdown() -> list[str]:
    """Real-ESRGAN's time per image over the default's, in the held-out table above (degraded LR)."""
    resr = mean("heldout-teacher", "realesrgan")["seconds_per_image"]
    default = mean("heldout-students", IMAGE)["seconds_per_image"]
    return [fmt(resr / default, 0)]


def vs_bicubic(folder: str, method: str, db_places: int) -> list[str]:
    """ST-LPIPS as a multiple of bicubic's, and PSNR-Y minus bicubic's."""
    m, b = mean(folder, method), mean(folder, "bicubic")
    return [fmt(m["st_lpips"] / b["st_lpips"], 2), fmt(m["psnr_y"] - b["psnr_y"], db_places)]


def degraded_vs_bicubic() -> list[str]:
    return vs_bicubic("heldout-students", IMAGE, 2) + vs_bicubic("heldout-teacher", "realesrgan", 2)


def clean_vs_bicubic() -> list[str]:
    return vs_bicubic("heldout-clean", IMAGE, 1) + vs_bicubic("heldout-clean", "realesrgan", 1)


def video_default_clean() -> list[str]:
    """How far under bicubic's PSNR-Y on clean LR, its ST-LPIPS as a multiple of bicubic's, ST-LPIPS on degraded LR."""
    ratio, _ = vs_bicubic("heldout-clean", VIDEO, 1)
    under = mean("heldout-clean", "bicubic")["psnr_y"] - mean("heldout-clean", VIDEO)["psnr_y"]
    return [fmt(under, 1), ratio, fmt(mean("heldout-students", VIDEO)["st_lpips"], 3)]


def full_vs_regression() -> list[str]:
    c = next(c for c in load("full_vs_regression_only.json")["comparisons"] if c["metric"] == "st_lpips")
    low, high = c["bootstrap_95"]
    return [fmt(-c["mean_difference_a_minus_b"], 3), str(c["a_wins"]), str(c["images"]), fmt(low, 3), fmt(high, 3)]


def full_vs_teacher() -> list[str]:
    psnr = next(c for c in load("full_vs_regression_only.json")["comparisons"] if c["metric"] == "psnr_y")
    return [fmt(mean("heldout-students", IMAGE)["st_lpips"], 3),
            fmt(mean("heldout-teacher", "tadsr-tiny-x4-teacher (15 steps)")["st_lpips"], 3),
            fmt(-psnr["mean_difference_a_minus_b"], 1)]


def clean_vs_regression() -> list[str]:
    c = "heldout-clean"
    return [fmt(mean(c, IMAGE)["st_lpips"], 3), fmt(mean(c, "regression-only (1 step)")["st_lpips"], 3),
            *st_lpips_wins(c, IMAGE, "regression-only (1 step)"),
            fmt(mean(c, "tadsr-tiny-x4-teacher (15 steps)")["st_lpips"], 3)]


def hfsd_alone() -> list[str]:
    s = "heldout-students"
    return [signed(mean(s, "without-D (1 step)")["st_lpips"] - mean(s, "regression-only (1 step)")["st_lpips"], 3)]


def yellow_flower() -> list[str]:
    rows = {r["method"]: r["st_lpips"] for r in load("heldout-students/report.json")["per_image"]
            if r["image"] == "YellowFlower"}
    return [fmt(rows[IMAGE], 3), fmt(rows["regression-only (1 step)"], 3)]


def clean_inputs_gain() -> list[str]:
    """The stage-3 default's held-out figures (the stage-2 'from' figures are in no JSON)."""
    clean, degraded = mean("heldout-clean", IMAGE), mean("heldout-students", IMAGE)
    return [fmt(clean["psnr_y"], 2), fmt(clean["st_lpips"], 3), fmt(degraded["st_lpips"], 3),
            fmt(degraded["psnr_y"], 2)]


def video_vs_bicubic() -> list[str]:
    checks = load("video_stability.json")["checks"]
    video = [checks[key][VIDEO]["psnr_y_vs_bicubic"] for _, key in VIDEO_CLIPS]
    image_clean = [-checks[key][IMAGE]["psnr_y_vs_bicubic"] for _, key in VIDEO_CLIPS[1:]]
    return [fmt(max(abs(v) for v in video), 1), *(signed(v, 2) for v in video), fmt(min(image_clean), 1),
            fmt(max(image_clean), 1)]


def video_softer() -> list[str]:
    return [fmt(mean("heldout-students", VIDEO)["st_lpips"], 3), fmt(mean("heldout-students", IMAGE)["st_lpips"], 3)]


def ray_fidelity() -> list[str]:
    v = load("bench_ray.json")["video"]
    one, two = v["psnr_vs_local_1_worker"], v["psnr_vs_local_2_workers"]
    return [fmt(two["mean"], 1), fmt(one["mean"], 1), fmt(min(one["lowest_frame"], two["lowest_frame"]), 1)]


def ray_costs() -> list[str]:
    r = load("bench_ray.json")
    load_avg = [r["machine"]["load_avg_at_start"][0], r["machine"]["load_avg_at_end"][0]]
    folder = r["folder"]["1_worker"]["work_s"] / r["folder_local"]["wall_s"] - 1
    video = r["video"]["1_worker"]["work_s"] / r["video_local"]["wall_s"]
    return [fmt(min(load_avg), 1), fmt(max(load_avg), 1), fmt(100 * folder, 0), fmt(video, 1)]


def pipeline_costs() -> list[str]:
    speed = load("bench_pipeline_512.json")["speed"]
    rows = [v for v in speed.values() if isinstance(v, dict)]
    lockstep = speed["tile128_whole_image_norms"]
    exact, local = lockstep["model_only_seconds"], lockstep["model_only_tile_local_norms_seconds"]
    return [fmt(speed["speedup_vs_old_default"], 1),
            fmt(100 * (max(r["end_to_end_vs_model_only"] for r in rows) - 1), 0),
            fmt(100 * (exact / local - 1), 0), fmt(exact, 2), fmt(local, 2)]


def openvino_call() -> list[str]:
    ov = load("bench_openvino.json")
    t, psnr = ov["engines_2026_12_08"]["seconds"], ov["engines"]
    return [fmt(t["openvino-bf16"], 3), fmt(t["torch-bf16"], 3), fmt(t["torch-bf16"] / t["openvino-bf16"], 2),
            fmt(t["onnx-fp32"], 3), fmt(t["openvino-fp32"], 3), fmt(t["torch-fp32"], 3),
            fmt(psnr["openvino-bf16"]["psnr_db_vs_torch_fp32"], 1), fmt(psnr["torch-bf16"]["psnr_db_vs_torch_fp32"], 1)]


def openvino_static() -> list[str]:
    shapes = load("bench_openvino.json")["shapes"]
    speedups = [v["static_speedup"] for v in shapes.values() if isinstance(v, dict)]
    return [fmt(min(speedups), 1), fmt(max(speedups), 1)]


def tiling_range() -> list[str]:
    vals = [q[k] for q in load("bench_pipeline_512.json")["quality"].values()
            for k in ("tile64_whole_image_norms_db", "tile128_whole_image_norms_db")]
    return [fmt(min(vals), 0), fmt(max(vals), 0)]


def precision() -> list[str]:
    p = load("bench_precision.json")
    return [fmt(p["bf16_speedup_cpu"], 2), str(len(p["images"])), floor(p["bf16_vs_fp32_min_psnr_db"], 1)]


N = r"([-+]?\d+(?:\.\d+)?)"  # one figure
# name: (pattern whose groups are the figures, their values from JSON in the same order)
FIGURES: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "tiling-range": (rf"matches untiled \({N}-{N} dB with the shipped model", tiling_range),
    "precision": (rf"bf16 is {N}x faster \(process CPU time[^)]*\) over the {N} held-out photos and its outputs"
                  rf"\s+are >= {N} dB", precision),
    "tiling-quality": (rf"tile 64 gives\s+{N}-{N} dB and tile 128 gives {N}-{N} dB, against {N}-{N} dB and {N}-{N} dB"
                       r"\s+with\s+tile-local norms", lambda: [x for r in tiling_quality() for x in r.split("-")]),
    "openvino-static": (rf"a compile per\s+static shape was {N}-{N}x faster", openvino_static),
    "openvino-call": (rf"OpenVINO bf16 {N} s, torch bf16 {N} s \({N}x\), ONNX Runtime fp32 {N} s, OpenVINO f32 {N} s,"
                      rf"\s+torch\s+fp32 {N} s; OpenVINO bf16 is {N} dB from torch fp32 \(torch bf16 {N} dB\)",
                      openvino_call),
    "pipeline-costs": (rf"The defaults are {N}x faster than before.*?the pipeline around it costs 0-{N} %\.\s+The"
                       rf"\s+exact norms\s+themselves cost {N} % over tile-local ones on those tiles \(network alone"
                       rf" {N} vs {N} s\)", pipeline_costs),
    "rss": (rf"peaks at {N} MB RSS", lambda: [fmt(load("bench_pipeline_512.json")["rss_960x540"]["peak_rss_mb"], 0)]),
    "default-model-speed": (rf"the student takes \*\*{N} s\*\* per 256x256 output, the teacher at 15\s+steps {N} s",
                            lambda: [fmt(load("bench_default_model.json")["student_1_step_s"], 3),
                                     fmt(load("bench_default_model.json")["teacher_T_steps_s"], 2)]),
    "clean-inputs-gain": (rf"to {N} / {N} on the held-out photos with clean LR \(second table\),\s+at the same ST-LPIPS"
                          rf" on Real-ESRGAN-degraded LR \([\d.]+ -> {N}, [\d.]+ -> {N} dB\)", clean_inputs_gain),
    "degraded-vs-bicubic": (rf"the default has {N}x bicubic's ST-LPIPS at {N} dB PSNR-Y \({N}x and {N} dB for"
                            r" Real-ESRGAN", degraded_vs_bicubic),
    "realesrgan-slowdown": (rf"16\.7 M parameter network, about {N}x slower here", realesrgan_slowdown),
    "clean-vs-bicubic": (rf"On clean LR it has {N}x bicubic's ST-LPIPS at\s+{N} dB: .*?\(Real-ESRGAN: {N}x, {N} dB\)",
                         clean_vs_bicubic),
    "video-default-clean": (rf"is {N} dB under bicubic there \({N}x its ST-LPIPS\), and pays for it on degraded LR"
                            rf" \({N}:", video_default_clean),
    "full-vs-regression": (rf"beats regression-only by {N} ST-LPIPS,\s+better on {N} of the {N} photos, 95% bootstrap"
                           rf" interval of the mean difference \[{N}, {N}\]", full_vs_regression),
    "full-vs-teacher": (rf"beats its own 15-step teacher \({N} vs {N}\)\. It pays {N} dB", full_vs_teacher),
    "clean-vs-regression": (rf"is smaller \({N} vs {N}, {N} of {N} photos\) and the teacher is ahead\s+\({N}\)",
                            clean_vs_regression),
    "hfsd-alone": (rf"changes nothing measurable\s+\({N}\)", hfsd_alone),
    "yellow-flower": (rf"ST-LPIPS {N} against {N} for\s+regression-only", yellow_flower),
    "seed-distance": (rf"the default's outputs are {N} dB apart \(median of {N} held-out photos",
                      lambda: [fmt(load("seed_distance.json")["default"]["median_psnr_db"], 1),
                               str(load("seed_distance.json")["images"])]),
    "video-vs-bicubic": (rf"stays within {N} dB of\s+bicubic's PSNR-Y \({N}, {N}, {N} dB\); the image default, which"
                         rf" invents texture in clean sand and grass, was\s+{N}-{N} dB under", video_vs_bicubic),
    "video-softer": (rf"comes out softer too \({N} ST-LPIPS on the degraded photos against {N}\)", video_softer),
    "ray-fidelity": (rf"are {N} dB \(mean PSNR, 8-bit RGB\) from the local run's with 2 workers .*? and {N} dB with 1"
                     rf" worker .*?; the lowest frame is {N} dB", ray_fidelity),
    "ray-costs": (rf"load average {N}-{N} during the runs;.*?A folder on 1 worker took as long as locally \(\+{N} %\)\."
                  rf" A video on 1 worker took {N}x the local time", ray_costs),
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
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)([ \t]*<!-- /table:{re.escape(name)} -->)", re.S)


def render(text: str) -> str:
    """README text with every table and inline figure regenerated from JSON."""
    for name, make in TABLES.items():
        pattern = block(name)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- table:{name} --> ... <!-- /table:{name} --> block")
        body = "\n".join(make()) + "\n"
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(3), text, count=1)
    for name, (regex, make) in FIGURES.items():
        new, n = re.subn(regex, lambda m, make=make: fill(m, make()), text, count=1, flags=re.S)
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
