"""Crops, flips and the tensor form of training images (HxWx3 numpy in, 3xHxW float32 in [-1, 1] out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tadsr_cli.pipeline.image_read import to_float01


def pad_to_min(img: np.ndarray, size_h: int, size_w: int) -> np.ndarray:
    """Reflect-pad (bottom/right) so the image is at least ``size_h x size_w`` (repeats for tiny images)."""
    h, w = img.shape[:2]
    ph, pw = max(0, size_h - h), max(0, size_w - w)
    if ph == 0 and pw == 0:
        return img
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode=mode)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    img = pad_to_min(img, size, size)
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return img[y : y + size, x : x + size]


def center_crop(img: np.ndarray, size_h: int, size_w: int) -> np.ndarray:
    img = pad_to_min(img, size_h, size_w)
    h, w = img.shape[:2]
    y, x = (h - size_h) // 2, (w - size_w) // 2
    return img[y : y + size_h, x : x + size_w]


def random_augment(
    imgs: Sequence[np.ndarray], rng: np.random.Generator, hflip: bool = True, rot: bool = True
) -> list[np.ndarray]:
    """The same random flips (and 90-degree rotations via transpose) applied to every image of ``imgs``."""
    do_h = hflip and rng.uniform() < 0.5
    do_v = rot and rng.uniform() < 0.5
    do_t = rot and rng.uniform() < 0.5
    out = []
    for img in imgs:
        if do_h:
            img = img[:, ::-1]
        if do_v:
            img = img[::-1]
        if do_t:
            img = img.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(img))
    return out


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 (uint8, or float in [0, 1]) -> float32 tensor 3xHxW in [-1, 1]."""
    arr = to_float01(img).transpose(2, 0, 1) * np.float32(2.0) - np.float32(
        1.0
    )  # numpy: no torch thread pool
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
