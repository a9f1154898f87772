"""The prior noise as one deterministic field over the whole latent (DESIGN.md section 2).

The field is a standard-normal array of shape `[C, +inf, +inf]` over *global* LQ/latent coordinates (the latent and
the LQ share coordinates). It is a function of `(seed, channels)` and the position alone, so

* two overlapping tiles see identical noise where they overlap,
* a tiled run and an untiled run draw the same noise everywhere,
* the field does not depend on the tile size, and video frames of the same size get the same noise (no flicker
  from noise alone).

It is generated per fixed `block x block` cell with counter-based seeding: cell `(by, bx)` is drawn from a PCG64
generator seeded with `SeedSequence([VERSION, seed, by, bx])`, so any region is produced without generating the
rest of the image. Coordinates may be negative (padding outside the image); they map to ordinary cells. A small
LRU cache of cells (bounded in bytes) makes overlapping tiles and repeated frames cheap.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

# Bump only if the field definition changes (it changes every seeded output).
FIELD_VERSION = 1
DEFAULT_BLOCK = 64
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


def _zigzag(v: int) -> int:
    """Map any integer to a non-negative one (SeedSequence entropy must be >= 0)."""
    return 2 * v if v >= 0 else -2 * v - 1


class NoiseField:
    """Deterministic standard-normal field over global latent coordinates.

    `region(y0, x0, h, w)` returns the `[C, h, w]` float32 slice starting at global position `(y0, x0)`.
    """

    def __init__(self, seed: int, channels: int, block: int = DEFAULT_BLOCK,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, scale: float = 1.0) -> None:
        if channels < 1:
            raise ValueError("channels must be >= 1")
        if block < 1:
            raise ValueError("block must be >= 1")
        self.seed = int(seed)
        self.channels = int(channels)
        # Temperature on top of the model's own prior_noise_scale: the field is scaled, its pattern stays the same.
        self.scale = float(scale)
        self.block = int(block)
        cell_bytes = self.channels * self.block * self.block * 4
        self._max_cells = max(4, cache_bytes // cell_bytes)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def cell(self, by: int, bx: int) -> np.ndarray:
        """The `[C, block, block]` cell with block indices `(by, bx)` (may be negative)."""
        key = (by, bx)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        ss = np.random.SeedSequence([FIELD_VERSION, _zigzag(self.seed), _zigzag(by), _zigzag(bx)])
        gen = np.random.Generator(np.random.PCG64(ss))
        arr = gen.standard_normal((self.channels, self.block, self.block), dtype=np.float32)
        arr.flags.writeable = False
        self._cache[key] = arr
        if len(self._cache) > self._max_cells:
            self._cache.popitem(last=False)
        return arr

    def region(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """The field on rows `y0 .. y0+h-1`, columns `x0 .. x0+w-1` (global coordinates), `[C, h, w]` float32."""
        if h < 0 or w < 0:
            raise ValueError("region size must be non-negative")
        b = self.block
        out = np.empty((self.channels, h, w), dtype=np.float32)
        by0, by1 = y0 // b, (y0 + h - 1) // b
        bx0, bx1 = x0 // b, (x0 + w - 1) // b
        for by in range(by0, by1 + 1):
            cy0 = max(y0, by * b)
            cy1 = min(y0 + h, (by + 1) * b)
            for bx in range(bx0, bx1 + 1):
                cx0 = max(x0, bx * b)
                cx1 = min(x0 + w, (bx + 1) * b)
                c = self.cell(by, bx)
                out[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = c[:, cy0 - by * b:cy1 - by * b,
                                                                 cx0 - bx * b:cx1 - bx * b]
        if self.scale != 1.0:
            out *= self.scale
        return out
