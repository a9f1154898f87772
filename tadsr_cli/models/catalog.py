"""The catalogue of known models: the embedded students and teacher, the released ResShift / SinSR checkpoints,
the default model of each input kind, and what a `--model` name means.

Data only: where a model's file lives is `model_cache`, getting a released one is `download`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tadsr_cli.models.config import ModelConfig
from tadsr_cli.models.presets import official_realsr_x4

RESSHIFT_RELEASE = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0"
SINSR_RELEASE = "https://github.com/wyf0912/SinSR/releases/download/v1.0"
DEFAULT_MODEL_NAME = "tadsr-tiny-x4"
TEACHER_MODEL_NAME = "tadsr-tiny-x4-teacher"
VIDEO_MODEL_NAME = "tadsr-tiny-x4-video"
DEFAULT_ALIAS = "default"  # `--model default`: the embedded default for the input's kind (`default_model_for`)


@dataclass(frozen=True)
class RemoteFile:
    """One released file of an entry (fetched by `download.fetch`)."""

    url: str
    sha256: str | None = None  # None: verified structurally (strict load into the official architecture)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    steps: int  # default sampling steps: 1 for students, T for teachers
    make_config: Callable[[], ModelConfig] = field(repr=False)
    denoiser: RemoteFile | None = None
    autoencoder: RemoteFile | None = None
    embedded_file: str | None = None  # file name inside tadsr_cli/weights/


VQ_F4 = RemoteFile(f"{RESSHIFT_RELEASE}/autoencoder_vq_f4.pth")

REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry(
            name=DEFAULT_MODEL_NAME,
            description="Embedded default: tiny TAD-SR student trained by recipes/tadsr-tiny-x4.yaml (CPU-fast)",
            steps=1,
            make_config=ModelConfig,  # real config comes from the file's metadata
            embedded_file=f"{DEFAULT_MODEL_NAME}.safetensors",
        ),
        RegistryEntry(
            name=VIDEO_MODEL_NAME,
            description="Embedded default for video: the student trained for fidelity on clean inputs "
            "(recipes/tadsr-tiny-x4-video.yaml)",
            steps=1,
            make_config=ModelConfig,
            embedded_file=f"{VIDEO_MODEL_NAME}.safetensors",
        ),
        RegistryEntry(
            name=TEACHER_MODEL_NAME,
            description="Embedded: the 15-step ResShift teacher of the default (recipes/tadsr-tiny-x4-teacher-clean.yaml)",
            steps=15,
            make_config=ModelConfig,
            embedded_file=f"{TEACHER_MODEL_NAME}.safetensors",
        ),
        RegistryEntry(
            name="resshift-realsr-x4-v1",
            description="ResShift real-SR x4 teacher, T=15 (TAD-SR's teacher)",
            steps=15,
            make_config=lambda: official_realsr_x4(15, 0.04, "resshift-realsr-x4-v1"),
            denoiser=RemoteFile(f"{RESSHIFT_RELEASE}/resshift_realsrx4_s15_v1.pth"),
            autoencoder=VQ_F4,
        ),
        RegistryEntry(
            name="resshift-realsr-x4-v3",
            description="ResShift real-SR x4, T=4 (v3)",
            steps=4,
            make_config=lambda: official_realsr_x4(4, 0.2, "resshift-realsr-x4-v3"),
            denoiser=RemoteFile(f"{RESSHIFT_RELEASE}/resshift_realsrx4_s4_v3.pth"),
            autoencoder=VQ_F4,
        ),
        RegistryEntry(
            name="sinsr-v1",
            description="SinSR one-step student (same architecture, T=15 schedule, called at t=T-1)",
            steps=1,
            make_config=lambda: official_realsr_x4(15, 0.04, "sinsr-v1"),
            denoiser=RemoteFile(f"{SINSR_RELEASE}/SinSR_v1.pth"),
            autoencoder=VQ_F4,
        ),
    )
}


def default_model_for(kind: str) -> str:
    """The embedded model that `--model` left out (or `default`) means for an "image" or a "video" input.

    Video gets its own student: a moving picture shows invented texture as crawling detail and every frame is
    compared with its neighbours, so it is trained to follow clean inputs closely (README, "Video")."""
    return VIDEO_MODEL_NAME if kind == "video" else DEFAULT_MODEL_NAME


def model_name(name_or_path: str | Path | None, kind: str = "image") -> str:
    """`--model` as a registry name or file path: None and `default` become the embedded default of `kind`."""
    if name_or_path is None or str(name_or_path) == DEFAULT_ALIAS:
        return default_model_for(kind)
    return str(name_or_path)


def default_steps(name_or_path: str | Path | None) -> int | None:
    """Sampling steps a registry model is meant for (None: unknown, e.g. a plain file)."""
    entry = REGISTRY.get(model_name(name_or_path))
    return entry.steps if entry else None
