"""Training randomness: per-iteration generators, per-sample prior noise, and the RNG states saved in checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def step_generator(
    seed: int, step: int, rank: int, stream: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator whose state depends only on (seed, iteration, rank, stream): resumable without saved state."""
    words = np.random.SeedSequence([seed % 2**63, step, rank, stream, 0x7AD5]).generate_state(2, np.uint32)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(words[0]) << 31 ^ int(words[1]))
    return gen


def sample_noise(seeds: list[int], shape: tuple[int, ...], device: torch.device) -> Tensor:
    """One N(0, 1) tensor per sample, each drawn from a generator seeded by that sample's seed (CPU, then moved)."""
    out = []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s) % 2**63)
        out.append(torch.randn(shape, generator=gen))
    return torch.stack(out).to(device)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
