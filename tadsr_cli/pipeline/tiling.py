"""Tile geometry, padding and smooth blend weights (all in host memory, numpy).

Tiles are cut in LQ space from the image *padded* (reflect) up to a multiple of the engine's `lq_multiple`, and
every tile start is itself a multiple of `lq_multiple`: window partitions then line up with the global grid, so
a tiled run differs from an untiled one only where a tile lacks context near its border. Tiles along one axis are
spread evenly between 0 and `L - tile`, so the overlaps are all about equal and at least the requested one.

Blending: each tile's output is multiplied by a separable weight `wy(y) * wx(x)` that ramps smoothly from ~0 to 1
across the overlap with the neighbouring tile (raised-cosine `sin^2` or a truncated Gaussian CDF) and is 1 on
sides that touch the image border. Both ramps of a pair are mirror images over the same pixels, so they add up to
1 (a partition of unity): no hard crops, no flat averages. Because the tiles form a grid, the sum of all weights
is also separable (`Wy(y) * Wx(x)`), so the accumulator needs only the weighted sum plus two 1-D weight arrays.

Ownership: the tiles also partition the padded image into *owned* rectangles (each overlap split at its middle),
so that whole-image statistics can be summed over tiles with every pixel counted once
(`tadsr_cli.models.tile_norm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

BlendName = Literal["cosine", "gaussian"]


def round_to_multiple(value: int, multiple: int) -> int:
    """Round down to a multiple of `multiple`, at least `multiple`."""
    return max(multiple, (value // multiple) * multiple)


def padded_size(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_to_multiple(img: np.ndarray, multiple: int) -> np.ndarray:
    """Pad an `H x W x C` array at the bottom/right up to multiples of `multiple`.

    Reflect padding (no edge repeat), as the official code does; reflect needs `pad < size`, so for tiny images
    (1 x 1, 2 x 2 ...) it is repeated until the target is reached, and an axis of length 1 is replicated.
    """
    h, w = img.shape[:2]
    ph, pw = padded_size(h, multiple), padded_size(w, multiple)
    out = img
    while out.shape[0] < ph or out.shape[1] < pw:
        ch, cw = out.shape[:2]
        dh, dw = min(ph - ch, max(ch - 1, 0)), min(pw - cw, max(cw - 1, 0))
        if dh == 0 and ch < ph or dw == 0 and cw < pw:  # a length-1 axis: reflect impossible, replicate
            out = np.pad(out, ((0, ph - ch if ch == 1 else 0), (0, pw - cw if cw == 1 else 0), (0, 0)), mode="edge")
            continue
        out = np.pad(out, ((0, dh), (0, dw), (0, 0)), mode="reflect")
    return out


def tile_starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Start positions of the tiles covering `[0, length)` (length and tile multiples of `multiple`)."""
    if tile >= length:
        return [0]
    span = length - tile  # a multiple of `multiple`
    stride = max(multiple, (tile - overlap) // multiple * multiple)  # the largest gap that keeps the overlap
    n = math.ceil(span / stride) + 1
    # Evenly spread, rounded down to the grid: consecutive gaps are at most ceil(span / (n-1)) <= stride.
    q = span // multiple
    starts = [(i * q // (n - 1)) * multiple for i in range(n)]
    return sorted(set(starts))


def ramp(n: int, blend: BlendName) -> np.ndarray:
    """Rising weights over `n` pixels, ~0 to ~1, with `ramp(n) + ramp(n)[::-1] == 1` (partition of unity)."""
    if n <= 0:
        return np.ones(0, dtype=np.float64)
    u = (np.arange(n, dtype=np.float64) + 0.5) / n  # 0..1, symmetric sample positions
    if blend == "cosine":
        return np.sin(0.5 * math.pi * u) ** 2
    if blend == "gaussian":
        # Gaussian CDF over +-3 sigma, rescaled to start at 0 and end at 1 (smooth like the raised cosine, steeper
        # in the middle; sum with its mirror image is still exactly 1 by symmetry).
        z = (u - 0.5) * 6.0
        lo, hi = _phi(-3.0), _phi(3.0)
        return (np.vectorize(_phi)(z) - lo) / (hi - lo)
    raise ValueError(f"unknown blend {blend!r} (cosine or gaussian)")


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def axis_weights(starts: list[int], tile: int, length: int, scale: int, blend: BlendName) -> list[np.ndarray]:
    """Per-tile 1-D weights in output (HR) pixels for the tiles at `starts` along one axis."""
    out = []
    for i, s in enumerate(starts):
        size = min(tile, length - s)
        w = np.ones(size * scale, dtype=np.float64)
        if i > 0:  # overlap with the previous tile
            prev_end = starts[i - 1] + min(tile, length - starts[i - 1])
            ov = max(0, prev_end - s) * scale
            if ov:
                w[:ov] *= ramp(ov, blend)
        if i + 1 < len(starts):  # overlap with the next tile
            ov = max(0, s + size - starts[i + 1]) * scale
            if ov:
                w[size * scale - ov:] *= ramp(ov, blend)[::-1]
        out.append(w)
    return out


def axis_owned(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Per tile along one axis, the `[lo, hi)` it owns: neighbours split their overlap at its middle."""
    ends = [s + min(tile, length - s) for s in starts]
    cuts = [(starts[i + 1] + ends[i]) // 2 for i in range(len(starts) - 1)]
    return list(zip([0, *cuts], [*cuts, length], strict=True))


@dataclass(frozen=True)
class Tile:
    y: int  # LQ position in the padded image
    x: int
    h: int  # LQ size
    w: int
    row: int  # index of the tile row / column in the grid
    col: int
    own_y: tuple[int, int] = (0, 0)  # owned rows / columns [lo, hi), in padded-image LQ pixels
    own_x: tuple[int, int] = (0, 0)


@dataclass
class TileGrid:
    """The tiles of one padded image, with their blend weights and the (separable) weight sums."""

    height: int  # padded LQ size
    width: int
    scale: int
    tiles: list[Tile]
    wy: list[np.ndarray]  # per tile row, HR pixels
    wx: list[np.ndarray]  # per tile column
    wsum_y: np.ndarray  # sum over tile rows, HR pixels
    wsum_x: np.ndarray

    @classmethod
    def build(cls, height: int, width: int, tile: int, overlap: int, multiple: int, scale: int,
              blend: BlendName = "cosine") -> TileGrid:
        """`tile <= 0` = one tile for the whole (padded) image."""
        if height % multiple or width % multiple:
            raise ValueError("pad the image to the multiple first")
        if tile <= 0:
            th, tw = height, width
        else:
            th = tw = round_to_multiple(tile, multiple)
        ys = tile_starts(height, th, overlap, multiple)
        xs = tile_starts(width, tw, overlap, multiple)
        wy = axis_weights(ys, th, height, scale, blend)
        wx = axis_weights(xs, tw, width, scale, blend)
        wsum_y = np.zeros(height * scale, dtype=np.float64)
        wsum_x = np.zeros(width * scale, dtype=np.float64)
        for s, w in zip(ys, wy, strict=True):
            wsum_y[s * scale:s * scale + len(w)] += w
        for s, w in zip(xs, wx, strict=True):
            wsum_x[s * scale:s * scale + len(w)] += w
        own_y, own_x = axis_owned(ys, th, height), axis_owned(xs, tw, width)
        tiles = [
            Tile(y=y, x=x, h=min(th, height - y), w=min(tw, width - x), row=r, col=c, own_y=own_y[r], own_x=own_x[c])
            for r, y in enumerate(ys) for c, x in enumerate(xs)
        ]
        return cls(height, width, scale, tiles, wy, wx, wsum_y, wsum_x)

    @staticmethod
    def owned_rect(t: Tile) -> tuple[int, int, int, int]:
        """`(y0, y1, x0, x1)`: the LQ pixels tile `t` owns, in the tile's own coordinates."""
        return t.own_y[0] - t.y, t.own_y[1] - t.y, t.own_x[0] - t.x, t.own_x[1] - t.x

    def weight(self, t: Tile) -> np.ndarray:
        """`[h*scale, w*scale]` float32 blend weight of one tile."""
        return np.outer(self.wy[t.row], self.wx[t.col]).astype(np.float32)
