"""The schema of a training recipe: one dataclass per YAML section (see recipe.py for the file format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tadsr_cli.models.config import ModelConfig
from tadsr_cli.train.degradation_config import DegradationConfig

Kind = Literal["teacher", "tadsr"]


HFSDMode = Literal["tadsr", "sds", "sds+hr"]


AmpMode = Literal["none", "bf16", "fp16", "auto"]


@dataclass
class ModelSection:
    """`teacher` (tadsr): model file or registry name; otherwise `config` is built from the inline keys."""

    teacher: str | None = None
    init: str | None = None
    # tadsr: the prior temperature of teacher targets and student (None: the teacher file's own)
    prior_noise_scale: float | None = None
    config: ModelConfig | None = None


@dataclass
class DataSection:
    hr: str | list[str] | None = None  # folder(s) of HR images (random crops + synthetic degradation)
    lq: str | None = None  # paired folders: LQ ...
    gt: str | None = None  # ... and GT with the same file names
    exclude: list[str] = field(
        default_factory=list
    )  # file names never trained on (e.g. the validation photos)
    holdout: int = 0  # additionally hold out the last N files (sorted by name)
    gt_size: int = 256
    workers: int = 2
    length: int | None = None  # samples per epoch (None: the number of images)
    fixed_crops: bool = (
        False  # every epoch repeats epoch 0's crops (a finite set: cached teacher targets hit)
    )
    # A rolling pool: each epoch's crops (and prior noise) serve `crop_reuse` consecutive epochs, batched in a new
    # shuffled order each time, then are replaced; with `teacher_cache` only the first pass pays for the targets.
    crop_reuse: int = 1


@dataclass
class OptimizerSettings:
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup: int = 0  # linear warm-up iterations
    grad_clip: float | None = 1.0  # max global grad norm (None: off)


@dataclass
class OptimSection:
    g: OptimizerSettings = field(default_factory=OptimizerSettings)
    d: OptimizerSettings = field(default_factory=OptimizerSettings)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0  # cosine: final lr = lr * min_lr_ratio


@dataclass
class LossSection:
    reg: float = 1.0
    hfsd: float = 1.0
    gan: float = 0.02
    hfsd_mode: HFSDMode = "tadsr"
    hfsd_timesteps: list[int] = field(default_factory=lambda: [0, 1, 2])
    disc_timesteps: list[int] | None = None  # [lo, hi] inclusive; None: [0, T-2]
    gan_start: int = 0  # iterations the discriminator trains alone before the student sees its loss
    # Fidelity: latent MSE between the student's output and the ground truth's latent. Not a TAD-SR loss: the teacher
    # bounds the student wherever it is wrong, and on clean inputs it invents texture the photo does not have.
    fidelity: float = 0.0
    fidelity_on: Literal["light", "all"] = "light"  # light: only crops from `degradation.light_prob`
    # Feature matching: the student's output and the ground truth, noised alike (the discriminator's t and noise),
    # compared in the frozen teacher encoder's features at the discriminator's taps (channel-normalised, as LPIPS
    # does). Not a TAD-SR loss: a paired perceptual signal towards the photo, where the teacher is too smooth.
    feature: float = 0.0
    # Perceptual: ST-LPIPS with the shift-tolerant VGG-16 (not eval's AlexNet) between the decoded student output
    # and the ground truth, its first `perceptual_taps` slices, on one random `perceptual_crop` window per crop
    # (train/perceptual.py). Not a TAD-SR loss either (ResShift v3 trains its teacher with LPIPS).
    perceptual: float = 0.0
    perceptual_taps: int = 3
    perceptual_crop: int = 64
    perceptual_blur: bool = False  # 3x3 binomial low-pass on both images first (damps a 4-px latent-grid pattern)


@dataclass
class DiscriminatorSection:
    blocks: list[int] | None = (
        None  # teacher input-block outputs to use; None: the end of every resolution level
    )
    middle: bool = True  # also the middle block's output
    hidden: int = 128  # head width
    time_dim: int = 128  # sinusoidal time-embedding size of the FiLM layers
    kernel: int = 9  # 1-D conv kernel of the heads


@dataclass
class TargetsSection:
    """How a `kind: tadsr` run computes the teacher's T-step targets (and the teacher's other no-grad predictions)."""

    # auto: OpenVINO where the targets run in bf16 on a CPU with native bf16 and OpenVINO is installed, else torch
    engine: Literal["auto", "torch", "openvino"] = "auto"
    # auto: bf16 when the run's `amp` resolves to bf16, else fp32 (the reference numbers, as before)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # compute the next micro-batch's targets in a background thread while the current one trains
    ahead: bool = True


@dataclass
class CheckpointSection:
    every: int = 1000
    keep: int = 3


@dataclass
class LogSection:
    every: int = 20


@dataclass
class ValidationSection:
    every: int = 0  # 0: only at the end
    folder: str | None = None  # HR images; None: the data folder (with `files`)
    files: list[str] = field(default_factory=list)  # subset of the folder (e.g. the held-out photos)
    n_images: int = 4
    save_images: int = 4
    lq_size: int = 64  # centre crop of the LQ (HR crop = lq_size * scale)
    seed: int = 0  # degradation + prior-noise seed of the validation set


@dataclass
class Recipe:
    kind: Kind
    model: ModelSection
    data: DataSection
    name: str = ""
    seed: int = 0
    output_dir: str | None = None
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads per process (None: PyTorch's default)
    degradation: dict[str, Any] | None = None
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    discriminator: DiscriminatorSection = field(default_factory=DiscriminatorSection)
    iterations: int = 1000
    batch: int = 8
    grad_accum: int = 1
    ema: float = 0.999
    amp: AmpMode = "none"
    # NHWC activations and conv weights for the network step (auto: on with bf16 autocast on a CPU with AMX)
    channels_last: bool | Literal["auto"] = "auto"
    targets: TargetsSection = field(default_factory=TargetsSection)
    teacher_cache: str | None = None
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    # provenance (not recipe keys)
    source: str = field(default="<recipe>", repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The validated recipe as plain data (what was parsed, with overrides applied)."""
        return plain_data(self.raw)

    def degradation_config(self) -> DegradationConfig:
        return DegradationConfig.from_dict(self.degradation)




def plain_data(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): plain_data(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain_data(v) for v in obj]
    return obj
