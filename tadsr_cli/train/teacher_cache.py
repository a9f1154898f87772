"""Optional on-disk cache of the teacher's deterministic T-step targets, one small file per training crop.

A target depends on the teacher weights, the crop and its degradation (fixed by the dataset config and the item's
seed) and the prior noise (drawn from the item's seed). The cache folder is therefore keyed by a fingerprint of
the teacher and the data/degradation settings, and each file by the item seed:

    <folder>/<fingerprint[:16]>/<seed as 16 hex digits>.safetensors      ({"x": latent C x h x w, float32})

Writes are atomic (every process writes only the items it computed, so no two processes write the same file).
Hits need crops that recur: another run over the same data (ablations, reruns), `data.crop_reuse > 1` (a rolling
pool: each crop serves several epochs) or `data.fixed_crops: true`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tadsr_cli.base.atomic import atomic_write_path

__all__ = ["TeacherCache", "teacher_fingerprint"]


def teacher_fingerprint(teacher: nn.Module, data_key: dict[str, Any]) -> str:
    """sha256 over the teacher's config and weights and the settings that determine each crop."""
    h = hashlib.sha256()
    config = getattr(teacher, "config", None)
    h.update((config.to_json() if config is not None else "").encode())
    for key, value in sorted(teacher.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(data_key, sort_keys=True, default=str).encode())
    return h.hexdigest()


class TeacherCache:
    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self.folder = Path(folder) / fingerprint[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _path(self, seed: int) -> Path:
        return self.folder / f"{int(seed) & (2**64 - 1):016x}.safetensors"

    def get(self, seeds: Sequence[int]) -> list[Tensor | None]:
        out: list[Tensor | None] = []
        for s in seeds:
            path = self._path(s)
            value = None
            if path.is_file():
                try:
                    value = load_file(str(path))["x"]
                except (SafetensorError, OSError, KeyError, ValueError):
                    value = None  # unreadable entry: recompute (and overwrite)
            out.append(value)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return out

    def put(self, seeds: Sequence[int], values: Tensor) -> None:
        for s, v in zip(seeds, values, strict=True):
            with atomic_write_path(self._path(s)) as tmp:
                save_file({"x": v.detach().float().cpu().contiguous()}, str(tmp))
