"""What the training loop drives: the `TrainTask` interface, its result, and helpers both tasks share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import Tensor, nn

from tadsr_cli.models.checkpoints import load_state_dict_strict, read_state_dict
from tadsr_cli.train.distributed import DistEnv
from tadsr_cli.train.precision import Amp
from tadsr_cli.train.recipe_schema import Recipe
from tadsr_cli.train.timing import PhaseClock


class TrainTask:
    """What `train` drives. Subclasses: `TeacherTask` (teacher.py), `DistillTask` (distill.py)."""

    kind: str = ""
    loss_names: list[str] = []

    def __init__(self, recipe: Recipe, env: DistEnv, console: Console) -> None:
        self.recipe = recipe
        self.env = env
        self.device = env.device
        self.console = console
        self.amp = Amp(recipe.amp, env.device, recipe.channels_last)
        self.clock = PhaseClock()  # where each iteration's time goes (benchmarks/bench_training.py)

    # -- to implement ------------------------------------------------------------------------------------------
    def train_step(self, batches: list[dict[str, Any]], step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def set_lr(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def validate(self, step: int, folder: Path | None) -> dict[str, float]:
        return {}

    def export(self, path: Path) -> Path:
        raise NotImplementedError

    def build_train_dataset(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def wrap_stream(self, stream: Any, batches: int) -> Any:
        """The batch stream the loop reads (`batches` more will be read): e.g. one that starts work on the next
        batch ahead of need. Needs `next()` and `close()`."""
        return stream


@dataclass
class TrainResult:
    step: int
    out_dir: Path
    model_path: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]
    losses: list[dict[str, float]]  # per logged record (rank 0)
    seconds: float
    iterations_per_second: float


class X0Predictor(nn.Module):
    """`forward(x_t, y, t, lq) = model.predict_x0(...)`: the unit DDP wraps (only the denoiser is trainable)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        return self.model.predict_x0(x_t, y, t, lq)


def resolve_weights(name: str | Path) -> Path:
    """A model file, a registry name (e.g. `tadsr-tiny-x4-teacher`), or a released file stem
    (e.g. `resshift_realsrx4_s15_v1`): what `model.teacher` and `model.init` accept."""
    from tadsr_cli.models.catalog import REGISTRY
    from tadsr_cli.models.model_cache import resolve_model_path

    path = Path(name).expanduser()
    if path.is_file():
        return path
    text = str(name)
    if text not in REGISTRY:
        for entry in REGISTRY.values():
            if entry.denoiser is not None and Path(entry.denoiser.filename).stem == text:
                text = entry.name
                break
    # a registry name (neither: ModelNotFoundError, listing the known names)
    return resolve_model_path(text)


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """Strictly load the weights of a model file, official checkpoint or registry model (`resolve_weights`) into
    `model` (a `DiffusionSR`)."""
    resolved = resolve_weights(path)
    load_state_dict_strict(model, read_state_dict(resolved), what=str(resolved))
