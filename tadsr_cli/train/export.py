"""`tadsr distill --export-only`: the EMA model of a run's newest checkpoint as a `.safetensors`, without training
(the run may still be going on)."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import TrainingError
from tadsr_cli.train.checkpointing import CheckpointManager
from tadsr_cli.train.distributed import DistEnv
from tadsr_cli.train.recipe_schema import Recipe
from tadsr_cli.train.run import make_task

__all__ = ["export_checkpoint"]


def export_checkpoint(
    recipe: Recipe, out_dir: str | Path | None = None, dest: str | Path | None = None, console: Console | None = None
) -> Path:
    """Write the EMA model of a run's newest checkpoint (training may still be going on) without training."""
    console = console or Console(stderr=True)
    out = Path(out_dir or recipe.output_dir or Path("runs") / recipe.name)
    ckpts = CheckpointManager(out / "checkpoints", recipe.checkpoint.keep)
    loaded = ckpts.load_latest(warn=lambda m: console.print(f"warning: {m}", highlight=False))
    if loaded is None:
        raise TrainingError(f"no checkpoint in {ckpts.folder} to export")
    state, path = loaded
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    task = make_task(recipe, DistEnv(device=resolve_device("cpu")), console)
    task.load_state_dict(state)
    target = Path(dest) if dest else out / f"model-step-{int(state['step']):08d}.safetensors"
    task.export(target)
    console.print(f"exported the EMA model of {path} (iteration {int(state['step'])}) to {target}", highlight=False)
    return target
