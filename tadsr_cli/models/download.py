"""`tadsr models pull`: download (or take local copies of) a released model's `.pth` files and convert them.

The files are checked by loading them strictly into the official architecture and converted into one
self-describing `.safetensors` model file in the cache (`checkpoints.load_official` + `save_model`), which is what
`--model NAME` then loads.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import CheckpointError, ModelNotFoundError
from tadsr_cli.models.catalog import REGISTRY, RemoteFile
from tadsr_cli.models.model_cache import cache_dir, model_path

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
