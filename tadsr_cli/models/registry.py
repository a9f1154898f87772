"""Known models: the embedded default and the released ResShift / SinSR checkpoints.

Nothing here touches the network at import. `pull` downloads (or takes local copies of) the released `.pth`
files, checks them by loading them strictly into the official architecture, and converts them into one
self-describing `.safetensors` model file in the cache, which is what `--model NAME` then loads.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import CheckpointError, ModelNotFoundError
from tadsr_cli.models.config import AutoencoderConfig, DenoiserConfig, ModelConfig, ScheduleConfig

RESSHIFT_RELEASE = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0"
SINSR_RELEASE = "https://github.com/wyf0912/SinSR/releases/download/v1.0"
DEFAULT_MODEL_NAME = "tadsr-tiny-x4"
TEACHER_MODEL_NAME = "tadsr-tiny-x4-teacher"
VIDEO_MODEL_NAME = "tadsr-tiny-x4-video"
DEFAULT_ALIAS = "default"  # `--model default`: the embedded default for the input's kind (`default_model_for`)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class RemoteFile:
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


def official_realsr_config(steps: int = 15, min_noise_level: float = 0.04, name: str = "") -> ModelConfig:
    """The released real-SR x4 networks: Swin-UNet (118.59 M) + LDM VQ-f4 (55.32 M)."""
    return ModelConfig(
        denoiser=DenoiserConfig(),
        autoencoder=AutoencoderConfig(),
        schedule=ScheduleConfig(steps=steps, min_noise_level=min_noise_level),
        prediction="x0",
        name=name,
    )


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
            make_config=lambda: official_realsr_config(15, 0.04, "resshift-realsr-x4-v1"),
            denoiser=RemoteFile(f"{RESSHIFT_RELEASE}/resshift_realsrx4_s15_v1.pth"),
            autoencoder=VQ_F4,
        ),
        RegistryEntry(
            name="resshift-realsr-x4-v3",
            description="ResShift real-SR x4, T=4 (v3)",
            steps=4,
            make_config=lambda: official_realsr_config(4, 0.2, "resshift-realsr-x4-v3"),
            denoiser=RemoteFile(f"{RESSHIFT_RELEASE}/resshift_realsrx4_s4_v3.pth"),
            autoencoder=VQ_F4,
        ),
        RegistryEntry(
            name="sinsr-v1",
            description="SinSR one-step student (same architecture, T=15 schedule, called at t=T-1)",
            steps=1,
            make_config=lambda: official_realsr_config(15, 0.04, "sinsr-v1"),
            denoiser=RemoteFile(f"{SINSR_RELEASE}/SinSR_v1.pth"),
            autoencoder=VQ_F4,
        ),
    )
}


def cache_dir() -> Path:
    """`$TADSR_HOME`, else `$XDG_CACHE_HOME/tadsr`, else `~/.cache/tadsr`."""
    if home := os.environ.get("TADSR_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tadsr"


def model_path(entry: RegistryEntry) -> Path:
    """Where the ready model file of `entry` lives (package data for the embedded one, else the cache)."""
    if entry.embedded_file:
        return WEIGHTS_DIR / entry.embedded_file
    return cache_dir() / "models" / f"{entry.name}.safetensors"


def is_available(entry: RegistryEntry) -> bool:
    return model_path(entry).is_file()


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


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """Map `--model` (None = embedded default, a registry name, or a file path) to a model file."""
    text = model_name(name_or_path)
    if text in REGISTRY:
        entry = REGISTRY[text]
        path = model_path(entry)
        if path.is_file():
            return path
        if entry.embedded_file:
            raise ModelNotFoundError(
                f"the embedded model {path.name} is missing from this installation; pass --model FILE"
            )
        raise ModelNotFoundError(f"model {text!r} is not downloaded yet: run `tadsr models pull {text}`")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    known = ", ".join(sorted(REGISTRY))
    raise ModelNotFoundError(f"--model {text!r} is neither a file nor a known model ({known})")


def resolve_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a `DiffusionSR` for `--model` (see `resolve_model_path`)."""
    from tadsr_cli.models.checkpoints import load_model_file

    return load_model_file(resolve_model_path(name_or_path), device=device)


def default_steps(name_or_path: str | Path | None) -> int | None:
    """Sampling steps a registry model is meant for (None: unknown, e.g. a plain file)."""
    entry = REGISTRY.get(model_name(name_or_path))
    return entry.steps if entry else None


# ---- downloading ------------------------------------------------------------------------------------------------
ProgressFn = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


def fetch(remote: RemoteFile, dest_dir: Path, local_dir: Path | None = None, progress: ProgressFn | None = None) -> Path:
    """The released file: `local_dir`/name used in place when given, else downloaded into `dest_dir` (atomic)."""
    from tadsr_cli.models.checkpoints import sha256_file

    if local_dir is not None:  # used in place: nothing is copied, nothing of the user's is ever removed
        src = Path(local_dir) / remote.filename
        if not src.is_file():
            raise ModelNotFoundError(f"{src}: not found (expected the released file {remote.filename})")
        if remote.sha256 and sha256_file(src) != remote.sha256:
            raise CheckpointError(f"{src}: checksum mismatch (not the released {remote.filename})")
        return src
    dest = dest_dir / remote.filename
    if not dest.is_file():
        _download(remote.url, dest, progress)
    if remote.sha256 and sha256_file(dest) != remote.sha256:
        dest.unlink(missing_ok=True)
        raise CheckpointError(f"{remote.filename}: checksum mismatch (file removed; pull again)")
    return dest


def _download(url: str, dest: Path, progress: ProgressFn | None) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_write_path(dest) as tmp:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            with open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(dest.name, done, total)
    except OSError as exc:  # URLError is an OSError
        raise ModelNotFoundError(f"download of {url} failed: {exc}") from exc


def pull(name: str, local_dir: Path | None = None, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """Download the released files of `name`, verify them by a strict load, write the converted model file."""
    from tadsr_cli.models.checkpoints import load_official, save_model

    entry = REGISTRY.get(name)
    if entry is None:
        raise ModelNotFoundError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    if entry.embedded_file:
        return model_path(entry)  # ships with the package
    target = model_path(entry)
    if target.is_file() and not force:
        return target
    downloads = cache_dir() / "downloads"
    assert entry.denoiser is not None
    denoiser = fetch(entry.denoiser, downloads, local_dir, progress)
    autoencoder = fetch(entry.autoencoder, downloads, local_dir, progress) if entry.autoencoder else None
    try:
        model = load_official(entry.make_config(), denoiser, autoencoder)  # names and shapes checked first
    except CheckpointError as exc:
        if local_dir is None:  # a downloaded file that does not fit: drop it so that a re-run fetches it again
            for path in (denoiser, autoencoder):
                if path is not None and str(path) in str(exc):
                    path.unlink(missing_ok=True)
        raise
    return save_model(model, target)
