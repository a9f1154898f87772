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
      init: null                     # optional weights (model file) to start from (tadsr: the student's)
    data: {hr: FOLDER, exclude: [...], holdout: 0, gt_size: 256, workers: 2, length: null, fixed_crops: false,
           crop_reuse: 1}
                                     # or lq + gt paired folders instead of hr
    degradation: {...}               # `DegradationConfig` keys (Real-ESRGAN second order by default)
    optim: {g: {lr, betas, weight_decay, warmup, grad_clip}, d: {...}, lr_schedule: constant}
    loss: {reg: 1, hfsd: 1, gan: 0.02, hfsd_mode: tadsr, hfsd_timesteps: [0, 1, 2], disc_timesteps: null,
           gan_start: 0}
    discriminator: {blocks: null, middle: true, hidden: 128, time_dim: 128, kernel: 9}
    iterations: 30000
    batch: 64                        # global batch per iteration (all processes, all accumulation steps)
    grad_accum: 1
    ema: 0.999
    amp: none                        # none | bf16 | fp16 | auto
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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tadsr_cli.base.errors import ConfigError, RecipeError
from tadsr_cli.models.config import AutoencoderConfig, DenoiserConfig, ModelConfig, ScheduleConfig

__all__ = [
    "CheckpointSection",
    "DataSection",
    "DiscriminatorSection",
    "LogSection",
    "LossSection",
    "ModelSection",
    "OptimSection",
    "OptimizerSettings",
    "Recipe",
    "ValidationSection",
    "apply_overrides",
    "load_recipe",
    "parse_recipe",
]

Kind = Literal["teacher", "tadsr"]
HFSDMode = Literal["tadsr", "sds", "sds+hr"]
AmpMode = Literal["none", "bf16", "fp16", "auto"]


# ---------------------------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ModelSection:
    """`teacher` (tadsr): model file or registry name; otherwise `config` is built from the inline keys."""

    teacher: str | None = None
    init: str | None = None
    # tadsr: the prior temperature of teacher targets and student (None: the teacher file's own)
    prior_noise_scale: float | None = None
    config: ModelConfig | None = None


@dataclass
class DataSection:
    hr: str | list[str] | None = None  # folder(s) of HR images (random crops + synthetic degradation)
    lq: str | None = None  # paired folders: LQ ...
    gt: str | None = None  # ... and GT with the same file names
    exclude: list[str] = field(
        default_factory=list
    )  # file names never trained on (e.g. the validation photos)
    holdout: int = 0  # additionally hold out the last N files (sorted by name)
    gt_size: int = 256
    workers: int = 2
    length: int | None = None  # samples per epoch (None: the number of images)
    fixed_crops: bool = (
        False  # every epoch repeats epoch 0's crops (a finite set: cached teacher targets hit)
    )
    # A rolling pool: each epoch's crops (and prior noise) serve `crop_reuse` consecutive epochs, batched in a new
    # shuffled order each time, then are replaced; with `teacher_cache` only the first pass pays for the targets.
    crop_reuse: int = 1


@dataclass
class OptimizerSettings:
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup: int = 0  # linear warm-up iterations
    grad_clip: float | None = 1.0  # max global grad norm (None: off)


@dataclass
class OptimSection:
    g: OptimizerSettings = field(default_factory=OptimizerSettings)
    d: OptimizerSettings = field(default_factory=OptimizerSettings)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0  # cosine: final lr = lr * min_lr_ratio


@dataclass
class LossSection:
    reg: float = 1.0
    hfsd: float = 1.0
    gan: float = 0.02
    hfsd_mode: HFSDMode = "tadsr"
    hfsd_timesteps: list[int] = field(default_factory=lambda: [0, 1, 2])
    disc_timesteps: list[int] | None = None  # [lo, hi] inclusive; None: [0, T-2]
    gan_start: int = 0  # iterations the discriminator trains alone before the student sees its loss


@dataclass
class DiscriminatorSection:
    blocks: list[int] | None = (
        None  # teacher input-block outputs to use; None: the end of every resolution level
    )
    middle: bool = True  # also the middle block's output
    hidden: int = 128  # head width
    time_dim: int = 128  # sinusoidal time-embedding size of the FiLM layers
    kernel: int = 9  # 1-D conv kernel of the heads


@dataclass
class CheckpointSection:
    every: int = 1000
    keep: int = 3


@dataclass
class LogSection:
    every: int = 20


@dataclass
class ValidationSection:
    every: int = 0  # 0: only at the end
    folder: str | None = None  # HR images; None: the data folder (with `files`)
    files: list[str] = field(default_factory=list)  # subset of the folder (e.g. the held-out photos)
    n_images: int = 4
    save_images: int = 4
    lq_size: int = 64  # centre crop of the LQ (HR crop = lq_size * scale)
    seed: int = 0  # degradation + prior-noise seed of the validation set


@dataclass
class Recipe:
    kind: Kind
    model: ModelSection
    data: DataSection
    name: str = ""
    seed: int = 0
    output_dir: str | None = None
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads per process (None: PyTorch's default)
    degradation: dict[str, Any] | None = None
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    discriminator: DiscriminatorSection = field(default_factory=DiscriminatorSection)
    iterations: int = 1000
    batch: int = 8
    grad_accum: int = 1
    ema: float = 0.999
    amp: AmpMode = "none"
    teacher_cache: str | None = None
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    # provenance (not recipe keys)
    source: str = field(default="<recipe>", repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The validated recipe as plain data (what was parsed, with overrides applied)."""
        return _plain(self.raw)

    def degradation_config(self) -> Any:
        from tadsr_cli.train.degradation_config import DegradationConfig

        return DegradationConfig.from_dict(self.degradation)


_META_FIELDS = {"source", "raw"}


# ---------------------------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------------------------
Path_ = tuple[str | int, ...]


class _Lines:
    """Maps a key path (("optim", "g", "lr")) to the 1-based line where it is written, and names the source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.overridden: set[Path_] = set()

    def loc(self, path: Path_) -> str:
        """'FILE:LINE' of `path` (or of its nearest written ancestor), or '--set KEY' for an overridden key."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.overridden:
                return f"--set {_dotted(path[:n])}"
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source

    def where(self, path: Path_) -> str:
        """'FILE:LINE: a.b' (or '--set a.b') naming the key."""
        loc, dotted = self.loc(path), _dotted(path) or "<top>"
        return loc if loc == f"--set {dotted}" else f"{loc}: {dotted}"


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _record_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _record_lines(item, path + (i,), lines)


def _load_yaml(text: str, source: str) -> tuple[Any, _Lines]:
    lines = _Lines(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{source}{at}: not valid YAML ({problem})") from None
    if node is not None:
        _record_lines(node, (), lines.lines)
    return data, lines


# ---------------------------------------------------------------------------------------------------------------
# Type checking against dataclass annotations
# ---------------------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


# YAML 1.1 (PyYAML) reads `5e-5` (no dot) as a string: accept such spellings where a number is expected.
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _accepts(value: Any, tp: Any) -> bool:
    """Shallow check: does `value` have the outer shape of `tp` (scalar type, list, mapping, literal)?"""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, m) for m in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()) is not None
        )
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return True


def _check(value: Any, tp: Any, path: Path_, lines: _Lines) -> Any:
    """Return `value` converted to `tp` (ints -> floats, nested dataclasses built) or raise RecipeError."""
    if not _accepts(value, tp):
        raise RecipeError(f"{lines.where(path)}: expected {_type_name(tp)}, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        member = next(m for m in typing.get_args(tp) if m is not type(None) and _accepts(value, m))
        return _check(value, member, path, lines)
    if tp is float:
        return float(value.strip()) if isinstance(value, str) else float(value)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        return [_check(v, item_tp, path + (i,), lines) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path, lines)
    return value


def _build_dataclass(cls: type, data: dict[str, Any], path: Path_, lines: _Lines) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in _META_FIELDS]
    for key in data:
        if key not in names:
            raise RecipeError(
                f"{lines.where(path + (str(key),))}: unknown key {str(key)!r}; known keys here: {', '.join(names)}"
            )
    kwargs = {key: _check(value, hints[key], path + (key,), lines) for key, value in data.items()}
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Sections with special handling
# ---------------------------------------------------------------------------------------------------------------
_MODEL_SUBSECTIONS = {
    "denoiser": DenoiserConfig,
    "autoencoder": AutoencoderConfig,
    "schedule": ScheduleConfig,
}


def _parse_model(data: Any, path: Path_, lines: _Lines, kind: str) -> ModelSection:
    if not isinstance(data, dict):
        raise RecipeError(f"{lines.where(path)}: expected a mapping, got {data!r}")
    model_fields = [f.name for f in dataclasses.fields(ModelConfig)]
    known = ["teacher", "init", *model_fields]
    for key in data:
        if key not in known:
            raise RecipeError(
                f"{lines.where(path + (str(key),))}: unknown key {str(key)!r}; known keys here: {', '.join(known)}"
            )
    teacher = _check(data.get("teacher"), str | None, path + ("teacher",), lines)
    init = _check(data.get("init"), str | None, path + ("init",), lines)
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
        scale = _check(data.get("prior_noise_scale"), float | None, path + ("prior_noise_scale",), lines)
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
            kwargs[key] = _check(value if value is not None else {}, _MODEL_SUBSECTIONS[key], sub, lines)
        else:
            kwargs[key] = _check(value, hints[key], sub, lines)
    try:
        config = ModelConfig(**kwargs)
        config.validate()
    except ConfigError as exc:
        raise RecipeError(f"{lines.where(path)}: {exc}") from None
    except TypeError as exc:  # pragma: no cover - guarded by _check
        raise RecipeError(f"{lines.where(path)}: {exc}") from None
    return ModelSection(teacher=None, init=init, config=config)


def _check_degradation(data: Any, path: Path_, lines: _Lines) -> None:
    from tadsr_cli.train.degradation_config import DegradationConfig

    try:
        DegradationConfig.from_dict(data, where="degradation")
    except RecipeError as exc:
        msg = str(exc)
        m = re.search(r"unknown key\(s\) '([^']+)'", msg)
        written = set(data) if isinstance(data, dict) else set()
        key = m.group(1) if m else next((w for w in re.findall(r"[A-Za-z_]\w*", msg) if w in written), None)
        loc = lines.loc(path + (key,) if key is not None else path)
        raise RecipeError(f"{loc}: {msg}") from None


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------
def _set_path(data: dict[str, Any], dotted: str, value: Any) -> Path_:
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
    data: dict[str, Any], overrides: list[str], lines: _Lines | None = None
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


def parse_recipe(data: Any, source: str = "<recipe>", lines: _Lines | None = None) -> Recipe:
    """Validate a recipe mapping into a `Recipe` (errors name the key and, with `lines`, the file line)."""
    lines = lines or _Lines(source)
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(Recipe) if f.name not in _META_FIELDS]
    for key in data:
        if key not in names:
            raise RecipeError(
                f"{lines.where((str(key),))}: unknown key {str(key)!r}; known keys: {', '.join(names)}"
            )
    for required in ("kind", "model", "data"):
        if required not in data:
            raise RecipeError(f"{source}: missing required key {required!r}")
    kind = _check(data["kind"], Kind, ("kind",), lines)
    hints = typing.get_type_hints(Recipe)
    kwargs: dict[str, Any] = {"kind": kind}
    for key, value in data.items():
        if key == "kind":
            continue
        if key == "model":
            kwargs[key] = _parse_model(value, ("model",), lines, kind)
        elif key == "degradation":
            _check(value, hints[key], (key,), lines)
            _check_degradation(value, (key,), lines)
            kwargs[key] = value
        else:
            if value is None and key in ("optim", "loss", "discriminator", "checkpoint", "log", "validation"):
                value = {}
            kwargs[key] = _check(value, hints[key], (key,), lines)
    recipe = Recipe(**kwargs, source=source, raw=_plain(data))
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
    data, lines = _load_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe is a YAML mapping, got {type(data).__name__}")
    apply_overrides(data, list(overrides or []), lines)
    return parse_recipe(data, str(path), lines)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _semantic_checks(r: Recipe, lines: _Lines) -> None:
    def fail(path: Path_, msg: str) -> None:
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
    for key in ("reg", "hfsd", "gan"):
        if getattr(r.loss, key) < 0:
            fail(("loss", key), "loss weights must be >= 0")
    if not r.loss.hfsd_timesteps:
        fail(("loss", "hfsd_timesteps"), "needs at least one timestep")
    if r.loss.disc_timesteps is not None and (
        len(r.loss.disc_timesteps) != 2 or r.loss.disc_timesteps[0] > r.loss.disc_timesteps[1]
    ):
        fail(("loss", "disc_timesteps"), f"must be [lo, hi] with lo <= hi, got {r.loss.disc_timesteps}")
    if r.loss.gan_start < 0:
        fail(("loss", "gan_start"), f"must be >= 0, got {r.loss.gan_start}")
    if r.kind == "tadsr" and r.loss.reg + r.loss.hfsd + r.loss.gan == 0:
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


def check_timesteps(r: Recipe, steps: int, lines: _Lines | None = None) -> None:
    """HFSD timesteps must lie in [0, T-1] and the discriminator range in [0, T-2] (needs the model's T)."""
    lines = lines or _Lines(r.source)
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
