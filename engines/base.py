"""The engine boundary (DESIGN.md section 2): one-step inference on a batch of LQ tiles.

An engine runs the whole one-step graph — bicubic x`scale`, encode, prior with the given noise, denoiser at
`t = T-1`, decode — and returns HR tiles. Tiling, blending, colour and I/O stay outside (`tadsr_cli.pipeline`).
Every backend must agree with the torch engine within a stated tolerance.
"""

from __future__ import annotations

import logging
import warnings
from typing import Protocol, runtime_checkable

import numpy as np
from torch import Tensor

from tadsr_cli.base.errors import ConfigError, NumericalError

log = logging.getLogger(__name__)


@runtime_checkable
class Engine(Protocol):
    """What the tiler needs from a backend.

    * `name`: backend name ("torch", "onnx", "openvino", "tensorrt").
    * `scale`: SR factor (4).
    * `lq_multiple`: LQ tile height/width must be multiples of this.
    * `latent_channels`: channels of the prior noise.

    `run(lq, noise)`: `lq` is `[B, 3, h, w]` float32 in [-1, 1], `noise` is `[B, latent_channels, h, w]` float32 (the
    tiles' slices of the global noise field); both may live on the CPU (the tiler passes host tensors). Returns
    `[B, 3, scale*h, scale*w]` float32 in [-1, 1] *on the CPU*. `h` and `w` are multiples of `lq_multiple`.
    Raises `torch.cuda.OutOfMemoryError` (or a `RuntimeError` mentioning "out of memory") when the batch does not
    fit; the tiler then retries with smaller tiles.
    """

    name: str
    scale: int
    lq_multiple: int
    latent_channels: int

    def run(self, lq: Tensor, noise: Tensor) -> Tensor: ...


class NonFiniteTiles:
    """What every backend does with tiles that came out NaN/Inf: an error in fp32; in reduced precision, one
    warning per engine and the caller recomputes those tiles in fp32."""

    def __init__(self) -> None:
        self._warned = False

    def found(self, precision: str, n_bad: int) -> None:
        """Call when `n_bad` tiles are not finite; raises in fp32, else warns once (the caller then retries)."""
        if precision == "fp32":
            raise NumericalError(f"the model produced NaN/Inf on {n_bad} tile(s) in fp32")
        if not self._warned:
            self._warned = True
            msg = (f"{precision} produced NaN/Inf on {n_bad} tile(s); recomputing them in fp32 "
                   "(further occurrences are fixed silently)")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)

    @staticmethod
    def still_bad() -> NumericalError:
        return NumericalError("the model produced NaN/Inf even in fp32")


def check_tile_batch(lq: Tensor, noise: Tensor, latent_channels: int, lq_multiple: int) -> None:
    """The `Engine.run` input contract, for backends that hand raw arrays to a runtime (no torch shape errors)."""
    if lq.ndim != 4 or lq.shape[1] != 3:
        raise ValueError(f"lq must be [B, 3, h, w], got {tuple(lq.shape)}")
    if noise.shape[0] != lq.shape[0] or noise.shape[1] != latent_channels or noise.shape[2:] != lq.shape[2:]:
        raise ValueError(
            f"noise must be [B, {latent_channels}, h, w] matching lq {tuple(lq.shape)}, got {tuple(noise.shape)}"
        )
    h, w = int(lq.shape[2]), int(lq.shape[3])
    if h % lq_multiple or w % lq_multiple:
        raise ConfigError(f"LQ size {(h, w)} must be a multiple of {lq_multiple}; pad it first")


def finite_tiles(hr: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """Per tile of a batch: True where the image and its latent are all finite."""
    b = hr.shape[0]
    return np.isfinite(hr.reshape(b, -1)).all(1) & np.isfinite(latent.reshape(b, -1)).all(1)
