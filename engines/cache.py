"""Where exported ONNX graphs and built TensorRT engines are cached, and how they are named.

An artefact is keyed by everything that changes its contents: the model (sha256 of the model file, or of the
weights + config when the model did not come from a file), the ONNX opset, the shape mode (`dynamic` or
`static<tile>`), the precision and, for TensorRT, the shape profile, TensorRT version and GPU name. The key is part
of the file name, so a stale artefact is never picked up and a second run finds the first run's file.

Location: a `tadsr-engines/` folder next to the model file when that folder is writable (and is not the
package's own `weights/` folder), else
`tadsr_cli.models.model_cache.cache_dir() / "engines"` (also used for models that did not come from a file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENGINE_SUBDIR = "tadsr-engines"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, max_len: int = 48) -> str:
    """A file-name-safe version of `text` ("NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3")."""
    out = _SAFE.sub("-", str(text)).strip("-.")
    return (out or "x")[:max_len]


def key_digest(fields: Mapping[str, Any], length: int = 16) -> str:
    """Stable short hex digest of a flat mapping (order-independent)."""
    blob = json.dumps({k: fields[k] for k in sorted(fields)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def model_fingerprint(model: Any, model_path: str | Path | None = None) -> str:
    """sha256 identifying the model: of the model file when given, else of the config + every weight tensor."""
    if model_path is not None:
        from tadsr_cli.models.checkpoints import sha256_file

        return sha256_file(Path(model_path))
    import torch

    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json"):
        digest.update(config.to_json().encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _writable_dir(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _is_package_data(folder: Path) -> bool:
    """The embedded default lives inside the installed package: never write there."""
    from tadsr_cli.models.model_cache import WEIGHTS_DIR

    try:
        return folder.resolve() == Path(WEIGHTS_DIR).resolve()
    except OSError:
        return False


def cache_root(model_path: str | Path | None = None, override: str | Path | None = None) -> Path:
    """The folder artefacts of this model go to (created): `override`, else next to the model, else the cache."""
    if override is not None:
        folder = Path(override).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if model_path is not None:
        parent = Path(model_path).expanduser().resolve().parent
        if not _is_package_data(parent) and os.access(parent, os.W_OK | os.X_OK) and _writable_dir(parent / ENGINE_SUBDIR):
            return parent / ENGINE_SUBDIR
    from tadsr_cli.models.model_cache import cache_dir

    folder = cache_dir() / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def model_stem(model: Any, model_path: str | Path | None = None) -> str:
    if model_path is not None:
        return slug(Path(model_path).stem, 40)
    config = getattr(model, "config", None)
    return slug(getattr(config, "name", "") or "model", 40)


def onnx_file_name(stem: str, model_sha: str, opset: int, shape_mode: str, precision: str = "fp32") -> str:
    """`<stem>-<sha16>-op<opset>-<shape mode>-<precision>.onnx`."""
    return f"{slug(stem, 40)}-{model_sha[:16]}-op{int(opset)}-{slug(shape_mode)}-{slug(precision)}.onnx"


def onnx_cache_path(model: Any, model_path: str | Path | None, opset: int, shape_mode: str,
                    precision: str = "fp32", root: str | Path | None = None,
                    model_sha: str | None = None) -> Path:
    """Where the exported graph for these settings lives (it may not exist yet)."""
    sha = model_sha or model_fingerprint(model, model_path)
    folder = cache_root(model_path, root)
    return folder / onnx_file_name(model_stem(model, model_path), sha, opset, shape_mode, precision)
