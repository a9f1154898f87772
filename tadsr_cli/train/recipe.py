"""Training recipes: one YAML schema for ResShift teacher training (`kind: teacher`) and TAD-SR distillation
(`kind: tadsr`), validated into dataclasses with errors that name the key and the file line.

    kind: tadsr                      # or teacher
    name: my-run                     # default: the recipe file's stem
    seed: 123456
    output_dir: runs/my-run          # default: runs/<name>; `tadsr distill --out DIR` wins
    device: auto                     # auto | cpu | cuda | cuda:N
    threads: null                    # torch threads per process (1 is fastest on a busy CPU)
    model:                           # teacher: inline ModelConfig keys (denoiser/autoencoder/schedule/prediction)
      teacher: resshift-realsr-x4-v1 # tadsr: a model file or registry name (the student starts as its copy)
      init: null                     # optional weights to start from, a model file or registry name
                                     # (tadsr: the student's)
    data: {hr: FOLDER, exclude: [...], holdout: 0, gt_size: 256, workers: 2, length: null, fixed_crops: false,
           crop_reuse: 1}
                                     # or lq + gt paired folders instead of hr
    degradation: {...}               # `DegradationConfig` keys (Real-ESRGAN second order by default)
    optim: {g: {lr, betas, weight_decay, warmup, grad_clip}, d: {...}, lr_schedule: constant}
    loss: {reg: 1, hfsd: 1, gan: 0.02, hfsd_mode: tadsr, hfsd_timesteps: [0, 1, 2], disc_timesteps: null,
           gan_start: 0, fidelity: 0, fidelity_on: light}
    discriminator: {blocks: null, middle: true, hidden: 128, time_dim: 128, kernel: 9}
    iterations: 30000
    batch: 64                        # global batch per iteration (all processes, all accumulation steps)
    grad_accum: 1
    ema: 0.999
    amp: none                        # none | bf16 | fp16 | auto (bf16 on a GPU / CPU that runs it natively)
    channels_last: auto              # true | false | auto (on with bf16 autocast on a CPU with AMX)
    targets: {engine: auto, precision: auto, ahead: true}
                                     # tadsr: the teacher's targets: engine auto | torch | openvino, precision
                                     # auto (as amp) | fp32 | bf16, ahead: computed in a background thread
    teacher_cache: null              # folder for cached teacher T-step targets (per crop + seed)
    checkpoint: {every: 1000, keep: 3}
    log: {every: 20}
    validation: {every: 1000, folder: null, files: [], n_images: 4, save_images: 4, lq_size: 64}

Relative paths are resolved from the current working directory. `apply_overrides` implements
`--set a.b=value` (the value is parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from tadsr_cli.base.errors import ConfigError, RecipeError
from tadsr_cli.models.config import AutoencoderConfig, DenoiserConfig, ModelConfig, ScheduleConfig
from tadsr_cli.train.degradation_config import DegradationConfig
from tadsr_cli.train.recipe_schema import (
    Kind,
    ModelSection,
    OptimizerSettings,
    Recipe,
    plain_data,
)
from tadsr_cli.train.recipe_yaml import (
    META_FIELDS,
    KeyLines,
    KeyPath,
    check_value,
    load_yaml_with_lines,
)

__all__ = ["apply_overrides", "check_timesteps", "load_recipe", "parse_recipe"]


_MODEL_SUBSECTIONS = {
    "denoiser": DenoiserConfig,
    "autoencoder": AutoencoderConfig,
    "schedule": ScheduleConfig,
}


def _parse_model(data: Any, path: KeyPath, lines: KeyLines, kind: str) -> ModelSection:
    if not isinstance(data, dict):
        raise RecipeError(f"{lines.where(path)}: expected a mapping, got {data!r}")
    model_fields = [f.name for f in dataclasses.fields(ModelConfig)]
    known = ["teacher", "init", *model_fields]
    for key in data:
        if key not in known:
            raise RecipeError(
                f"{lines.where(path + (str(key),))}: unknown key {str(key)!r}; known keys here: {', '.join(known)}"
            )
    teacher = check_value(data.get("teacher"), str | None, path + ("teacher",), lines)
    init = check_value(data.get("init"), str | None, path + ("init",), lines)
    inline = {k: v for k, v in data.items() if k in model_fields}
    if teacher is not None:
        if kind != "tadsr":
            raise RecipeError(
                f"{lines.where(path + ('teacher',))}: only `kind: tadsr` recipes take a teacher"
            )
        extra = sorted(set(inline) - {"name", "description", "prior_noise_scale"})
        if extra:
            raise RecipeError(
                f"{lines.where(path + (extra[0],))}: the architecture comes from the teacher file; "
                f"remove {extra} (only name/description/prior_noise_scale may be set with `teacher`)"
            )
        scale = check_value(data.get("prior_noise_scale"), float | None, path + ("prior_noise_scale",), lines)
        if scale is not None and not 0.0 <= scale <= 4.0:
            raise RecipeError(f"{lines.where(path + ('prior_noise_scale',))}: must be in [0, 4], got {scale}")
        # With a teacher, `init` is the student's starting point (e.g. a regression-only run: a warm start).
        return ModelSection(teacher=teacher, init=init, config=None, prior_noise_scale=scale)
    if not inline:
        raise RecipeError(
            f"{lines.where(path)}: give the architecture inline (denoiser/autoencoder/schedule/prediction)"
            + (" or a `teacher` model" if kind == "tadsr" else "")
        )
    hints = typing.get_type_hints(ModelConfig)
    kwargs: dict[str, Any] = {}
    for key, value in inline.items():
        sub = path + (key,)
        if key in _MODEL_SUBSECTIONS:
            kwargs[key] = check_value(value if value is not None else {}, _MODEL_SUBSECTIONS[key], sub, lines)
        else:
            kwargs[key] = check_value(value, hints[key], sub, lines)
    try:
        config = ModelConfig(**kwargs)
        config.validate()
    except ConfigError as exc:
        raise RecipeError(f"{lines.where(path)}: {exc}") from None
    except TypeError as exc:  # pragma: no cover - guarded by check_value
        raise RecipeError(f"{lines.where(path)}: {exc}") from None
    return ModelSection(teacher=None, init=init, config=config)


def _check_degradation(data: Any, path: KeyPath, lines: KeyLines) -> None:

    try:
        DegradationConfig.from_dict(data, where="degradation")
    except RecipeError as exc:
        msg = str(exc)
        m = re.search(r"unknown key\(s\) '([^']+)'", msg)
        written = set(data) if isinstance(data, dict) else set()
        key = m.group(1) if m else next((w for w in re.findall(r"[A-Za-z_]\w*", msg) if w in written), None)
        loc = lines.loc(path + (key,) if key is not None else path)
        raise RecipeError(f"{loc}: {msg}") from None


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> KeyPath:
    keys = [k for k in dotted.split(".")]
    if not all(keys):
        raise RecipeError(f"--set {dotted}: empty key in the dotted path")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise RecipeError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a mapping")
        node = child
    node[keys[-1]] = value
    return tuple(keys)


def apply_overrides(
    data: dict[str, Any], overrides: list[str], lines: KeyLines | None = None
) -> dict[str, Any]:
    """Apply `a.b=value` strings (value parsed as YAML) to a recipe mapping, in place; returns it."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE (e.g. --set optim.g.lr=1e-4)")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {key}: value {text!r} is not valid YAML ({exc})") from None
        path = _set_path(data, key, value)
        if lines is not None:
            lines.overridden.add(path)
            for p in list(lines.lines):
                if p[: len(path)] == path:
                    del lines.lines[p]
    return data


def parse_recipe(data: Any, source: str = "<recipe>", lines: KeyLines | None = None) -> Recipe:
    """Validate a recipe mapping into a `Recipe` (errors name the key and, with `lines`, the file line)."""
    lines = lines or KeyLines(source)
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(Recipe) if f.name not in META_FIELDS]
    for key in data:
        if key not in names:
            raise RecipeError(
                f"{lines.where((str(key),))}: unknown key {str(key)!r}; known keys: {', '.join(names)}"
            )
    for required in ("kind", "model", "data"):
        if required not in data:
            raise RecipeError(f"{source}: missing required key {required!r}")
    kind = check_value(data["kind"], Kind, ("kind",), lines)
    hints = typing.get_type_hints(Recipe)
    kwargs: dict[str, Any] = {"kind": kind}
    for key, value in data.items():
        if key == "kind":
            continue
        if key == "model":
            kwargs[key] = _parse_model(value, ("model",), lines, kind)
        elif key == "degradation":
            check_value(value, hints[key], (key,), lines)
            _check_degradation(value, (key,), lines)
            kwargs[key] = value
        else:
            if value is None and key in ("optim", "loss", "discriminator", "checkpoint", "log", "validation",
                                         "targets"):
                value = {}
            kwargs[key] = check_value(value, hints[key], (key,), lines)
    recipe = Recipe(**kwargs, source=source, raw=plain_data(data))
    if not recipe.name:
        recipe.name = Path(source).stem if source and not source.startswith("<") else "run"
    _semantic_checks(recipe, lines)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override (`--set`) and validate a recipe file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc})") from None
    data, lines = load_yaml_with_lines(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe is a YAML mapping, got {type(data).__name__}")
    apply_overrides(data, list(overrides or []), lines)
    return parse_recipe(data, str(path), lines)


def _semantic_checks(r: Recipe, lines: KeyLines) -> None:
    def fail(path: KeyPath, msg: str) -> None:
        raise RecipeError(f"{lines.where(path)}: {msg}")

    positive = {
        ("iterations",): r.iterations,
        ("batch",): r.batch,
        ("grad_accum",): r.grad_accum,
        ("data", "gt_size"): r.data.gt_size,
        ("checkpoint", "every"): r.checkpoint.every,
        ("checkpoint", "keep"): r.checkpoint.keep,
        ("log", "every"): r.log.every,
        ("discriminator", "hidden"): r.discriminator.hidden,
        ("discriminator", "time_dim"): r.discriminator.time_dim,
        ("discriminator", "kernel"): r.discriminator.kernel,
        ("validation", "lq_size"): r.validation.lq_size,
    }
    for path, value in positive.items():
        if value < 1:
            fail(path, f"must be >= 1, got {value}")
    for path, value in {
        ("data", "workers"): r.data.workers,
        ("data", "holdout"): r.data.holdout,
        ("validation", "every"): r.validation.every,
        ("validation", "n_images"): r.validation.n_images,
        ("validation", "save_images"): r.validation.save_images,
    }.items():
        if value < 0:
            fail(path, f"must be >= 0, got {value}")
    if r.threads is not None and r.threads < 1:
        fail(("threads",), f"must be >= 1 or null, got {r.threads}")
    if r.data.crop_reuse < 1:
        fail(("data", "crop_reuse"), f"must be >= 1, got {r.data.crop_reuse}")
    if r.data.length is not None and r.data.length < 1:
        fail(("data", "length"), f"must be >= 1, got {r.data.length}")
    if r.batch % r.grad_accum:
        fail(("batch",), f"batch {r.batch} must be a multiple of grad_accum {r.grad_accum}")
    if not 0.0 <= r.ema < 1.0:
        fail(("ema",), f"must lie in [0, 1), got {r.ema}")
    for which in ("g", "d"):
        o: OptimizerSettings = getattr(r.optim, which)
        if o.lr <= 0:
            fail(("optim", which, "lr"), f"must be > 0, got {o.lr}")
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            fail(("optim", which, "betas"), f"must be two numbers in [0, 1), got {o.betas}")
        if o.warmup < 0 or o.weight_decay < 0:
            fail(("optim", which), "warmup and weight_decay must be >= 0")
        if o.grad_clip is not None and o.grad_clip <= 0:
            fail(("optim", which, "grad_clip"), f"must be > 0 or null, got {o.grad_clip}")
    for key in ("reg", "hfsd", "gan", "fidelity", "feature", "perceptual"):
        if getattr(r.loss, key) < 0:
            fail(("loss", key), "loss weights must be >= 0")
    if not r.loss.hfsd_timesteps:
        fail(("loss", "hfsd_timesteps"), "needs at least one timestep")
    if r.loss.disc_timesteps is not None and (
        len(r.loss.disc_timesteps) != 2 or r.loss.disc_timesteps[0] > r.loss.disc_timesteps[1]
    ):
        fail(("loss", "disc_timesteps"), f"must be [lo, hi] with lo <= hi, got {r.loss.disc_timesteps}")
    if not 1 <= r.loss.perceptual_taps <= 5:
        fail(("loss", "perceptual_taps"), f"must lie in 1..5, got {r.loss.perceptual_taps}")
    if r.loss.perceptual_crop < 0:
        fail(("loss", "perceptual_crop"), f"must be >= 0 (0: the whole crop), got {r.loss.perceptual_crop}")
    if r.loss.gan_start < 0:
        fail(("loss", "gan_start"), f"must be >= 0, got {r.loss.gan_start}")
    if r.kind == "tadsr" and r.loss.reg + r.loss.hfsd + r.loss.gan + r.loss.fidelity + r.loss.feature + r.loss.perceptual == 0:
        fail(("loss",), "all loss weights are zero")
    d = r.data
    if d.hr is None and (d.lq is None or d.gt is None):
        fail(("data",), "give `hr` (folder of HR images) or both `lq` and `gt` (paired folders)")
    if d.hr is not None and (d.lq is not None or d.gt is not None):
        fail(("data",), "`hr` and `lq`/`gt` exclude each other")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", r.device):
        fail(("device",), f"must be auto, cpu, cuda, cuda:N or mps, got {r.device!r}")
    # Timestep ranges that need T: checked again once the model (possibly a teacher file) is known.
    if r.model.config is not None:
        check_timesteps(r, r.model.config.schedule.steps, lines)


def check_timesteps(r: Recipe, steps: int, lines: KeyLines | None = None) -> None:
    """HFSD timesteps must lie in [0, T-1] and the discriminator range in [0, T-2] (needs the model's T)."""
    lines = lines or KeyLines(r.source)
    bad = [t for t in r.loss.hfsd_timesteps if not 0 <= t < steps]
    if bad:
        raise RecipeError(
            f"{lines.where(('loss', 'hfsd_timesteps'))}: timesteps {bad} outside [0, {steps - 1}] (T = {steps})"
        )
    if r.loss.disc_timesteps is not None:
        lo, hi = r.loss.disc_timesteps
        if lo < 0 or hi > max(steps - 2, 0):
            raise RecipeError(
                f"{lines.where(('loss', 'disc_timesteps'))}: range [{lo}, {hi}] outside [0, {max(steps - 2, 0)}] (T = {steps})"
            )
