"""Configuration dataclasses that travel with a model file.

A saved model is one `.safetensors` file whose metadata holds `ModelConfig.to_dict()` as JSON, so a model file
needs nothing else to be built. Denoiser keys are the official ResShift `UNetModelSwin` keyword names, so an
official YAML config (`model.params`) builds the network directly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from tadsr_cli.base import typecheck
from tadsr_cli.base.errors import ConfigError


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check_types(cls: type, data: dict[str, Any], prefix: str) -> None:
    """ConfigError for the first value of `data` that does not fit its field of `cls` (checked, not converted:
    the config keeps the values as written, so `to_json` round-trips the file's text)."""
    hints = get_type_hints(cls)
    for key, value in data.items():
        try:
            typecheck.convert(value, hints[key])
        except typecheck.Mismatch:
            raise ConfigError(f"model config: field {prefix}{key} must be {typecheck.describe(hints[key])}, "
                              f"got {_shown(value)}") from None


def _from_dict(cls: type, data: Any, where: str) -> Any:
    """Build a dataclass from a dict: unknown keys and values of the wrong type give one-line `ConfigError`s
    ("model config: field denoiser.model_channels must be an integer, got str '160'"), never a TypeError."""
    if not isinstance(data, dict):
        raise ConfigError(f"model config: field {where} must be a mapping, got {_shown(data)}")
    unknown = sorted(set(typecheck.unknown_keys(cls, data)))
    if unknown:
        known = sorted(typecheck.field_names(cls))
        raise ConfigError(f"model config: {where}: unknown key(s) {unknown}; known: {known}")
    _check_types(cls, data, f"{where}.")
    obj = cls(**data)
    for key, (low, high) in _RANGES.get(cls.__name__, {}).items():
        value = getattr(obj, key)
        for v in value if isinstance(value, list) else [value]:
            if v is not None and not low <= v <= high:
                raise ConfigError(f"model config: field {where}.{key} must be in [{low}, {high}], got {v!r}")
    return obj


# Plausible ranges (inclusive): keep a hostile file from asking for absurd sizes or a degenerate schedule.
_BIG = 1 << 16
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "DenoiserConfig": {
        "image_size": (1, _BIG), "in_channels": (1, _BIG), "model_channels": (1, _BIG), "out_channels": (1, _BIG),
        "attention_resolutions": (1, _BIG), "dropout": (0.0, 1.0), "channel_mult": (1, 64),
        "num_res_blocks": (0, 64), "dims": (1, 3), "num_head_channels": (-1, _BIG), "swin_depth": (0, 64),
        "swin_embed_dim": (1, _BIG), "window_size": (1, 1024), "mlp_ratio": (0.0, 64.0), "lq_size": (1, _BIG),
    },
    "AutoencoderConfig": {
        "factor": (1, 16), "block_out_channels": (1, _BIG), "layers_per_block": (0, 64),
        "latent_channels": (1, _BIG), "vq_embed_dim": (1, _BIG), "num_vq_embeddings": (1, 1 << 20),
        "norm_num_groups": (1, _BIG),
    },
    "ScheduleConfig": {
        "steps": (1, 1000), "kappa": (1e-6, 1e3), "power": (1e-6, 100.0), "min_noise_level": (1e-9, 1.0),
        "etas_end": (1e-9, 1.0), "sqrt_eta1_cap": (1e-9, 1.0),
    },
    "ModelConfig": {"scale": (1, 16), "student_timestep": (0, 999), "prior_noise_scale": (0.0, 4.0)},
}


@dataclass
class DenoiserConfig:
    """Official `UNetModelSwin` keyword arguments (defaults: the real-SR x4 network, 118.59 M parameters)."""

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 160
    out_channels: int = 3
    attention_resolutions: list[int] = field(default_factory=lambda: [64, 32, 16, 8])
    dropout: float = 0.0
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: list[int] | int = field(default_factory=lambda: [2, 2, 2, 2])
    conv_resample: bool = True
    dims: int = 2
    use_fp16: bool = False
    num_head_channels: int = 32
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4
    cond_lq: bool = True
    lq_size: int = 64

    def to_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenoiserConfig:
        return _from_dict(cls, data, "denoiser")


@dataclass
class AutoencoderConfig:
    """Latent space: the official LDM VQ-f4 (as diffusers `VQModel`) or a lossless pixel-unshuffle.

    `kind="vq"` uses the VQModel fields; `kind="pixel_unshuffle"` has `latent_channels = 3 * factor**2` and no weights.
    """

    kind: Literal["vq", "pixel_unshuffle"] = "vq"
    factor: int = 4
    # diffusers VQModel arguments (official VQ-f4 defaults)
    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512])
    layers_per_block: int = 2
    latent_channels: int = 3
    vq_embed_dim: int = 3
    num_vq_embeddings: int = 8192
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True

    @property
    def channels(self) -> int:
        """Channels of the latent the diffusion runs in."""
        return 3 * self.factor**2 if self.kind == "pixel_unshuffle" else self.latent_channels

    @classmethod
    def pixel_unshuffle(cls, factor: int = 4) -> AutoencoderConfig:
        return cls(kind="pixel_unshuffle", factor=factor, latent_channels=3 * factor**2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        cfg = _from_dict(cls, data, "autoencoder")
        if cfg.kind not in ("vq", "pixel_unshuffle"):
            raise ConfigError(f"autoencoder.kind must be 'vq' or 'pixel_unshuffle', got {cfg.kind!r}")
        return cfg


@dataclass
class ScheduleConfig:
    """Residual-shifting schedule (DESIGN.md 1.1). Defaults: official v1/v2, T = 15.

    `sqrt_eta1_cap`: the TAD-SR code base additionally caps sqrt(eta_1) at sqrt(0.001); None = official ResShift.
    """

    steps: int = 15
    kappa: float = 2.0
    power: float = 0.3
    min_noise_level: float = 0.04
    etas_end: float = 0.99
    sqrt_eta1_cap: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleConfig:
        return _from_dict(cls, data, "schedule")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a one-step (or T-step) SR model from its weights file.

    `prediction="x0"`: the network predicts x0 (official checkpoints). `prediction="residual"`: x0_hat = y + net(...),
    a zero-initialised last layer makes an untrained model start at bicubic (trains much faster for small models).
    """

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    prediction: Literal["x0", "residual"] = "x0"
    scale: int = 4
    # Step the one-step student is called at; None = T-1 (TAD-SR / SinSR).
    student_timestep: int | None = None
    # Temperature of the prior: x_T = y + kappa sqrt(eta_T) * prior_noise_scale * eps. Below 1 the sample follows
    # the image more and the noise less (higher PSNR, less seed-to-seed and frame-to-frame variation).
    prior_noise_scale: float = 1.0
    name: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"model config: expected a mapping, got {_shown(data)}")
        data = dict(data)
        unknown = sorted(set(typecheck.unknown_keys(cls, data)))
        if unknown:
            raise ConfigError(f"model config: unknown key(s) {unknown}")
        parts = {
            "denoiser": DenoiserConfig.from_dict(data.pop("denoiser", {})),
            "autoencoder": AutoencoderConfig.from_dict(data.pop("autoencoder", {})),
            "schedule": ScheduleConfig.from_dict(data.pop("schedule", {})),
        }
        _check_types(cls, data, "")
        cfg = cls(**parts, **data)
        for key, (low, high) in _RANGES["ModelConfig"].items():
            value = getattr(cfg, key)
            if value is not None and not low <= value <= high:
                raise ConfigError(f"model config: field {key} must be in [{low}, {high}], got {value!r}")
        cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from None

    def validate(self) -> None:
        if self.prediction not in ("x0", "residual"):
            raise ConfigError(f"prediction must be 'x0' or 'residual', got {self.prediction!r}")
        if self.scale != self.autoencoder.factor:
            # The LQ is concatenated at latent resolution: SR factor must equal the autoencoder factor.
            raise ConfigError(f"scale {self.scale} must equal the autoencoder factor {self.autoencoder.factor}")
        ch = self.autoencoder.channels
        if self.denoiser.in_channels != ch or self.denoiser.out_channels != ch:
            raise ConfigError(
                f"denoiser in/out channels ({self.denoiser.in_channels}/{self.denoiser.out_channels}) "
                f"must equal the latent channels ({ch})"
            )
        if self.schedule.steps < 1:
            raise ConfigError("schedule.steps must be >= 1")
        if self.student_timestep is not None and not 0 <= self.student_timestep < self.schedule.steps:
            raise ConfigError("student_timestep must lie in [0, steps)")

    @property
    def one_step_timestep(self) -> int:
        return self.schedule.steps - 1 if self.student_timestep is None else self.student_timestep
