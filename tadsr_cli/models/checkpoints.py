"""Reading official checkpoints and saving/loading the project's own single-file models.

Security: `.pth` files are read with `torch.load(weights_only=True)` only, so a file holding pickled code is
refused. The project's own format is one `.safetensors` file whose metadata carries the full `ModelConfig`.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import CheckpointError
from tadsr_cli.base.messages import strip_ansi
from tadsr_cli.models.config import ModelConfig
from tadsr_cli.models.weights_check import check_shapes, meta_shapes

FORMAT_NAME = "tadsr-model"
FORMAT_VERSION = "1"
# Buffers that are pure functions of the config: a checkpoint may or may not contain them.
OPTIONAL_BUFFER_SUFFIXES: tuple[str, ...] = ("relative_position_index", "attn_mask")
_WRAPPER_KEYS = ("state_dict", "model", "module", "params_ema", "params")
_PREFIXES = ("module.", "_orig_mod.")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _strip_prefixes(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        changed = True
        while changed:  # checkpoints from DDP + torch.compile carry both prefixes
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from `.safetensors` or `.pth`/`.pt`/`.ckpt` (weights only), unwrapping common wrappers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as fh:
                return _strip_prefixes({k: fh.get_tensor(k) for k in fh.keys()})
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_refusal(path, str(exc))) from None
    except (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError, struct.error) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    for _ in range(3):  # unwrap {"state_dict": {...}} and similar, possibly nested
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return _strip_prefixes(tensors)


def _torch_load(path: Path) -> object:
    """`torch.load(weights_only=True)`, memory-mapped where the file allows it (names and shapes can then be
    checked before the tensor data is read)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def _first_line(exc: BaseException) -> str:
    text = strip_ansi(str(exc)).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _refusal(path: Path, torch_message: str) -> str:
    """Why a pickle was refused, without torch's advice on how to load it anyway (which would run its code)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", torch_message)
    what = f"it references {found.group(1)}" if found else "it holds Python objects beyond plain tensors"
    return (f"{path}: refused: the file is a pickle that could run code ({what}); only plain tensors are "
            "loaded. Use a .safetensors file, or a checkpoint saved as a plain state dict")


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names (prefixes stripped) and shapes of a `.safetensors` file, read from its header only."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    return _strip_prefixes(raw)  # type: ignore[arg-type]


def _is_optional(key: str, optional_suffixes: Iterable[str]) -> bool:
    return any(key.endswith(s) for s in optional_suffixes)


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    what: str = "model",
    optional_suffixes: Iterable[str] = OPTIONAL_BUFFER_SUFFIXES,
) -> None:
    """Load all weights or nothing; a mismatch names the missing/unexpected keys and shape errors (first few)."""
    optional_suffixes = tuple(optional_suffixes)
    expected = module.state_dict()
    check_shapes({k: tuple(v.shape) for k, v in expected.items()},
                 {k: tuple(v.shape) for k, v in state_dict.items()}, what, optional_suffixes)
    # Copy into the existing tensors; optional buffers absent from the file keep their computed values.
    with torch.no_grad():
        for key, target in expected.items():
            if key in state_dict:
                target.copy_(state_dict[key].to(dtype=target.dtype))


def save_model(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Save a `DiffusionSR` as one `.safetensors` file with its `ModelConfig` in the metadata (atomic)."""
    config: ModelConfig = model.config  # type: ignore[assignment]
    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if _is_optional(key, OPTIONAL_BUFFER_SUFFIXES):
            continue  # recomputed from the config at load time
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous().clone()  # safetensors refuses shared storage
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_json()}
    path = Path(path)
    with atomic_write_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_model_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(
            f"{path}: not a tadsr model file (no embedded config); official .pth checkpoints are "
            "converted with `tadsr models pull` or `tadsr models convert`"
        )
    return ModelConfig.from_json(meta["config"])


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build a `DiffusionSR` from a model file (config from the metadata) and load its weights strictly."""
    from tadsr_cli.models.sr_model import DiffusionSR

    config = read_model_config(path)
    # Names and shapes first (header only, network on the meta device): a file whose tensors do not fit its
    # config is refused before anything is allocated or read.
    check_shapes(meta_shapes(lambda: DiffusionSR(config), f"{path}: model config"), file_shapes(path), str(path),
                 OPTIONAL_BUFFER_SUFFIXES)
    model = DiffusionSR(config)
    load_state_dict_strict(model, read_state_dict(path), what=str(path))
    return model.to(device).eval()


def load_official(
    config: ModelConfig,
    denoiser_path: str | Path,
    autoencoder_path: str | Path | None = None,
) -> nn.Module:
    """Assemble a `DiffusionSR` from released ResShift/SinSR denoiser and LDM VQ-f4 `.pth` files."""
    from tadsr_cli.models.autoencoders import ldm_to_diffusers_vq
    from tadsr_cli.models.sr_model import DiffusionSR

    # Check every file against the architecture on the meta device first: a wrong file is refused in well under
    # a second, before the full network (about 1 GB) is built.
    meta = meta_shapes(lambda: DiffusionSR(config))
    denoiser_sd = read_state_dict(denoiser_path)
    part = {k[len("denoiser."):]: v for k, v in meta.items() if k.startswith("denoiser.")}
    check_shapes(part, _shapes(denoiser_sd), f"denoiser {denoiser_path}", OPTIONAL_BUFFER_SUFFIXES)
    vq_sd = None
    if config.autoencoder.kind == "vq" and autoencoder_path is None:
        raise CheckpointError("a VQ model needs the autoencoder checkpoint (autoencoder_vq_f4.pth)")
    if config.autoencoder.kind == "vq":
        try:
            vq_sd = ldm_to_diffusers_vq(read_state_dict(autoencoder_path))  # type: ignore[arg-type]
        except (KeyError, ValueError, RuntimeError, IndexError) as exc:
            raise CheckpointError(f"autoencoder {autoencoder_path}: not an LDM VQ-f4 checkpoint "
                                  f"({_first_line(exc)})") from None
        part = {k[len("autoencoder.vq."):]: v for k, v in meta.items() if k.startswith("autoencoder.vq.")}
        check_shapes(part, _shapes(vq_sd), f"autoencoder {autoencoder_path}", OPTIONAL_BUFFER_SUFFIXES)
    model = DiffusionSR(config)
    load_state_dict_strict(model.denoiser, denoiser_sd, what=f"denoiser {denoiser_path}")
    if vq_sd is not None:
        load_state_dict_strict(model.autoencoder.vq, vq_sd, what=f"autoencoder {autoencoder_path}")
    return model.eval()


def _shapes(sd: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}
