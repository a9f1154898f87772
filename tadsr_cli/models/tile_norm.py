"""Tile-invariant GroupNorm: the tiles of one image are normalised with the statistics of the whole image.

A GroupNorm normalises with the mean and variance of its input over the whole map, so a network run tile by tile
normalises every tile differently and the output changes over whole tiles, not only at seams. Here every
GroupNorm of a model (denoiser and autoencoder) can instead

* *exchange*: compute its input's moments `(count, mean, M2)` per group over the pixels the tile *owns* (the
  tiles' owned regions partition the image, so each pixel counts once), hand them to an `exchange` callable that
  returns the whole-image `(mean, variance)` per group, and normalise with that. Run all tiles in lockstep
  (`tadsr_cli.pipeline.lockstep`: every tile waits at each norm until all tiles have delivered their moments) and
  the result is the whole-image network's, tile by tile;
* or *replay*: normalise with given statistics (`stats`, e.g. those an exchange produced), for recomputing a
  tile outside the lockstep.

Why lockstep and not a statistics pass followed by an output pass: each norm's statistics depend on how every
earlier norm normalised, so statistics gathered with tile-local norms are inconsistent with the whole-image
ones, and applying them is *worse* than tile-local norms in the middle of the network (measured: repeated
gather/apply passes fix one norm per pass). Lockstep gets every norm exact in one pass at the cost of holding
all tiles' suspended activations.

Norm calls are numbered in call order within one forward (`stats` concatenates every call's groups), which also
covers a network called several times per forward (teacher sampling). Moments and normalisation run in float32
whatever the compute precision, as `GroupNorm32` does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Exchange = Callable[[Tensor], Tensor]  # tile moments [B, G, 3] -> whole-image (mean, variance) [G, 2]


Rect = tuple[int, int, int, int]  # (y0, y1, x0, x1): rows y0..y1-1, columns x0..x1-1


class TileNormState:
    """How the GroupNorms of one forward (inside `whole_image_norms` + `norm_state`) get their statistics.

    * `exchange` + `owned` (per batch entry, the `(y0, y1, x0, x1)` rectangle of the tile it owns, in the tile's
      own input pixels): the lockstep mode above. At a map 2**k times the input size a pixel belongs to the tile
      owning its top-left input pixel (`scale_rect`); tile origins are multiples of the network's downsampling,
      so every pixel of every level is owned by exactly one tile of the image.
    * `stats` (`[N, 2]` mean, variance for the N groups of all norm calls): the replay mode.
    * neither: ordinary GroupNorm.
    `used` collects the statistics every call normalised with (`[G, 2]` each), so a tile can be replayed.
    """

    def __init__(self, stats: Tensor | None = None, owned: Sequence[Rect] | None = None,
                 exchange: Exchange | None = None, size: tuple[int, int] | None = None) -> None:
        if (owned is None) != (exchange is None) or (owned is not None and size is None):
            raise ValueError("lockstep norms need `owned`, `exchange` and the input `size`")
        self.stats = stats
        self.owned = list(owned) if owned is not None else None
        self.exchange = exchange
        self.size = size
        self.used: list[Tensor] = []
        self._offset = 0

    def replay_stats(self) -> Tensor:
        """`[N, 2]`: every statistic used so far, in call order (the `stats` of a replay)."""
        return torch.cat(self.used, dim=0)

    def normalize(self, norm: nn.GroupNorm, x: Tensor) -> Tensor:
        groups = int(norm.num_groups)
        weight = None if norm.weight is None else norm.weight.float()
        bias = None if norm.bias is None else norm.bias.float()
        if self.exchange is not None:
            stats = self.exchange(self._moments(x, groups)).to(x.device, torch.float32)
        elif self.stats is not None:
            stats = self.stats[self._offset:self._offset + groups]
        else:
            return F.group_norm(x.float(), groups, weight, bias, norm.eps).to(x.dtype)
        if stats.shape != (groups, 2):
            raise ValueError(f"norm call {len(self.used)}: statistics {tuple(stats.shape)}, expected ({groups}, 2)")
        self._offset += groups
        self.used.append(stats)
        return _normalize_with(x, stats, groups, weight, bias, norm.eps)

    def _moments(self, x: Tensor, groups: int) -> Tensor:
        """`[B, G, 3]` (count, mean, M2) of every group over each tile's owned pixels at `x`'s resolution."""
        assert self.owned is not None and self.size is not None
        h, w = self.size
        if x.ndim == 3:  # [B, C, H*W]: attention blocks flatten the map before their norm
            k = _power_of_two_factor_flat(int(x.shape[2]), h, w)
            x = x.reshape(x.shape[0], x.shape[1], _scaled(h, k), _scaled(w, k))
        elif x.ndim == 4:
            k = _power_of_two_factor(int(x.shape[2]), h, int(x.shape[3]), w)
        else:
            raise ValueError(f"tile-invariant norm: unsupported input shape {tuple(x.shape)}")
        in_place = x.dtype == torch.float32 and x.is_contiguous()
        out = []
        for i, rect in enumerate(self.owned):
            y0, y1, x0, x1 = scale_rect(rect, k)
            region = x[i, :, y0:y1, x0:x1]
            if not in_place:  # one fused copy of the owned pixels: float32, channel planes contiguous (a
                # channels_last or half-precision map reduces several times slower, and converting it whole first
                # costs two passes over the map)
                region = region.to(torch.float32, memory_format=torch.contiguous_format)
            out.append(region_moments(region, groups, (0, int(region.shape[1]), 0, int(region.shape[2]))))
        return torch.stack(out)


def _power_of_two_factor(height: int, h: int, width: int, w: int) -> int:
    """k with height = h * 2**k (k may be negative) and the same for the width."""
    for k in range(-8, 9):
        if _scaled(h, k) == height and _scaled(w, k) == width:
            return k
    raise ValueError(f"tile-invariant norm: map {height}x{width} is not a power-of-two scale of {h}x{w}")


def _power_of_two_factor_flat(length: int, h: int, w: int) -> int:
    for k in range(-8, 9):
        if _scaled(h, k) * _scaled(w, k) == length:
            return k
    raise ValueError(f"tile-invariant norm: {length} positions are not a power-of-two scale of {h}x{w}")


def _scaled(n: int, k: int) -> int:
    return n << k if k >= 0 else (n >> -k if n % (1 << -k) == 0 else -1)


def scale_rect(rect: Rect, k: int) -> Rect:
    """`rect` at a map 2**k times the size: at k < 0 a pixel i belongs to it when pixel i * 2**-k does."""
    if k >= 0:
        return tuple(v << k for v in rect)  # type: ignore[return-value]
    step = 1 << -k
    return tuple(-(-v // step) for v in rect)  # type: ignore[return-value]


def region_moments(x: Tensor, groups: int, rect: Rect) -> Tensor:
    """`[G, 3]`: (count, mean, M2) of each group of `x` `[C, H, W]` over the rectangle `rect`."""
    y0, y1, x0, x1 = rect
    c = int(x.shape[0])
    region = x[:, y0:y1, x0:x1]
    count = float(c // groups * region.shape[1] * region.shape[2])
    if count == 0:
        return torch.zeros((groups, 3), dtype=torch.float32, device=x.device)
    # Two plain reductions (mean, then squared deviations): several times faster than torch.var_mean on CPU,
    # and centred, so float32 keeps the variance accurate.
    grouped = region.unflatten(0, (groups, c // groups))
    mean = grouped.sum(dim=(1, 2, 3)) / count
    dev = grouped - mean[:, None, None, None]
    m2 = (dev * dev).sum(dim=(1, 2, 3))
    return torch.stack([torch.full_like(mean, count), mean, m2], dim=-1)


def _normalize_with(x: Tensor, stats: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None,
                    eps: float) -> Tensor:
    """GroupNorm of `x` with given per-group (mean, variance): an inference batch norm with the group's values
    repeated per channel (one fused kernel). Half-precision `x` with float32 statistics computes in float32 and
    rounds once, as `GroupNorm32` does, without converting the map first."""
    per = int(x.shape[1]) // groups
    mean = stats[:, 0].float().repeat_interleave(per)
    var = stats[:, 1].float().repeat_interleave(per)
    if x.ndim == 3:
        return F.batch_norm(x.unsqueeze(-1), mean, var, weight, bias, False, 0.0, eps).squeeze(-1)
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)


_current = threading.local()  # the TileNormState of the forward running in this thread


@contextlib.contextmanager
def norm_state(state: TileNormState | None) -> Iterator[None]:
    """Norms swapped in by `whole_image_norms` follow `state` in this thread for the block (None: ordinary)."""
    previous = getattr(_current, "state", None)
    _current.state = state
    try:
        yield
    finally:
        _current.state = previous


class _StateNorm(nn.Module):
    """Stands in for one GroupNorm inside `whole_image_norms`: follows the calling thread's `TileNormState`, or
    is the original GroupNorm when the thread has none (so other users of the model see no change)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        state = getattr(_current, "state", None)
        return self.norm(x) if state is None else state.normalize(self.norm, x)


@contextlib.contextmanager
def whole_image_norms(root: nn.Module) -> Iterator[None]:
    """Every `nn.GroupNorm` under `root` follows `norm_state` for the block (swapped back afterwards).

    Swap once around all threads of a lockstep run; each thread then sets its own state with `norm_state`.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, _StateNorm(child))
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


class GroupMoments:
    """Running whole-image (count, mean, M2) per group, merged from tiles' moments in float64 (Chan et al.)."""

    def __init__(self) -> None:
        self.count: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, moments: np.ndarray) -> None:
        """Merge `[B, N, 3]` or `[N, 3]` moments (tiles with count 0 add nothing)."""
        arr = np.asarray(moments, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        for tile in arr:
            n_b, mean_b, m2_b = tile[:, 0], tile[:, 1], tile[:, 2]
            if self.count is None:
                self.count, self.mean, self.m2 = n_b.copy(), mean_b.copy(), m2_b.copy()
                continue
            if tile.shape[0] != self.count.shape[0]:
                raise ValueError(f"moments for {tile.shape[0]} groups, expected {self.count.shape[0]}")
            assert self.mean is not None and self.m2 is not None
            total = self.count + n_b
            safe = np.maximum(total, 1.0)
            delta = mean_b - self.mean
            self.mean = self.mean + delta * n_b / safe
            self.m2 = self.m2 + m2_b + delta * delta * self.count * n_b / safe
            self.count = total

    @property
    def groups(self) -> int:
        return 0 if self.count is None else int(self.count.shape[0])

    def mean_var(self) -> np.ndarray:
        """`[N, 2]` float32 (mean, biased variance) of every group, as GroupNorm uses them."""
        if self.count is None or self.mean is None or self.m2 is None:
            raise ValueError("no moments were added")
        var = self.m2 / np.maximum(self.count, 1.0)
        return np.stack([self.mean, np.maximum(var, 0.0)], axis=1).astype(np.float32)
