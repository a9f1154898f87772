"""The official ResShift denoiser `UNetModelSwin`: a guided-diffusion UNet whose attention blocks are Swin layers.

Constructor keywords are the official config keys (`DenoiserConfig` fields), and the state dict has the official
key names and shapes, so released checkpoints load strictly (see `reference/resshift/*_layout.json`).

Layout (per resolution level `l`, configured resolution `ds = image_size / 2**l`):

* `time_embed`: Linear(mc, 4mc), SiLU, Linear(4mc, 4mc) on a sinusoidal embedding [cos | sin] of the step index.
* `input_blocks.0`: 3x3 conv of `cat(x, lq)` (the LQ image joins the latent at the same size when
  `lq_size == image_size`; otherwise a small strided conv stack `feature_extractor` brings it down first).
* per level: `num_res_blocks[l]` blocks `[ResBlock, (SwinLayer)]` -- the Swin layer only after the *first* ResBlock
  of a level and only if `ds` is in `attention_resolutions` -- then a downsampler (except at the last level).
* `middle_block`: ResBlock, SwinLayer, ResBlock.
* `output_blocks`: mirror image with skip concatenations; Swin only after the first ResBlock of a level; an
  upsampler closes every level except level 0.
* `out`: GroupNorm, SiLU, 3x3 conv (`out[-1]`, zero-initialised by residual models).

All normalisations are 32-group GroupNorms computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.models.swin_blocks import (
    NON_ESSENTIAL_BUFFER_SUFFIXES,
    GroupNorm32,
    SwinLayer,
    buffer_keys,
)

__all__ = [
    "NON_ESSENTIAL_BUFFER_SUFFIXES",
    "UNetModelSwin",
    "buffer_keys",
    "required_multiple",
    "timestep_embedding",
]


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B, dim] = [cos(t f_i) | sin(t f_i)], f_i = max_period^(-i / (dim // 2))."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.reshape(-1, 1).float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _res_blocks_per_level(num_res_blocks: int | Sequence[int], levels: int) -> list[int]:
    if isinstance(num_res_blocks, int):
        return [num_res_blocks] * levels
    blocks = [int(n) for n in num_res_blocks]
    if len(blocks) != levels:
        raise ConfigError(f"num_res_blocks has {len(blocks)} entries but channel_mult has {levels} levels")
    return blocks


def _swin_windows(image_size: int, window_size: int, levels: int, attention_resolutions: Iterable[int]):
    """(level, effective window) for every level that holds a Swin layer (the middle block counts as the last)."""
    attn = set(int(a) for a in attention_resolutions)
    out = []
    for level in range(levels):
        ds = image_size // 2**level
        if ds in attn or level == levels - 1:
            out.append((level, min(window_size, ds)))
    return out


def required_multiple(cfg: Any) -> int:
    """The multiple the latent (= LQ) height and width must have for this denoiser.

    The map at level `l` is `H / 2**l` and must split into whole windows of that level's Swin layer (window
    `min(window_size, image_size / 2**l)`), and every level must halve exactly. Official net: 8 * 2**3 = 64.
    Accepts a `DenoiserConfig` or anything with the same attributes (or a dict of them).
    """
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    levels = len(get("channel_mult"))
    multiple = 2 ** (levels - 1)
    for level, window in _swin_windows(
        get("image_size"), get("window_size"), levels, get("attention_resolutions")
    ):
        multiple = math.lcm(multiple, window * 2**level)
    return multiple


def _check_groups(channels: int, where: str) -> None:
    if channels % 32:
        raise ConfigError(f"{where}: {channels} channels is not a multiple of 32 (GroupNorm with 32 groups)")


# ---------------------------------------------------------------------------------------------------------------
# Building blocks (guided-diffusion style)
# ---------------------------------------------------------------------------------------------------------------
class TimestepBlock(nn.Module):
    """A block whose forward takes the timestep embedding as a second argument."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepSequential(nn.Sequential):
    """Sequential container that hands the timestep embedding to the children that take it."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve the resolution: 3x3 stride-2 conv (`op`) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if out_channels != channels:
                raise ConfigError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution (nearest) and optionally apply a 3x3 conv (`conv`)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(TimestepBlock):
    """GroupNorm-SiLU-conv, timestep FiLM (scale/shift on the second norm), GroupNorm-SiLU-dropout-conv, + skip."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        _check_groups(channels, "ResBlock input")
        _check_groups(out_channels, "ResBlock output")
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        out_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(out_conv.weight)
        nn.init.zeros_(out_conv.bias)
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout), out_conv)
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


# ---------------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------------
class UNetModelSwin(nn.Module):
    """ResShift's Swin-UNet denoiser. `forward(x, timesteps, lq=None) -> x0_hat` (same size as `x`).

    `x`: [B, in_channels, H, W] (already divided by sqrt(kappa^2 eta_t + 1)); `timesteps`: [B] integer steps;
    `lq`: [B, 3, H, W] LQ image in [-1, 1] (or `lq_size / image_size` times larger with a feature extractor).
    H and W must be multiples of `required_multiple(cfg)`.
    """

    # Buffers that are functions of the config; a checkpoint may omit them (they are refilled on load).
    non_essential_buffer_suffixes: tuple[str, ...] = NON_ESSENTIAL_BUFFER_SUFFIXES

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        model_channels: int = 160,
        out_channels: int = 3,
        attention_resolutions: Sequence[int] = (64, 32, 16, 8),
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int | Sequence[int] = 2,
        conv_resample: bool = True,
        dims: int = 2,
        use_fp16: bool = False,
        num_head_channels: int = 32,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        swin_depth: int = 2,
        swin_embed_dim: int = 192,
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        cond_lq: bool = True,
        lq_size: int = 64,
    ) -> None:
        super().__init__()
        if dims != 2:
            raise ConfigError(f"only 2-D denoisers are supported (dims={dims})")
        levels = len(channel_mult)
        blocks = _res_blocks_per_level(num_res_blocks, levels)
        if num_head_channels > 0:
            if swin_embed_dim % num_head_channels:
                raise ConfigError(
                    f"swin_embed_dim {swin_embed_dim} is not a multiple of num_head_channels {num_head_channels}"
                )
            heads = swin_embed_dim // num_head_channels
        else:
            heads = 1  # the reference's default `num_heads`
        _check_groups(swin_embed_dim, "swin_embed_dim")
        attn_res = {int(a) for a in attention_resolutions}

        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.cond_lq = cond_lq
        # `use_fp16` is kept for config compatibility: precision is chosen by casting the module / autocast.
        self.use_fp16 = use_fp16
        self._multiple = required_multiple(
            {
                "image_size": image_size,
                "window_size": window_size,
                "channel_mult": list(channel_mult),
                "attention_resolutions": sorted(attn_res),
            }
        )

        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        # LQ conditioning: same size -> concatenated as is; larger (power-of-two ratio) -> strided conv stack.
        lq_channels = 0
        self.feature_extractor: nn.Module = nn.Identity()
        if cond_lq:
            if lq_size == image_size:
                lq_channels = 3
            else:
                ratio = lq_size / image_size
                n_down = round(math.log2(ratio)) if ratio > 0 else -1
                if n_down < 1 or 2**n_down != ratio:
                    raise ConfigError(
                        f"lq_size / image_size must be a power of two >= 1, got {lq_size}/{image_size}"
                    )
                layers: list[nn.Module] = []
                c_in, c = 3, 16
                for _ in range(n_down):
                    layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.SiLU(), Downsample(c, True, 2 * c)]
                    c *= 2
                    c_in = c
                self.feature_extractor = nn.Sequential(*layers)
                lq_channels = c

        def swin(ch: int, ds: int) -> SwinLayer:
            return SwinLayer(ch, swin_embed_dim, heads, window_size, swin_depth, ds, mlp_ratio, drop=dropout)

        def res(c_in: int, c_out: int | None = None, **kw: bool) -> ResBlock:
            return ResBlock(c_in, emb_dim, dropout, c_out, use_scale_shift_norm=use_scale_shift_norm, **kw)

        ch = first_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(in_channels + lq_channels, ch, 3, padding=1))]
        )
        skip_chans = [ch]
        ds = image_size
        for level, mult in enumerate(channel_mult):
            for j in range(blocks[level]):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attn_res and j == 0:
                    layers.append(swin(ch, ds))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != levels - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_chans.append(ch)
                ds //= 2

        self.middle_block = TimestepSequential(res(ch), swin(ch, ds), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(blocks[level] + 1):
                layers = [res(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attn_res and i == 0:
                    layers.append(swin(ch, ds))
                if level and i == blocks[level]:
                    layers.append(
                        res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch)
                    )
                    ds *= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(first_ch, out_channels, 3, padding=1))

    # -----------------------------------------------------------------------------------------------------------
    @property
    def multiple(self) -> int:
        """Latent height/width multiple this network needs (see `required_multiple`)."""
        return self._multiple

    def _check_size(self, x: Tensor) -> None:
        """Height/width must be multiples of `self.multiple` (no data-dependent control flow when traced)."""
        m = self._multiple
        if torch.jit.is_tracing():
            return  # legacy ONNX export: sizes are traced tensors; the exported graph keeps them dynamic
        if torch.compiler.is_compiling():
            # torch.export / dynamo: record the fact as a runtime assertion of the graph.
            torch._check(x.shape[-2] % m == 0)
            torch._check(x.shape[-1] % m == 0)
            return
        h, w = x.shape[-2:]
        if h % m or w % m:
            raise ValueError(f"denoiser input {h}x{w} is not a multiple of {m} (pad the LQ, crop back)")

    def forward(self, x: Tensor, timesteps: Tensor, lq: Tensor | None = None) -> Tensor:
        self._check_size(x)
        # Compute in the parameters' dtype (cast the module for half precision); GroupNorms run in float32.
        dtype = self.out[-1].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(dtype))
        h = x.to(dtype)
        if lq is not None:
            if not self.cond_lq:
                raise ValueError("this denoiser is not LQ-conditioned (cond_lq=False) but lq was given")
            h = torch.cat([h, self.feature_extractor(lq.to(dtype))], dim=1)
        elif self.cond_lq:
            raise ValueError("this denoiser is LQ-conditioned (cond_lq=True): pass lq")
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
