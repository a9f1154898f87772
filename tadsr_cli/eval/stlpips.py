"""ST-LPIPS: the shift-tolerant LPIPS distance (AlexNet variant), lower is more similar.

Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022. The network is defined here; its trained
weights (backbone *and* linear heads, 20 tensors) ship in the `stlpips-pytorch` wheel as
`stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth` (BSD-2-Clause). The file is located with
`importlib.util.find_spec` without importing that package (it imports torchvision) and loaded with
`torch.load(weights_only=True)`, strictly.

The network, as the reference `LPIPS(net="alex", variant="shift_tolerant")` builds it:
* inputs in [-1, 1], then the LPIPS scaling layer `(x - shift) / scale` with
  shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450) (stored in the weights file);
* AlexNet whose strided operations are made shift-tolerant: conv1 (11x11, 64) runs at stride 1 (padding 2) and is
  followed by a blur-pool; every max-pool runs at stride 1 and is followed by a blur-pool. A blur-pool is a
  depthwise 3x3 binomial filter ([1, 2, 1] outer [1, 2, 1] / 16) applied at stride 2 after reflection padding of
  2 pixels on each side ("pad more"), so it sees the borders the same way wherever the content sits;
* five feature taps: relu1 = relu(blurpool(conv1(x))); relu2 = relu(conv2(blurpool(maxpool_s1(relu1))));
  relu3 = relu(conv3(blurpool(maxpool_s1(relu2)))); relu4 = relu(conv4(relu3)); relu5 = relu(conv5(relu4))
  (conv2 5x5/192 pad 2, conv3 3x3/384, conv4 3x3/256, conv5 3x3/256, pad 1);
* per tap: unit-normalise the features over channels (eps 1e-10), squared difference, a learned 1x1 conv to one
  channel without bias (the "lin" layers; dropout before it is inactive in eval), spatial mean; the distance is
  the sum over the five taps.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tadsr_cli.base.errors import CheckpointError

WEIGHTS_PACKAGE = "stlpips_pytorch"
WEIGHTS_RELPATH = ("weights", "vST0.0", "alex_shift_tolerant.pth")
CHANNELS = (64, 192, 384, 256, 256)
# The VGG-16 variant (same wheel, 59 MB, backbone and heads): not the eval metric; training may use it as a
# perceptual loss (`train/perceptual.py`), so the metric that judges a model is not the one it was trained on.
VGG_WEIGHTS_RELPATH = ("weights", "vST0.0", "vgg_shift_tolerant.pth")
VGG_CHANNELS = (64, 128, 256, 512, 512)


class MetricUnavailable(Exception):
    """An optional metric cannot run here (missing package or weights); the message says why."""


def find_weights(relpath: tuple[str, ...] = WEIGHTS_RELPATH) -> Path:
    """Path of `alex_shift_tolerant.pth` (or `relpath`) inside the installed `stlpips-pytorch` wheel (the package
    is not imported)."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("stlpips-pytorch is not installed (pip install stlpips-pytorch==0.0.2 --no-deps)")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*relpath)
        if path.is_file():
            return path
    raise MetricUnavailable(f"stlpips-pytorch is installed but {'/'.join(relpath)} is missing")


class ScalingLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class BlurPool(nn.Module):
    """Depthwise binomial 3x3 low-pass at stride 2, reflection-padded by 2 on each side."""

    def __init__(self, channels: int, pad: int = 2) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])


class LinLayer(nn.Module):
    """1x1 conv to one channel, no bias (index 1 in `model`: index 0 was a dropout in the reference)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class ShiftTolerantAlexNet(nn.Module):
    """The five-tap feature extractor. Module indices follow the reference so the weights file loads strictly."""

    def __init__(self) -> None:
        super().__init__()
        self.slice1 = nn.Sequential()
        self.slice1.add_module("0", nn.Conv2d(3, 64, 11, stride=1, padding=2))
        self.slice1.add_module("1", BlurPool(64))
        self.slice1.add_module("2", nn.ReLU())
        self.slice2 = nn.Sequential()
        self.slice2.add_module("3", nn.MaxPool2d(3, stride=1))
        self.slice2.add_module("4", BlurPool(64))
        self.slice2.add_module("5", nn.Conv2d(64, 192, 5, padding=2))
        self.slice2.add_module("6", nn.ReLU())
        self.slice3 = nn.Sequential()
        self.slice3.add_module("7", nn.MaxPool2d(3, stride=1))
        self.slice3.add_module("8", BlurPool(192))
        self.slice3.add_module("9", nn.Conv2d(192, 384, 3, padding=1))
        self.slice3.add_module("10", nn.ReLU())
        self.slice4 = nn.Sequential()
        self.slice4.add_module("11", nn.Conv2d(384, 256, 3, padding=1))
        self.slice4.add_module("12", nn.ReLU())
        self.slice5 = nn.Sequential()
        self.slice5.add_module("13", nn.Conv2d(256, 256, 3, padding=1))
        self.slice5.add_module("14", nn.ReLU())

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for part in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = part(x)
            outs.append(x)
        return outs


class ShiftTolerantVGG16(nn.Module):
    """VGG-16 features with every max-pool at stride 1 followed by a blur-pool (taps relu1_2 .. relu5_3).

    Module indices follow the reference (`vgg16(pad_more=True).features` cut into five slices), so the weights file
    loads strictly. `taps` < 5 builds only the first slices: the early taps carry the texture and cost least.
    """

    PLAN = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self, taps: int = 5) -> None:
        super().__init__()
        if not 1 <= taps <= 5:
            raise ValueError(f"taps must lie in 1..5, got {taps}")
        index, cin = 0, 3
        for level, widths in enumerate(self.PLAN[:taps]):
            part = nn.Sequential()
            if level > 0:
                part.add_module(str(index), nn.MaxPool2d(2, stride=1))
                part.add_module(str(index + 1), BlurPool(cin))
                index += 2
            for width in widths:
                part.add_module(str(index), nn.Conv2d(cin, width, 3, padding=1))
                part.add_module(str(index + 1), nn.ReLU())
                index, cin = index + 2, width
            self.add_module(f"slice{level + 1}", part)
        self.taps = taps

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for level in range(self.taps):
            x = getattr(self, f"slice{level + 1}")(x)
            outs.append(x)
        return outs


def unit_normalise(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Each position's feature vector (dim 1) scaled to unit length. `vector_norm` gives a zero (not NaN) gradient
    where a vector is all zero, which matters when a training loss backpropagates through this."""
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)


class STLPIPS(nn.Module):
    """ST-LPIPS (shift-tolerant; AlexNet, the metric, or VGG-16). `forward(a, b)` takes NCHW RGB in [-1, 1] and
    returns `(N,)` distances. A VGG built with `taps` < 5 sums only its first taps (a cheaper training loss)."""

    def __init__(self, net: str = "alex", taps: int = 5) -> None:
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"net must be alex or vgg, got {net!r}")
        if net == "alex" and taps != 5:
            raise ValueError("the AlexNet variant always uses its five taps")
        self.net_name = net
        self.scaling_layer = ScalingLayer()
        self.net = ShiftTolerantAlexNet() if net == "alex" else ShiftTolerantVGG16(taps)
        for i, ch in enumerate((CHANNELS if net == "alex" else VGG_CHANNELS)[:taps]):
            self.add_module(f"lin{i}", LinLayer(ch))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu", net: str = "alex", taps: int = 5
    ) -> STLPIPS:
        if path is None:
            path = find_weights(WEIGHTS_RELPATH if net == "alex" else VGG_WEIGHTS_RELPATH)
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable/unsafe file is the same problem for the user
            raise CheckpointError(f"{path}: cannot read the ST-LPIPS weights ({exc})") from exc
        model = cls(net, taps)
        expected = model.state_dict().keys()
        # A truncated VGG loads the file's first slices: the rest of the file is expected but not used.
        unused = {k for k in state if net == "vgg" and taps < 5 and _beyond_taps(k, taps)}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected) - unused)
        if missing or unexpected or (net == "vgg" and len(unused) != _vgg_tail_entries(taps)):
            name = "AlexNet" if net == "alex" else "VGG-16"
            raise CheckpointError(f"{path}: not the ST-LPIPS {name} weights (missing {missing}, unexpected {unexpected})")
        model.load_state_dict({k: v for k, v in state.items() if k not in unused}, strict=True)
        return model.to(device)

    def features(self, x: Tensor) -> list[Tensor]:
        return self.net(self.scaling_layer(x))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        fa, fb = self.features(a), self.features(b)
        total = a.new_zeros(a.shape[0])
        for i, (xa, xb) in enumerate(zip(fa, fb, strict=True)):
            diff = (unit_normalise(xa) - unit_normalise(xb)) ** 2
            total = total + getattr(self, f"lin{i}")(diff).mean(dim=(1, 2, 3))
        return total


def _beyond_taps(key: str, taps: int) -> bool:
    """True for the state-dict entries of VGG slices / heads past the first `taps`."""
    parts = key.split(".")
    if parts[0] == "net" and parts[1].startswith("slice"):
        return int(parts[1][5:]) > taps
    if parts[0].startswith("lin"):
        return int(parts[0][3:]) >= taps
    return False


def _vgg_tail_entries(taps: int) -> int:
    """How many entries the full VGG file has past `taps` (a blur filter and 2 tensors per conv, and one head)."""
    plan = ShiftTolerantVGG16.PLAN
    return sum(1 + 2 * len(widths) + 1 for widths in plan[taps:])


def to_tensor_pm1(img: np.ndarray, device: str | torch.device = "cpu") -> Tensor:
    """RGB `HxWx3` uint8/uint16/float [0, 1] -> `1x3xHxW` float32 tensor in [-1, 1]."""
    if img.dtype == np.uint8:
        x = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        x = img.astype(np.float32) / 65535.0
    else:
        x = img.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    return (t * 2.0 - 1.0).to(device)


class STLPIPSMetric:
    """Callable `(sr, gt) -> float` on numpy RGB images; builds the network once."""

    name = "st_lpips"

    def __init__(self, device: str | torch.device = "cpu", weights: str | Path | None = None) -> None:
        self.device = torch.device(device)
        self.model = STLPIPS.from_file(weights, device=self.device)
        self.weights_path = Path(weights) if weights is not None else find_weights()

    @torch.inference_mode()
    def __call__(self, sr: np.ndarray, gt: np.ndarray) -> float:
        return float(self.model(to_tensor_pm1(sr, self.device), to_tensor_pm1(gt, self.device))[0])
