"""Swin transformer pieces of the official ResShift denoiser, working on NCHW feature maps.

The official network runs its Swin layers directly on convolutional feature maps: the "patch embedding" is a 1x1
convolution, the normalisation layers are 32-group GroupNorms (not LayerNorms) and the MLP is a pair of 1x1
convolutions. Only the window attention itself works on token sequences.

Two details are reproduced on purpose because released checkpoints were trained with them:

* Window size and shift are fixed at construction from the *configured* resolution (`image_size / 2**level`):
  a level whose configured resolution is not larger than the window uses one window of that size and no shift,
  whatever the actual input size.
* The shifted-window attention mask of the reference is not the textbook 2-D one. Its mask image is indexed one
  axis off, so regions are labelled along the height only (rows [0, H-w) -> 0, [H-w, H-s) -> 1, [H-s, H) -> 2),
  and its mask windows are flattened column-major while the attention tokens are row-major, so token (i, j) of a
  window in window-row r carries the label of image row r*w + j. `shifted_window_mask` builds exactly that mask
  (the stored `attn_mask` buffers of the reference equal it bit for bit); a textbook mask does not reproduce the
  reference outputs.

Everything that depends on the input size (the mask) is computed from tensor shapes with tensor ops, so the blocks
trace with symbolic height/width (ONNX export with dynamic axes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Buffers that are pure functions of the configuration. They appear in `state_dict()` (the official layout has
# them), but a checkpoint may omit them: loading fills them from the module's own values.
NON_ESSENTIAL_BUFFER_SUFFIXES: tuple[str, ...] = ("relative_position_index", "attn_mask")

# Additive value the reference uses for masked attention logits (not -inf: kept for bit-level parity).
MASK_VALUE = -100.0


def buffer_keys(state_dict_keys) -> list[str]:
    """The keys among `state_dict_keys` that name recomputable buffers (safe to drop from a checkpoint)."""
    return [k for k in state_dict_keys if k.rsplit(".", 1)[-1] in NON_ESSENTIAL_BUFFER_SUFFIXES]


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm computed in float32 and cast back (keeps half-precision inference stable)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def _fill_missing_buffers(module: nn.Module, state_dict: dict, prefix: str, *_args) -> None:
    """Load-state-dict pre-hook: supply recomputable buffers a checkpoint does not carry."""
    for name, buf in module.named_buffers(recurse=False):
        if name in NON_ESSENTIAL_BUFFER_SUFFIXES and buf is not None and prefix + name not in state_dict:
            state_dict[prefix + name] = buf


def relative_position_index(window: int) -> Tensor:
    """[N, N] index into the (2w-1)^2 bias table for every (query, key) pair of a w x w window (N = w*w).

    Tokens are numbered row-major; the index of the pair (p, q) is (dy + w - 1) * (2w - 1) + (dx + w - 1) with
    (dy, dx) = position(p) - position(q).
    """
    pos = torch.arange(window)
    rows = pos.repeat_interleave(window)  # row of each token
    cols = pos.repeat(window)  # column of each token
    dy = rows[:, None] - rows[None, :] + (window - 1)
    dx = cols[:, None] - cols[None, :] + (window - 1)
    return dy * (2 * window - 1) + dx


def shifted_window_mask(height, width, window: int, shift: int, device=None) -> Tensor:
    """Additive attention mask of the shifted windows, one per *row of windows*: [height // window, N, N].

    After the cyclic shift by `-shift`, the last `window` rows of the map hold pixels from wrapped regions. Region
    labels (reference behaviour, see the module docstring): image row y -> (y >= H-window) + (y >= H-shift), and
    token (i, j) of a window in window-row r takes the label of row r*window + j. Two tokens may attend to each
    other iff their labels agree. The mask does not depend on the window's column, so it broadcasts over the
    windows of a row. `height`/`width` may be symbolic sizes (traced); only tensor ops depend on them.
    """
    del width  # the reference mask ignores the horizontal wrap-around (see module docstring)
    r = torch.arange(height, device=device)
    label = (r >= height - window).to(torch.int64) + (r >= height - shift).to(torch.int64)  # [H]
    # Per window row, the label of each token: [nWh, window(i), window(j)] -> [nWh, N]. The reference flattens its
    # mask windows column-major while attention tokens are row-major, so token (i, j) takes the label of row j.
    label = label.reshape(-1, 1, window).expand(-1, window, window).reshape(-1, window * window)
    differ = label[:, :, None] != label[:, None, :]
    zero = torch.zeros((), dtype=torch.float32, device=device)
    return torch.where(differ, zero + MASK_VALUE, zero)


def full_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """The mask in the reference's stored layout: one [N, N] slab per window, row-major: [nW, N, N]."""
    per_row = shifted_window_mask(height, width, window, shift)
    n_cols = width // window
    n = window * window
    return per_row[:, None].expand(-1, n_cols, n, n).reshape(-1, n, n).contiguous()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative-position bias per head."""

    def __init__(self, dim: int, window: int, num_heads: int, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.window = window
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_load_state_dict_pre_hook(_fill_missing_buffers)

    def position_bias(self) -> Tensor:
        """[heads, N, N] additive bias gathered from the table."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, windows: Tensor, mask: Tensor | None = None) -> Tensor:
        """windows: [B, nWh, nWw, N, C]; mask: None or [nWh, N, N] (additive). Returns [B, nWh, nWw, N, C]."""
        b, nwh, nww, n, c = windows.shape
        heads, hd = self.num_heads, self.head_dim
        qkv = self.qkv(windows).reshape(b * nwh * nww, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B*nW, heads, N, hd]
        # Same order of operations as the reference: scale q, q @ k^T, + bias, (+ mask), softmax, @ v.
        logits = (q * self.scale) @ k.transpose(-2, -1)
        logits = logits + self.position_bias().unsqueeze(0).to(logits.dtype)
        if mask is not None:
            logits = logits.reshape(b, nwh, nww, heads, n, n) + mask[:, None, None].to(logits.dtype)
            logits = logits.reshape(b * nwh * nww, heads, n, n)
        attn = logits.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, nwh, nww, n, c)
        return self.proj_drop(self.proj(out))


class ConvMlp(nn.Module):
    """Token-wise MLP as two 1x1 convolutions with GELU (the reference's layout: `fc1`, `fc2` are Conv2d)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block on an NCHW map: x + W-MSA(norm1(x)), then x + MLP(norm2(x))."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        if resolution <= window:
            # The configured map fits in one window: no partition, no shift.
            window, shift = resolution, 0
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must lie in [0, window {window})")
        self.window = window
        self.shift = shift
        self.resolution = resolution
        if shift > 0:
            # Stored for checkpoint compatibility (the official layout has it); forward recomputes the mask from
            # the actual input shape, which equals this buffer at the configured resolution.
            self.register_buffer("attn_mask", full_window_mask(resolution, resolution, window, shift))
        else:
            self.attn_mask = None
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, num_heads, proj_drop=drop)
        self.norm2 = GroupNorm32(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop)
        self.register_load_state_dict_pre_hook(_fill_missing_buffers)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        ws, s = self.window, self.shift
        y = self.norm1(x)
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(2, 3))
        # Partition into windows: [B, C, H, W] -> [B, nWh, nWw, ws*ws, C] (tokens row-major inside a window).
        nwh, nww = h // ws, w // ws
        win = y.reshape(b, c, nwh, ws, nww, ws).permute(0, 2, 4, 3, 5, 1).reshape(b, nwh, nww, ws * ws, c)
        mask = shifted_window_mask(h, w, ws, s, device=x.device) if s > 0 else None
        win = self.attn(win, mask)
        # Merge windows back: [B, nWh, nWw, ws*ws, C] -> [B, C, H, W].
        y = win.reshape(b, nwh, nww, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        if s > 0:
            y = torch.roll(y, shifts=(s, s), dims=(2, 3))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SwinLayer(nn.Module):
    """1x1 conv into the embedding width, `depth` blocks alternating plain / shifted windows, 1x1 conv back.

    State-dict names follow the reference: `patch_embed.proj`, `blocks.i`, `patch_unembed.proj`.
    """

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        num_heads: int,
        window: int,
        depth: int,
        resolution: int,
        mlp_ratio: float,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        # Registration order = the reference's state-dict order: patch_embed, patch_unembed, blocks.
        self.patch_embed = _Proj(channels, embed_dim)
        self.patch_unembed = _Proj(embed_dim, channels)
        self.blocks = nn.ModuleList(
            SwinBlock(
                embed_dim,
                resolution,
                num_heads,
                window,
                shift=0 if i % 2 == 0 else window // 2,
                mlp_ratio=mlp_ratio,
                drop=drop,
            )
            for i in range(depth)
        )

    @property
    def windows(self) -> list[int]:
        """Effective window size of each block (after clamping to the configured resolution)."""
        return [blk.window for blk in self.blocks]

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.patch_unembed(x)


class _Proj(nn.Module):
    """A 1x1 convolution held under the attribute name `proj` (reference key layout)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)
