"""Latent spaces: the official LDM VQ-f4 (as a diffusers `VQModel`) and a lossless pixel-unshuffle.

Both expose the same small interface used by `DiffusionSR` and the engines:

* `encode(img) -> z`: images in [-1, 1] (NCHW, RGB) to the latent the diffusion runs in. For the VQ model this is the
  *pre-quantisation* latent (encoder, then `quant_conv`), exactly as ResShift's `VQModelTorch.encode`.
* `decode(z, quantize=True) -> img`: for the VQ model, `quantize=True` first replaces every latent vector by its
  nearest codebook entry (ResShift's `VQModelTorch.decode`); `quantize=False` skips that lookup.
* `factor`: spatial down-sampling factor (latent = image / factor).

The official checkpoint `autoencoder_vq_f4.pth` uses the LDM key layout; `ldm_to_diffusers_vq` and
`diffusers_to_ldm_vq` convert between that layout and the diffusers one (exact inverses of each other).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tadsr_cli.base.errors import CheckpointError, ConfigError
from tadsr_cli.models.config import AutoencoderConfig

__all__ = [
    "PixelUnshuffleAutoencoder",
    "VQAutoencoder",
    "build_autoencoder",
    "diffusers_to_ldm_vq",
    "ldm_to_diffusers_vq",
    "ldm_vq_config",
]


# ---------------------------------------------------------------------------------------------------------------
# Key conversion LDM <-> diffusers
# ---------------------------------------------------------------------------------------------------------------
# Parameter names inside a resnet block: LDM name -> diffusers name.
_RESNET_LDM_TO_DIFF = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_RESNET_DIFF_TO_LDM = {v: k for k, v in _RESNET_LDM_TO_DIFF.items()}
# Mid-block attention: LDM name -> diffusers name. q/k/v/proj_out are 1x1 convs in LDM and Linear in diffusers.
_ATTN_LDM_TO_DIFF = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_DIFF_TO_LDM = {v: k for k, v in _ATTN_LDM_TO_DIFF.items()}
_ATTN_LINEAR_DIFF = {"to_q", "to_k", "to_v", "to_out.0"}
_WB = r"(weight|bias)"
_IDENTITY = re.compile(
    r"^(quantize\.embedding\.weight|(quant_conv|post_quant_conv)\.(weight|bias)"
    r"|(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias))$"
)

# Each rule: (compiled regex on the source key, function(match, n_levels) -> (target key, reshape)).
# reshape is "squeeze" (drop trailing 1x1), "unsqueeze" (add it back) or None.
_Rule = tuple[re.Pattern[str], Callable[[re.Match[str], int], tuple[str, str | None]]]


def _attn_ldm(m: re.Match[str], n: int) -> tuple[str, str | None]:
    part, name, wb = m.group(1), m.group(2), m.group(3)
    diff_name = _ATTN_LDM_TO_DIFF[name]
    reshape = "squeeze" if (diff_name in _ATTN_LINEAR_DIFF and wb == "weight") else None
    return f"{part}.mid_block.attentions.0.{diff_name}.{wb}", reshape


def _attn_diff(m: re.Match[str], n: int) -> tuple[str, str | None]:
    part, name, wb = m.group(1), m.group(2), m.group(3)
    reshape = "unsqueeze" if (name in _ATTN_LINEAR_DIFF and wb == "weight") else None
    return f"{part}.mid.attn_1.{_ATTN_DIFF_TO_LDM[name]}.{wb}", reshape


_RES_LDM = "(" + "|".join(_RESNET_LDM_TO_DIFF) + ")"
_RES_DIFF = "(" + "|".join(_RESNET_DIFF_TO_LDM) + ")"

_LDM_TO_DIFF_RULES: list[_Rule] = [
    (re.compile(rf"^(encoder|decoder)\.norm_out\.{_WB}$"), lambda m, n: (f"{m[1]}.conv_norm_out.{m[2]}", None)),
    (
        re.compile(rf"^encoder\.down\.(\d+)\.block\.(\d+)\.{_RES_LDM}\.{_WB}$"),
        lambda m, n: (f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_RESNET_LDM_TO_DIFF[m[3]]}.{m[4]}", None),
    ),
    (
        re.compile(rf"^encoder\.down\.(\d+)\.downsample\.conv\.{_WB}$"),
        lambda m, n: (f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}", None),
    ),
    (
        re.compile(rf"^decoder\.up\.(\d+)\.block\.(\d+)\.{_RES_LDM}\.{_WB}$"),
        lambda m, n: (
            f"decoder.up_blocks.{n - 1 - int(m[1])}.resnets.{m[2]}.{_RESNET_LDM_TO_DIFF[m[3]]}.{m[4]}",
            None,
        ),
    ),
    (
        re.compile(rf"^decoder\.up\.(\d+)\.upsample\.conv\.{_WB}$"),
        lambda m, n: (f"decoder.up_blocks.{n - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}", None),
    ),
    (
        re.compile(rf"^(encoder|decoder)\.mid\.block_([12])\.{_RES_LDM}\.{_WB}$"),
        lambda m, n: (
            f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{_RESNET_LDM_TO_DIFF[m[3]]}.{m[4]}",
            None,
        ),
    ),
    (re.compile(rf"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.{_WB}$"), _attn_ldm),
]

_DIFF_TO_LDM_RULES: list[_Rule] = [
    (re.compile(rf"^(encoder|decoder)\.conv_norm_out\.{_WB}$"), lambda m, n: (f"{m[1]}.norm_out.{m[2]}", None)),
    (
        re.compile(rf"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.{_RES_DIFF}\.{_WB}$"),
        lambda m, n: (f"encoder.down.{m[1]}.block.{m[2]}.{_RESNET_DIFF_TO_LDM[m[3]]}.{m[4]}", None),
    ),
    (
        re.compile(rf"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.{_WB}$"),
        lambda m, n: (f"encoder.down.{m[1]}.downsample.conv.{m[2]}", None),
    ),
    (
        re.compile(rf"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.{_RES_DIFF}\.{_WB}$"),
        lambda m, n: (
            f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{_RESNET_DIFF_TO_LDM[m[3]]}.{m[4]}",
            None,
        ),
    ),
    (
        re.compile(rf"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.{_WB}$"),
        lambda m, n: (f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}", None),
    ),
    (
        re.compile(rf"^(encoder|decoder)\.mid_block\.resnets\.([01])\.{_RES_DIFF}\.{_WB}$"),
        lambda m, n: (
            f"{m[1]}.mid.block_{int(m[2]) + 1}.{_RESNET_DIFF_TO_LDM[m[3]]}.{m[4]}",
            None,
        ),
    ),
    (
        re.compile(rf"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.{_WB}$"),
        _attn_diff,
    ),
]


def _num_levels(keys: list[str], down: str, up: str) -> int:
    """Number of resolution levels, from the largest encoder-down / decoder-up index present."""
    pat = re.compile(rf"^(?:encoder\.{down}|decoder\.{up})\.(\d+)\.")
    idx = [int(m.group(1)) for k in keys if (m := pat.match(k))]
    return max(idx) + 1 if idx else 0


def _convert(
    sd: Mapping[str, Tensor], rules: list[_Rule], n: int, source: str
) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if _IDENTITY.match(key):
            new_key, reshape = key, None
        else:
            for pat, fn in rules:
                m = pat.match(key)
                if m:
                    new_key, reshape = fn(m, n)
                    break
            else:
                unknown.append(key)
                continue
        if reshape == "squeeze":
            if value.ndim != 4 or value.shape[2:] != (1, 1):
                raise CheckpointError(f"{key}: expected a 1x1 conv weight, got shape {tuple(value.shape)}")
            value = value[:, :, 0, 0]
        elif reshape == "unsqueeze":
            if value.ndim != 2:
                raise CheckpointError(f"{key}: expected a Linear weight, got shape {tuple(value.shape)}")
            value = value[:, :, None, None]
        if new_key in out:
            raise CheckpointError(f"{source} state dict: two keys map to {new_key!r}")
        out[new_key] = value
    if unknown:
        shown = ", ".join(unknown[:12]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 12 else "")
        raise CheckpointError(f"{source} VQ state dict has key(s) with no counterpart: {shown}")
    return out


def ldm_to_diffusers_vq(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an LDM `VQModel`/`VQModelTorch` state dict (official `autoencoder_vq_f4.pth`) to diffusers `VQModel` keys.

    Attention q/k/v/proj_out 1x1 conv weights become Linear weights. Unknown keys raise `CheckpointError`.
    """
    n = _num_levels(list(sd), "down", "up")
    return _convert(sd, _LDM_TO_DIFF_RULES, n, "LDM")


def diffusers_to_ldm_vq(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of `ldm_to_diffusers_vq`."""
    n = _num_levels(list(sd), "down_blocks", "up_blocks")
    return _convert(sd, _DIFF_TO_LDM_RULES, n, "diffusers")


# ---------------------------------------------------------------------------------------------------------------
# Autoencoders
# ---------------------------------------------------------------------------------------------------------------
class VQAutoencoder(nn.Module):
    """LDM VQ autoencoder as a diffusers `VQModel` (held in `self.vq`; state-dict keys are `vq.<diffusers key>`)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        from diffusers import VQModel  # deferred: diffusers is slow to import

        levels = len(cfg.block_out_channels)
        if cfg.factor != 2 ** (levels - 1):
            raise ConfigError(
                f"autoencoder.factor {cfg.factor} does not match {levels} levels "
                f"(block_out_channels {list(cfg.block_out_channels)} down-sample by {2 ** (levels - 1)})"
            )
        for ch in cfg.block_out_channels:
            if ch % cfg.norm_num_groups:
                raise ConfigError(f"autoencoder: {ch} channels are not divisible by {cfg.norm_num_groups} groups")
        self.factor = cfg.factor
        self.latent_channels = cfg.latent_channels
        self.vq = VQModel(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels,
            vq_embed_dim=cfg.vq_embed_dim,
            num_vq_embeddings=cfg.num_vq_embeddings,
            norm_num_groups=cfg.norm_num_groups,
            mid_block_add_attention=cfg.mid_block_add_attention,
            scaling_factor=1.0,
        )

    def encode(self, img: Tensor) -> Tensor:
        """Pre-quantisation latent: `quant_conv(encoder(img))` (= diffusers `VQModel.encode(...).latents`)."""
        return self.vq.quant_conv(self.vq.encoder(img))

    def quantize(self, z: Tensor) -> Tensor:
        """Nearest codebook entry per latent vector, as the LDM `VectorQuantizer2` computes it.

        Distances are `|z|^2 + |e|^2 - 2 z.e` (the LDM formula; diffusers uses `torch.cdist`, which can break
        near-ties differently), and the result is `z + (z_q - z).detach()` (straight-through, as LDM).
        """
        emb = self.vq.quantize.embedding.weight
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        d = (
            flat.pow(2).sum(dim=1, keepdim=True)
            + emb.pow(2).sum(dim=1)
            - 2.0 * torch.einsum("bd,dn->bn", flat, emb.t())
        )
        idx = torch.argmin(d, dim=1)
        z_q = F.embedding(idx, emb).view(b, h, w, c).permute(0, 3, 1, 2)
        return z + (z_q - z).detach()

    def decode(self, z: Tensor, quantize: bool = True) -> Tensor:
        """`decoder(post_quant_conv(quantize(z)))`; `quantize=False` skips the codebook lookup."""
        if quantize:
            z = self.quantize(z)
        return self.vq.decoder(self.vq.post_quant_conv(z))

    def load_ldm_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        """Load an LDM-layout state dict (official `autoencoder_vq_f4.pth`), strictly."""
        self.load_diffusers_state_dict(ldm_to_diffusers_vq(sd))

    def load_diffusers_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        """Load a diffusers `VQModel` state dict strictly; mismatches raise `CheckpointError`."""
        own = self.vq.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        wrong = [
            f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}"
            for k in own
            if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
        ]
        problems = []
        if missing:
            problems.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            problems.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if wrong:
            problems.append(f"shape mismatch {wrong[:8]}{' ...' if len(wrong) > 8 else ''}")
        if problems:
            raise CheckpointError("VQ autoencoder weights do not fit the configuration: " + "; ".join(problems))
        self.vq.load_state_dict(dict(sd), strict=True)


class PixelUnshuffleAutoencoder(nn.Module):
    """Lossless, parameter-free latent: `pixel_unshuffle(img, factor)` (3 * factor**2 channels) and its inverse."""

    def __init__(self, factor: int = 4) -> None:
        super().__init__()
        if factor < 1:
            raise ConfigError(f"pixel-unshuffle factor must be >= 1, got {factor}")
        self.factor = factor
        self.latent_channels = 3 * factor**2

    def encode(self, img: Tensor) -> Tensor:
        return F.pixel_unshuffle(img, self.factor)

    def decode(self, z: Tensor, quantize: bool = True) -> Tensor:  # quantize: interface only
        return F.pixel_shuffle(z, self.factor)


def ldm_vq_config(ddconfig: Mapping, n_embed: int, embed_dim: int) -> AutoencoderConfig:
    """`AutoencoderConfig` for an LDM `VQModelTorch(ddconfig, n_embed, embed_dim)` (official YAML `autoencoder.params`).

    Only what a diffusers `VQModel` can express is accepted: RGB in/out, no attention outside the middle block,
    `double_z` false, `z_channels == embed_dim`.
    """
    dd = dict(ddconfig)
    problems = []
    if dd.get("attn_resolutions"):
        problems.append(f"attn_resolutions {dd['attn_resolutions']} (only the mid-block attention is supported)")
    if dd.get("double_z", False):
        problems.append("double_z true (a KL autoencoder, not VQ)")
    if dd.get("in_channels", 3) != 3 or dd.get("out_ch", 3) != 3:
        problems.append("in/out channels other than 3")
    if dd.get("z_channels", embed_dim) != embed_dim:
        problems.append(f"z_channels {dd.get('z_channels')} != embed_dim {embed_dim}")
    if problems:
        raise ConfigError("LDM VQ config not supported: " + "; ".join(problems))
    ch_mult = list(dd["ch_mult"])
    return AutoencoderConfig(
        kind="vq",
        factor=2 ** (len(ch_mult) - 1),
        block_out_channels=[int(dd["ch"]) * int(m) for m in ch_mult],
        layers_per_block=int(dd["num_res_blocks"]),
        latent_channels=int(embed_dim),
        vq_embed_dim=int(embed_dim),
        num_vq_embeddings=int(n_embed),
    )


def build_autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    if cfg.kind == "vq":
        return VQAutoencoder(cfg)
    if cfg.kind == "pixel_unshuffle":
        # Channels are 3 * factor**2 by construction (`AutoencoderConfig.channels`); latent_channels is not used.
        return PixelUnshuffleAutoencoder(cfg.factor)
    raise ConfigError(f"unknown autoencoder kind {cfg.kind!r}")
