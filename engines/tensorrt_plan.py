"""Pure planning logic of the TensorRT backend (no TensorRT import): shape profiles, engine cache keys and lookup,
tile planning for a profile, precision flags, which layers stay fp32, and build-progress bookkeeping.

Shapes are `(batch, h, w)` in LQ pixels; the network inputs are `lq [B,3,h,w]` and `noise [B,C,h,w]`.

Profiles are bucketed so that engines are few and reused: a profile covers every tile from `lq_multiple` up to a
bucketed maximum side (64, 128, 192, 256, 384, 512, 768, 1024, then multiples of 512) and batch 1..B, with the
tuned (opt) shape at the tile size in use. The engine cache key holds the profile, never the actual image size,
so a new image resolution whose tiles fit an existing profile never triggers a rebuild.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.engines.cache import key_digest, slug

Shape = tuple[int, int, int]  # (batch, h, w) in LQ pixels

SIDE_BUCKETS: tuple[int, ...] = (64, 128, 192, 256, 384, 512, 768, 1024)
PLAN_SUFFIX = ".plan"
META_SUFFIX = ".plan.json"
PRECISION_FLAGS: dict[str, tuple[str, ...]] = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",)}
# Layer types kept in fp32 in reduced precision (TensorRT `LayerType` names): normalisation statistics overflow
# or lose precision in fp16, and reductions feed the VQ nearest-codebook argmin.
FP32_LAYER_TYPES = frozenset({"NORMALIZATION", "REDUCE", "TOPK", "EINSUM"})
FP32_NAME_MARKERS = ("/quantizer/",)


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // int(multiple)) * int(multiple)


def bucket_side(side: int, multiple: int) -> int:
    """Smallest bucket side >= `side` that is a multiple of `multiple`."""
    side = round_up(max(int(side), 1), multiple)
    for b in SIDE_BUCKETS:
        if b >= side and b % multiple == 0:
            return b
    return round_up(side, math.lcm(512, int(multiple)))


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimisation profile: min / opt / max `(batch, h, w)`."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for a, b in ((self.min, self.opt), (self.opt, self.max)):
            if len(a) != 3 or len(b) != 3 or any(x > y for x, y in zip(a, b, strict=True)):
                raise ConfigError(f"profile needs min <= opt <= max element-wise, got {self.min}/{self.opt}/{self.max}")
        if min(self.min) < 1:
            raise ConfigError(f"profile sizes must be >= 1, got {self.min}")

    def contains(self, batch: int, h: int, w: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, h, w), self.max, strict=True))

    def validate(self, multiple: int) -> None:
        for shape in (self.min, self.opt, self.max):
            if shape[1] % multiple or shape[2] % multiple:
                raise ConfigError(f"profile size {shape[1]}x{shape[2]} is not a multiple of {multiple}")

    def input_shapes(self, latent_channels: int) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Per network input: (min, opt, max) full NCHW shapes, as `IOptimizationProfile.set_shape` wants."""

        def nchw(shape: Shape, c: int) -> tuple[int, int, int, int]:
            return (shape[0], c, shape[1], shape[2])

        return {
            name: (nchw(self.min, c), nchw(self.opt, c), nchw(self.max, c))
            for name, c in (("lq", 3), ("noise", int(latent_channels)))
        }

    def tag(self) -> str:
        """Short human-readable id: `b1-4_64-128x64-128_opt4x128x128`."""
        (b0, h0, w0), (bo, ho, wo), (b1, h1, w1) = self.min, self.opt, self.max
        return f"b{b0}-{b1}_{h0}-{h1}x{w0}-{w1}_opt{bo}x{ho}x{wo}"

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeProfile:
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))  # type: ignore[arg-type]

    def volume(self) -> int:
        b, h, w = self.max
        return b * h * w


def plan_profile(tile: int, batch: int, multiple: int, image_hw: tuple[int, int] | None = None) -> ShapeProfile:
    """The profile covering the tiles a run with `tile` (LQ px; 0 = whole image) and `batch` produces.

    Tiles of a grid are `tile x tile`, except a single tile covering a smaller (padded) image, so min is
    `(1, multiple, multiple)`, opt is `(batch, tile, tile)` and max is the bucketed tile side. With `tile = 0`
    the whole padded image is one tile (batch 1), and `image_hw` is needed.
    """
    multiple = int(multiple)
    if batch < 1:
        raise ConfigError("--tile-batch must be >= 1")
    if tile < 0:
        raise ConfigError("--tile must be >= 0")
    if tile == 0:
        if image_hw is None:
            raise ConfigError("a whole-image (--tile 0) TensorRT profile needs the image size")
        h, w = round_up(image_hw[0], multiple), round_up(image_hw[1], multiple)
        return ShapeProfile((1, multiple, multiple), (1, h, w), (1, bucket_side(h, multiple), bucket_side(w, multiple)))
    t = round_up(tile, multiple)
    side = bucket_side(t, multiple)
    return ShapeProfile((1, multiple, multiple), (int(batch), t, t), (int(batch), side, side))


def profile_for_shape(batch: int, h: int, w: int, multiple: int) -> ShapeProfile:
    """A profile for a shape no cached engine covers (first call with an unplanned tile size)."""
    side = max(h, w)
    t = round_up(side, multiple)
    mx = bucket_side(t, multiple)
    return ShapeProfile((1, multiple, multiple), (int(batch), round_up(h, multiple), round_up(w, multiple)),
                        (int(batch), mx, mx))


@dataclass(frozen=True)
class TilePlan:
    tile: int
    batch: int


def plan_tiles_for_profile(profile: ShapeProfile, image_h: int, image_w: int, multiple: int,
                           overlap: int = 16) -> TilePlan:
    """Tile size and batch to use for an image with an engine built for `profile`.

    The tuned (opt) tile when the image is at least that large; otherwise the whole padded image as one tile when
    the profile admits it. Raises `ConfigError` when the profile cannot run this model's geometry.
    """
    ph, pw = round_up(image_h, multiple), round_up(image_w, multiple)
    b_opt, t_h, t_w = profile.opt
    tile = min(t_h, t_w)
    if ph <= tile and pw <= tile:
        if profile.contains(1, ph, pw):
            return TilePlan(tile=0, batch=1)
    if tile % multiple:
        raise ConfigError(f"profile tile {tile} is not a multiple of {multiple}")
    if overlap >= tile:
        raise ConfigError(f"--tile-overlap {overlap} must be smaller than the engine's tile {tile}")
    if not profile.contains(1, tile, tile):
        raise ConfigError(f"profile {profile.tag()} does not admit {tile}x{tile} tiles")
    return TilePlan(tile=tile, batch=b_opt)


# ---- cache keys -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineSpec:
    """Everything a built engine depends on (its cache key)."""

    model_sha256: str
    profile: ShapeProfile
    precision: str
    trt_version: str
    gpu_name: str
    opset: int
    graph_version: str = "1"

    def key(self) -> str:
        return key_digest({
            "model": self.model_sha256, "profile": self.profile.tag(), "precision": self.precision,
            "trt": self.trt_version, "gpu": self.gpu_name, "opset": self.opset, "graph": self.graph_version,
        })

    def file_name(self, stem: str) -> str:
        return (f"{slug(stem, 32)}-{self.model_sha256[:12]}-{self.precision}-{self.profile.tag()}"
                f"-trt{slug(self.trt_version, 16)}-{slug(self.gpu_name, 32)}-{self.key()[:8]}{PLAN_SUFFIX}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = self.profile.as_dict()
        data["key"] = self.key()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineSpec:
        return cls(
            model_sha256=str(data["model_sha256"]), profile=ShapeProfile.from_dict(data["profile"]),
            precision=str(data["precision"]), trt_version=str(data["trt_version"]), gpu_name=str(data["gpu_name"]),
            opset=int(data["opset"]), graph_version=str(data.get("graph_version", "1")),
        )

    def compatible(self, other: EngineSpec) -> bool:
        """Same everything except the profile."""
        return (self.model_sha256, self.precision, self.trt_version, self.gpu_name, self.opset,
                self.graph_version) == (other.model_sha256, other.precision, other.trt_version, other.gpu_name,
                                        other.opset, other.graph_version)


@dataclass(frozen=True)
class EngineRecord:
    path: Path
    spec: EngineSpec


def meta_path(plan: Path) -> Path:
    return plan.with_name(plan.name[: -len(PLAN_SUFFIX)] + META_SUFFIX)


def write_meta(plan: Path, spec: EngineSpec) -> Path:
    from tadsr_cli.base.atomic import atomic_write_path

    dst = meta_path(plan)
    with atomic_write_path(dst) as tmp:
        tmp.write_text(json.dumps(spec.as_dict(), indent=1, sort_keys=True))
    return dst


def scan_engines(folder: Path) -> list[EngineRecord]:
    """Engines in `folder` that have a readable sidecar and a plan file."""
    records = []
    if not folder.is_dir():
        return records
    for meta in sorted(folder.glob(f"*{META_SUFFIX}")):
        plan = meta.with_name(meta.name[: -len(META_SUFFIX)] + PLAN_SUFFIX)
        try:
            spec = EngineSpec.from_dict(json.loads(meta.read_text()))
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            continue
        if plan.is_file() and plan.stat().st_size > 0:
            records.append(EngineRecord(plan, spec))
    return records


def choose_engine(records: Iterable[EngineRecord], want: EngineSpec, batch: int, h: int, w: int) -> EngineRecord | None:
    """A cached engine that can run `(batch, h, w)` for `want` (any profile that contains the shape).

    Preference: an exact opt match, then the smallest max volume (tighter profiles are faster).
    """
    fits = [r for r in records if r.spec.compatible(want) and r.spec.profile.contains(batch, h, w)]
    if not fits:
        return None
    return min(fits, key=lambda r: (r.spec.profile.opt != (batch, h, w), r.spec.profile.volume(), str(r.path)))


def timing_cache_name(trt_version: str, gpu_name: str) -> str:
    return f"timing-trt{slug(trt_version, 16)}-{slug(gpu_name, 32)}.cache"


# ---- precision ------------------------------------------------------------------------------------------------
def precision_flags(precision: str, compute_capability: tuple[int, int] | None = None) -> tuple[str, ...]:
    """`BuilderFlag` names to set for `precision`; checks GPU support when the compute capability is known."""
    if precision not in PRECISION_FLAGS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISION_FLAGS)}")
    if compute_capability is not None:
        if precision == "bf16" and compute_capability < (8, 0):
            raise EngineUnavailableError(
                f"bf16 needs an Ampere or newer GPU (compute capability 8.0); this one is "
                f"{compute_capability[0]}.{compute_capability[1]}: use --precision fp16"
            )
        if precision == "fp16" and compute_capability < (5, 3):
            raise EngineUnavailableError("this GPU has no fast fp16; use --precision fp32")
    return PRECISION_FLAGS[precision]


def keep_fp32(layer_name: str, layer_type: str) -> bool:
    """Whether a network layer stays in fp32 when building in fp16/bf16."""
    return layer_type in FP32_LAYER_TYPES or any(m in layer_name for m in FP32_NAME_MARKERS)


def parse_version(text: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", str(text))
    return tuple(int(n) for n in nums[:3]) or (0,)


def workspace_bytes(total_gpu_bytes: int | None, fraction: float = 0.5, cap_gb: float = 8.0) -> int:
    """Builder workspace: half the GPU memory, at most `cap_gb` GiB (1 GiB when unknown)."""
    if not total_gpu_bytes:
        return 1 << 30
    return int(min(total_gpu_bytes * fraction, cap_gb * (1 << 30)))


# ---- build progress -------------------------------------------------------------------------------------------
@dataclass
class _Phase:
    name: str
    parent: str | None
    steps: int
    done: int = 0


@dataclass
class BuildProgress:
    """Thread-safe bookkeeping for `IProgressMonitor` callbacks (TensorRT calls them from its own threads).

    `describe()` gives a one-line status: the nested phases with their step counts, and the elapsed time.
    `cancel()` makes the next `step_complete` return False, which asks TensorRT to stop the build.
    """

    started: float = field(default_factory=time.monotonic)
    phases: dict[str, _Phase] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    cancelled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        with self._lock:
            self.phases[name] = _Phase(name, parent, max(int(steps), 1))
            if name in self.order:
                self.order.remove(name)
            self.order.append(name)

    def step_complete(self, name: str, step: int) -> bool:
        with self._lock:
            phase = self.phases.get(name)
            if phase is not None:
                phase.done = max(phase.done, int(step) + 1)
            return not self.cancelled

    def phase_finish(self, name: str) -> None:
        with self._lock:
            self.phases.pop(name, None)
            if name in self.order:
                self.order.remove(name)

    def cancel(self) -> None:
        self.cancelled = True

    def fraction(self) -> float | None:
        """Progress of the outermost open phase (0..1), None when no phase is open."""
        with self._lock:
            roots = [self.phases[n] for n in self.order if self.phases[n].parent not in self.phases]
            if not roots:
                return None
            root = roots[0]
            return min(root.done / root.steps, 1.0)

    def describe(self) -> str:
        with self._lock:
            parts = [f"{self.phases[n].name} {self.phases[n].done}/{self.phases[n].steps}" for n in self.order]
        elapsed = time.monotonic() - self.started
        text = " > ".join(parts) if parts else "building"
        return f"{text} ({elapsed:.0f} s)"
