"""Time-aware latent discriminator of TAD-SR (DESIGN.md 1.2, item 3).

Features come from the *frozen teacher's* encoder half (the `UNetModelSwin` input blocks and middle block) run on a
noised latent `x_t` at step `t` with the LQ image; each selected scale is modulated by the step:

    s, b = Linear(SiLU(sinusoidal(t)))                              (per scale)
    f'   = f + Conv3x3_zero(SiLU(GroupNorm(f) * (1 + s) + b))       (zero-initialised: starts as f)

and scored by a small spectral-normalised 1-D conv head over the flattened positions. The logits of all scales are
concatenated per sample ([B, N]); the hinge losses average over them.

Trainable: the FiLM layers and the heads only. The teacher is held by reference (not a submodule), so it is not
in `parameters()` / `state_dict()` and never receives gradient (its parameters have `requires_grad=False`), while
a fake input carries gradient through the frozen encoder back to the student.

Official layout (`channel_mult [1,2,2,4]`, 2 res-blocks per level): input blocks 3, 6, 9 (the downsamplers) and 11
(the last block) plus the middle block, i.e. the end of every resolution level; `default_feature_blocks` applies
the same rule to smaller configs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.models.config import DenoiserConfig
from tadsr_cli.models.schedule import ResShiftSchedule
from tadsr_cli.models.unet_swin import timestep_embedding

__all__ = ["FiLM", "ScaleHead", "TimeAwareDiscriminator", "default_feature_blocks", "input_block_channels"]


def _blocks_per_level(cfg: DenoiserConfig) -> list[int]:
    n = cfg.num_res_blocks
    return [int(n)] * len(cfg.channel_mult) if isinstance(n, int) else [int(v) for v in n]


def input_block_channels(cfg: DenoiserConfig) -> list[int]:
    """Channels of every input block's output, in order (the skip channels of the UNet)."""
    mult, blocks = cfg.channel_mult, _blocks_per_level(cfg)
    ch = int(mult[0] * cfg.model_channels)
    chans = [ch]
    for level, m in enumerate(mult):
        for _ in range(blocks[level]):
            ch = int(m * cfg.model_channels)
            chans.append(ch)
        if level != len(mult) - 1:
            chans.append(ch)
    return chans


def default_feature_blocks(cfg: DenoiserConfig) -> list[int]:
    """Input blocks that end a resolution level: each downsampler, and the last block ([3, 6, 9, 11] officially)."""
    blocks = _blocks_per_level(cfg)
    idx, out = 0, []
    for level in range(len(cfg.channel_mult)):
        idx += blocks[level]
        if level != len(cfg.channel_mult) - 1:
            idx += 1
        out.append(idx)
    return out


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


class FiLM(nn.Module):
    """Time conditioning of one feature scale: f + zero_conv(SiLU(GN(f) * (1 + s) + b)), (s, b) = Linear(SiLU(emb))."""

    def __init__(self, channels: int, time_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * channels))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, f: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb).to(f.dtype)[:, :, None, None].chunk(2, dim=1)
        # NCHW for the norm: torch 2.13's CPU GroupNorm backward segfaults on a channels_last input that needs no
        # gradient (the teacher's features in the D step); a no-op for NCHW features
        h = self.norm(f.float().contiguous()).to(f.dtype) * (1 + scale) + shift
        return f + self.conv(torch.nn.functional.silu(h))


class ScaleHead(nn.Module):
    """Spectral-normalised 1-D conv head over the flattened positions: [B, C, H, W] -> [B, H*W] logits."""

    def __init__(self, channels: int, hidden: int, kernel: int = 9) -> None:
        super().__init__()
        self.inp = spectral_norm(nn.Conv1d(channels, hidden, 1))
        self.mid = spectral_norm(
            nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, padding_mode="circular")
        )
        self.cls = spectral_norm(nn.Conv1d(hidden, 1, 1))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, f: Tensor) -> Tensor:
        h = self.act(self.inp(f.flatten(2)))
        h = self.act(h + self.mid(h))
        return self.cls(h).flatten(1)


class TimeAwareDiscriminator(nn.Module):
    """D(x_t, t, lq) -> logits [B, N] from the frozen teacher encoder's multi-scale features."""

    def __init__(
        self,
        teacher_denoiser: nn.Module,
        denoiser_config: DenoiserConfig,
        schedule: ResShiftSchedule,
        blocks: Sequence[int] | None = None,
        middle: bool = True,
        hidden: int = 128,
        time_dim: int = 128,
        kernel: int = 9,
    ) -> None:
        super().__init__()
        chans = input_block_channels(denoiser_config)
        blocks = sorted(
            set(default_feature_blocks(denoiser_config) if blocks is None else [int(b) for b in blocks])
        )
        bad = [b for b in blocks if not 0 <= b < len(chans)]
        if bad:
            raise ConfigError(
                f"discriminator.blocks {bad} outside the teacher's input blocks [0, {len(chans) - 1}]"
            )
        if not blocks and not middle:
            raise ConfigError("the discriminator needs at least one feature block or the middle block")
        # Held by reference: not a submodule (no parameters, no state_dict entries, no .to() from here).
        object.__setattr__(self, "_encoder", teacher_denoiser)
        self.schedule = schedule
        self.blocks = list(blocks)
        self.middle = middle
        self.time_dim = time_dim
        scale_chans = [chans[b] for b in self.blocks] + ([chans[-1]] if middle else [])
        self.film = nn.ModuleList(FiLM(c, time_dim) for c in scale_chans)
        self.heads = nn.ModuleList(ScaleHead(c, hidden, kernel) for c in scale_chans)

    @property
    def encoder(self) -> nn.Module:
        return self._encoder  # type: ignore[attr-defined]

    def features(self, x_t: Tensor, t: Tensor, lq: Tensor) -> list[Tensor]:
        """The teacher's encoder-half features at the selected blocks (+ middle), input scaled as the teacher's."""
        enc = self.encoder
        x = x_t * self.schedule.input_scale(t, x_t)
        dtype = x.dtype
        emb = enc.time_embed(timestep_embedding(t, enc.model_channels).to(dtype))
        if enc.cond_lq:
            x = torch.cat([x, enc.feature_extractor(lq.to(x.dtype))], dim=1)
        h = x
        feats: list[Tensor] = []
        last = max(self.blocks) if self.blocks else -1
        wanted = set(self.blocks)
        for i, block in enumerate(enc.input_blocks):
            if i > last and not self.middle:
                break
            h = block(h, emb)
            if i in wanted:
                feats.append(h)
        if self.middle:
            feats.append(enc.middle_block(h, emb))
        return feats

    def forward(self, x_t: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        return self.score(self.features(x_t, t, lq), t)

    def score(self, feats: list[Tensor], t: Tensor) -> Tensor:
        """Logits [B, N] from features that `features` computed (so a caller can use them twice)."""
        temb = timestep_embedding(t, self.time_dim).to(feats[0].dtype)
        logits = [head(film(f, temb)) for f, film, head in zip(feats, self.film, self.heads, strict=True)]
        return torch.cat(logits, dim=1)
