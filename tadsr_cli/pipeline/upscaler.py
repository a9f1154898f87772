"""`Upscaler`: an engine + tiling + the global noise field; numpy RGB in, numpy RGB out (host memory).

Usable frame by frame (video): the noise field depends on the seed and the global position only, so every frame
of a clip sees the same noise, and the tile geometry is cached per frame size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.base.oom import is_out_of_memory
from tadsr_cli.engines.base import Engine
from tadsr_cli.pipeline.lockstep import run_lockstep
from tadsr_cli.pipeline.noise import NoiseField
from tadsr_cli.pipeline.tiling import BlendName, Tile, TileGrid, pad_to_multiple

log = logging.getLogger(__name__)

TileProgress = Callable[[int, int], None]  # (tiles done, tiles total)


@dataclass
class TileOptions:
    """How an image is cut into tiles (sizes in LQ pixels).

    Defaults follow the official ResShift inference (`chop_size 512`, `chop_stride 448` in HR pixels = LQ tiles of
    128 with 16 px overlap): 128 is a multiple of every model's `lq_multiple` (64 for the official Swin-UNet) and
    twice the training size (LQ 64), so each tile has ample context; 16 LQ px (64 HR px) of cosine ramp hides
    tile-border differences. Four tiles per batch keep a GPU busy at ~2 GB for the official model.
    `tile = 0` = the whole image as one tile (falls back to tiles on out-of-memory).
    """

    tile: int = 128
    overlap: int = 16
    batch: int = 4
    blend: BlendName = "cosine"
    whole_image_norms: bool = True

    def validate(self) -> None:
        if self.tile < 0:
            raise ConfigError("--tile must be >= 0 (0 = whole image)")
        if self.overlap < 0:
            raise ConfigError("--tile-overlap must be >= 0")
        if self.tile and self.overlap >= self.tile:
            raise ConfigError(f"--tile-overlap ({self.overlap}) must be smaller than --tile ({self.tile})")
        if self.batch < 1:
            raise ConfigError("--tile-batch must be >= 1")
        if self.blend not in ("cosine", "gaussian"):
            raise ConfigError(f"unknown blend {self.blend!r} (cosine or gaussian)")


class Upscaler:
    """Tiled one-step upscaling with a deterministic global noise field.

    `upscale(rgb)` takes `H x W x 3` float32 in [0, 1] and returns `(scale*H) x (scale*W) x 3` float32 in [0, 1].
    On accelerator out-of-memory the tile size is halved (down to `lq_multiple`) and the image restarted; the
    smaller size is kept for later images/frames.
    """

    def __init__(self, engine: Engine, tiles: TileOptions | None = None, seed: int = 0) -> None:
        self.engine = engine
        self.tiles = TileOptions() if tiles is None else tiles
        self.tiles.validate()
        self.seed = int(seed)
        self.noise = NoiseField(self.seed, int(engine.latent_channels))
        self._grids: dict[tuple[int, int, int], TileGrid] = {}
        self._tile = self.tiles.tile  # current tile size (may shrink on OOM)

    @property
    def scale(self) -> int:
        return int(self.engine.scale)

    @property
    def multiple(self) -> int:
        return int(self.engine.lq_multiple)

    @property
    def current_tile(self) -> int:
        return self._tile

    def grid(self, height: int, width: int) -> TileGrid:
        """The tile grid for an (unpadded) LQ size."""
        m = self.multiple
        ph, pw = -(-height // m) * m, -(-width // m) * m
        key = (ph, pw, self._tile)
        g = self._grids.get(key)
        if g is None:
            if len(self._grids) > 8:
                self._grids.clear()
            g = TileGrid.build(ph, pw, self._tile, self.tiles.overlap, m, self.scale, self.tiles.blend)
            self._grids[key] = g
        return g

    def upscale(self, rgb: np.ndarray, progress: TileProgress | None = None) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 array, got shape {rgb.shape}")
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ValueError("empty image")
        while True:
            try:
                return self._upscale_once(rgb, progress)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._shrink(rgb.shape[0], rgb.shape[1], exc)

    def _shrink(self, height: int, width: int, exc: BaseException) -> None:
        m = self.multiple
        cur = self._tile if self._tile > 0 else max(-(-height // m) * m, -(-width // m) * m)
        new = (cur // 2 // m) * m
        if new < m:
            raise EngineUnavailableError(
                f"out of memory even with {cur} px tiles; try --tile-batch 1, --precision fp16 or --device cpu"
            ) from exc
        log.warning("out of memory with %s px tiles; retrying with %d px tiles", cur or "whole-image", new)
        self._tile = new

    def _upscale_once(self, rgb: np.ndarray, progress: TileProgress | None) -> np.ndarray:
        h, w = rgb.shape[:2]
        s = self.scale
        lq = pad_to_multiple(np.ascontiguousarray(rgb, dtype=np.float32), self.multiple)
        lq = lq * 2.0 - 1.0  # [-1, 1]
        g = self.grid(h, w)
        batches = self._batches(g.tiles)
        acc = np.zeros((g.height * s, g.width * s, 3), dtype=np.float32)
        if progress:
            progress(0, len(g.tiles))
        lockstep = self._lockstep_engine(g)
        if lockstep is not None:
            owned = [[g.owned_rect(t) for t in group] for group in batches]
            sizes = [(group[0].h, group[0].w) for group in batches]
            with lockstep.whole_image_norms():
                run_lockstep(owned, sizes, lambda i, norms: self._run_group(lq, g, batches[i], acc, lockstep, norms))
            if progress:
                progress(len(g.tiles), len(g.tiles))
        else:
            done = 0
            for group in batches:
                self._run_group(lq, g, group, acc, self.engine)
                done += len(group)
                if progress:
                    progress(done, len(g.tiles))
        # Normalise by the separable weight sum, crop the padding, back to [0, 1]; all in place.
        out = acc[: h * s, : w * s]
        out /= g.wsum_y[: h * s, None, None].astype(np.float32)
        out /= g.wsum_x[None, : w * s, None].astype(np.float32)
        out += 1.0
        out *= 0.5
        np.clip(out, 0.0, 1.0, out=out)
        # Cropping rows keeps the view contiguous (no copy); cropping columns needs one.
        return np.ascontiguousarray(out)

    def _batches(self, tiles: list[Tile]) -> list[list[Tile]]:
        """Tiles in model calls of at most `batch`; tiles of one call share a size (edge tiles can differ)."""
        bs = max(1, self.tiles.batch)
        return [same for i in range(0, len(tiles), bs) for same in _by_size(tiles[i:i + bs])]

    def _lockstep_engine(self, g: TileGrid) -> Any:
        """The engine that runs this grid with whole-image norms, or None (one tile: its norms already see the
        whole image; option off; an engine without GroupNorm support)."""
        if len(g.tiles) < 2 or not self.tiles.whole_image_norms:
            return None
        factory = getattr(self.engine, "lockstep_engine", None)
        return factory() if callable(factory) else None

    def _inputs(self, lq: np.ndarray, group: list[Tile]) -> tuple[Any, Any]:
        lq_b = np.stack([lq[t.y:t.y + t.h, t.x:t.x + t.w].transpose(2, 0, 1) for t in group])
        nz_b = np.stack([self.noise.region(t.y, t.x, t.h, t.w) for t in group])
        return torch.from_numpy(lq_b), torch.from_numpy(nz_b)

    def _run_group(self, lq: np.ndarray, g: TileGrid, group: list[Tile], acc: np.ndarray, engine: Any,
                   norms: Any = None) -> None:
        s = self.scale
        lq_b, nz_b = self._inputs(lq, group)
        out = engine.run(lq_b, nz_b) if norms is None else engine.run(lq_b, nz_b, norms=norms)
        out = out.detach().to("cpu", torch.float32).numpy()
        expect = (len(group), 3, group[0].h * s, group[0].w * s)
        if out.shape != expect:
            raise RuntimeError(f"engine {self.engine.name} returned {out.shape}, expected {expect}")
        for t, o in zip(group, out, strict=True):
            wgt = g.weight(t)
            region = acc[t.y * s:(t.y + t.h) * s, t.x * s:(t.x + t.w) * s]
            region += o.transpose(1, 2, 0) * wgt[:, :, None]

def _by_size(group: list[Tile]) -> list[list[Tile]]:
    out: dict[tuple[int, int], list[Tile]] = {}
    for t in group:
        out.setdefault((t.h, t.w), []).append(t)
    return list(out.values())
