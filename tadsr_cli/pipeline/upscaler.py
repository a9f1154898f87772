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
from tadsr_cli.pipeline import memory
from tadsr_cli.pipeline.lockstep import run_lockstep
from tadsr_cli.pipeline.noise import NoiseField
from tadsr_cli.pipeline.tiling import BlendName, Tile, TileGrid, pad_to_multiple

log = logging.getLogger(__name__)

TileProgress = Callable[[int, int], None]  # (tiles done, tiles total)


@dataclass
class TileOptions:
    """How an image is cut into tiles (sizes in LQ pixels).

    `tile = "auto"` (the default): the whole image as one tile when its run fits the memory budget (then every
    GroupNorm sees the whole image and nothing is blended: the fastest and the exact way), else the largest square
    tile whose batch fits (`tadsr_cli.pipeline.memory`); tiles chosen for memory use tile-local norms, since
    whole-image norms would hold every tile's activations at once. `tile = 0`: the whole image; `tile = N`: tiles
    of N px run in lockstep with whole-image GroupNorm statistics (`tadsr_cli.pipeline.lockstep`), equal to the
    whole-image output (73-85 dB measured with the shipped model), unless `whole_image_norms` is False.
    Overlap (16 px, the official `chop_stride` 448 of 512 HR px) exists only between tiles; 4 tiles per batch keep
    a GPU busy. On out-of-memory the lockstep is dropped first, then the tile halved.
    `memory_budget`: bytes a tile batch may use (default: from the device).
    """

    tile: int | str = "auto"
    overlap: int = 16
    batch: int = 4
    blend: BlendName = "cosine"
    whole_image_norms: bool = True
    memory_budget: int | None = None

    def validate(self) -> None:
        if isinstance(self.tile, str):
            text = self.tile.strip().lower()
            if text != "auto" and not text.isdigit():
                raise ConfigError(f"--tile {self.tile!r}: use auto, 0 (whole image) or a size in pixels")
            self.tile = "auto" if text == "auto" else int(text)
        if self.tile != "auto" and int(self.tile) < 0:
            raise ConfigError("--tile must be >= 0 (0 = whole image) or auto")
        if self.overlap < 0:
            raise ConfigError("--tile-overlap must be >= 0")
        if self.tile != "auto" and self.tile and self.overlap >= int(self.tile):
            raise ConfigError(f"--tile-overlap ({self.overlap}) must be smaller than --tile ({self.tile})")
        if self.batch < 1:
            raise ConfigError("--tile-batch must be >= 1")
        if self.blend not in ("cosine", "gaussian"):
            raise ConfigError(f"unknown blend {self.blend!r} (cosine or gaussian)")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ConfigError("the memory budget must be positive")


class Upscaler:
    """Tiled one-step upscaling with a deterministic global noise field.

    `upscale(rgb)` takes `H x W x 3` float32 in [0, 1] and returns `(scale*H) x (scale*W) x 3` float32 in [0, 1].
    On accelerator out-of-memory the tile size is halved (down to `lq_multiple`) and the image restarted; the
    smaller size is kept for later images/frames.
    """

    def __init__(self, engine: Engine, tiles: TileOptions | None = None, seed: int = 0,
                 noise_scale: float = 1.0) -> None:
        self.engine = engine
        self.tiles = TileOptions() if tiles is None else tiles
        self.tiles.validate()
        self.seed = int(seed)
        self.noise = NoiseField(self.seed, int(engine.latent_channels), scale=noise_scale)
        self._grids: dict[tuple[int, int, int], TileGrid] = {}
        # explicit tile size; None = auto (chosen per image), until an out-of-memory fixes one
        self._tile: int | None = None if self.tiles.tile == "auto" else int(self.tiles.tile)
        self._last_tile = 0 if self._tile is None else self._tile
        self._lockstep_ok = bool(self.tiles.whole_image_norms)
        self._warned_local = False
        self._whole_noise: tuple[tuple[int, int], np.ndarray] | None = None
        self._last_noise_key: tuple[int, int] | None = None

    @property
    def scale(self) -> int:
        return int(self.engine.scale)

    @property
    def noise_scale(self) -> float:
        return self.noise.scale

    @noise_scale.setter
    def noise_scale(self, value: float) -> None:
        """Change the temperature of the noise field (same pattern); video and images may use different ones."""
        if float(value) != self.noise.scale:
            self.noise = NoiseField(self.seed, int(self.engine.latent_channels), scale=float(value))
            self._whole_noise, self._last_noise_key = None, None

    @property
    def multiple(self) -> int:
        return int(self.engine.lq_multiple)

    @property
    def current_tile(self) -> int:
        """The tile size of the latest image (0 = whole image)."""
        return self._last_tile

    def tile_for(self, height: int, width: int) -> int:
        """The tile size for an (unpadded) LQ size: the explicit one, or the auto choice (0 = whole image)."""
        if self._tile is not None:
            return self._tile
        m = self.multiple
        ph, pw = -(-height // m) * m, -(-width // m) * m
        budget = self._budget()
        per_pixel = memory.bytes_per_pixel(self.engine)
        if ph * pw * per_pixel <= budget:
            return 0
        tile = memory.largest_tile(budget, per_pixel, self.tiles.batch, m)
        return max(tile, (self.tiles.overlap // m + 1) * m)  # tiles must be larger than their overlap

    def _budget(self) -> float:
        if self.tiles.memory_budget is not None:
            return float(self.tiles.memory_budget)
        return float(memory.budget_bytes(memory.engine_device(self.engine)))

    def grid(self, height: int, width: int, tile: int | None = None) -> TileGrid:
        """The tile grid for an (unpadded) LQ size (tile size: `tile_for` unless given)."""
        m = self.multiple
        ph, pw = -(-height // m) * m, -(-width // m) * m
        tile = self.tile_for(height, width) if tile is None else tile
        key = (ph, pw, tile)
        g = self._grids.get(key)
        if g is None:
            if len(self._grids) > 8:
                self._grids.clear()
            g = TileGrid.build(ph, pw, tile, self.tiles.overlap, m, self.scale, self.tiles.blend)
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
        cur = self._last_tile
        if cur > 0 and self._lockstep_ok and self._tile is not None:
            log.warning("out of memory with whole-image norms over %d px tiles; retrying with tile-local norms", cur)
            self._lockstep_ok = False
            return
        cur = cur if cur > 0 else max(-(-height // m) * m, -(-width // m) * m)
        new = (cur // 2 // m) * m
        if new < m:
            raise EngineUnavailableError(
                f"out of memory even with {cur} px tiles; try --tile-batch 1, --precision fp16 or --device cpu"
            ) from exc
        log.warning("out of memory with %s px tiles; retrying with %d px tiles",
                    self._last_tile or "whole-image", new)
        self._tile = new

    def _upscale_once(self, rgb: np.ndarray, progress: TileProgress | None) -> np.ndarray:
        h, w = rgb.shape[:2]
        s = self.scale
        lq = pad_to_multiple(np.ascontiguousarray(rgb, dtype=np.float32), self.multiple)
        lq = lq * 2.0 - 1.0  # [-1, 1]
        tile = self.tile_for(h, w)
        self._last_tile = tile
        g = self.grid(h, w, tile)
        if progress:
            progress(0, len(g.tiles))
        if len(g.tiles) == 1:
            out = self._whole_image(lq, g, h, w)
            if progress:
                progress(1, 1)
            return out
        batches = self._batches(g.tiles)
        acc = np.zeros((g.height * s, g.width * s, 3), dtype=np.float32)
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

    def _whole_image(self, lq: np.ndarray, g: TileGrid, h: int, w: int) -> np.ndarray:
        """One tile: no blend weights, no accumulator; [-1, 1] CHW straight to cropped [0, 1] HWC."""
        s = self.scale
        lq_b, nz_b = self._inputs(lq, g.tiles)
        res = self.engine.run(lq_b, nz_b).detach().to("cpu", torch.float32).numpy()
        if res.shape != (1, 3, g.height * s, g.width * s):
            raise RuntimeError(f"engine {self.engine.name} returned {res.shape}, expected "
                               f"{(1, 3, g.height * s, g.width * s)}")
        out = np.empty((h * s, w * s, 3), dtype=np.float32)
        np.add(res[0, :, : h * s, : w * s].transpose(1, 2, 0), 1.0, out=out)
        out *= 0.5
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def network_call(self, rgb: np.ndarray) -> Callable[[], None]:
        """A call that runs the engine alone on exactly what `upscale(rgb)` gives it: the same tile batches and
        inputs, with whole-image norms in lockstep where `upscale` would use them; no blending, no output.
        Benchmarks time it against `upscale` to see what the pipeline around the network costs."""
        lq = pad_to_multiple(np.ascontiguousarray(rgb, dtype=np.float32), self.multiple) * 2.0 - 1.0
        g = self.grid(rgb.shape[0], rgb.shape[1])
        batches = self._batches(g.tiles)
        inputs = [self._inputs(lq, group) for group in batches]
        lockstep = self._lockstep_engine(g)
        owned = [[g.owned_rect(t) for t in group] for group in batches]
        sizes = [(group[0].h, group[0].w) for group in batches]

        def run() -> None:
            if lockstep is None:
                for lq_b, nz_b in inputs:
                    self.engine.run(lq_b, nz_b)
                return
            with lockstep.whole_image_norms():
                run_lockstep(owned, sizes, lambda i, norms: lockstep.run(*inputs[i], norms=norms))

        return run

    def _batches(self, tiles: list[Tile]) -> list[list[Tile]]:
        """Tiles in model calls of at most `batch`; tiles of one call share a size (edge tiles can differ)."""
        bs = max(1, self.tiles.batch)
        return [same for i in range(0, len(tiles), bs) for same in _by_size(tiles[i:i + bs])]

    def _lockstep_engine(self, g: TileGrid) -> Any:
        """The engine that runs this grid with whole-image norms, or None: one tile (its norms already see the
        whole image), tiles chosen by `auto` for memory, option off or dropped after an out-of-memory, or an
        engine without GroupNorm support."""
        if len(g.tiles) < 2:
            return None
        if self._tile is None or not self._lockstep_ok:
            if not self._warned_local and (self._tile is None or self.tiles.whole_image_norms):  # not asked for
                self._warned_local = True
                log.warning("%d tiles of %d px are normalised each on its own (whole-image GroupNorm statistics "
                            "would need every tile's activations at once); the output differs slightly from a "
                            "whole-image run", len(g.tiles), self._last_tile)
            return None
        factory = getattr(self.engine, "lockstep_engine", None)
        return factory() if callable(factory) else None

    def _inputs(self, lq: np.ndarray, group: list[Tile]) -> tuple[Any, Any]:
        lq_b = np.stack([lq[t.y:t.y + t.h, t.x:t.x + t.w].transpose(2, 0, 1) for t in group])
        if len(group) == 1 and group[0].y == 0 and group[0].x == 0 and (group[0].h, group[0].w) == lq.shape[:2]:
            nz_b = self._frame_noise(group[0].h, group[0].w)
        else:
            nz_b = np.stack([self.noise.region(t.y, t.x, t.h, t.w) for t in group])
        return torch.from_numpy(lq_b), torch.from_numpy(nz_b)

    def _frame_noise(self, height: int, width: int) -> np.ndarray:
        """The whole-image noise `[1, C, h, w]`. Kept once a second image of the same size comes (video: made
        once per clip); a single image does not keep it (its memory would stay held through the encoding)."""
        key = (height, width)
        if self._whole_noise is not None and self._whole_noise[0] == key:
            return self._whole_noise[1]
        noise = self.noise.region(0, 0, height, width)[None]
        self._whole_noise = (key, noise) if self._last_noise_key == key else None
        self._last_noise_key = key
        return noise

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
