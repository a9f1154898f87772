"""`run_recipe`, the library side of `tadsr distill`: the recipe's task (`make_task`: teacher or TAD-SR) driven by
the training loop, in this process or as one rank of a `torchrun` job."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from tadsr_cli.train.distill import DistillTask
from tadsr_cli.train.distributed import DistEnv, setup_distributed, teardown_distributed
from tadsr_cli.train.loop import train
from tadsr_cli.train.recipe_schema import Recipe
from tadsr_cli.train.task import TrainResult, TrainTask
from tadsr_cli.train.teacher import TeacherTask

__all__ = ["make_task", "run_recipe"]


def make_task(recipe: Recipe, env: DistEnv, console: Console) -> TrainTask:
    """The `TrainTask` of the recipe's `kind`: `TeacherTask` for `teacher`, `DistillTask` for `tadsr`."""
    if recipe.kind == "teacher":
        return TeacherTask(recipe, env, console)
    return DistillTask(recipe, env, console)


def run_recipe(
    recipe: Recipe,
    out_dir: str | Path | None = None,
    resume: bool = False,
    console: Console | None = None,
    progress: bool = True,
    keep_loss_history: bool = False,
) -> TrainResult:
    """Train a recipe (teacher or TAD-SR) into `out_dir` (default: `recipe.output_dir` or `runs/<name>`)."""
    console = console or Console(stderr=True)
    out = Path(out_dir or recipe.output_dir or Path("runs") / recipe.name)
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    env = setup_distributed(recipe.device)
    try:
        task = make_task(recipe, env, console)
        return train(
            task, out, resume=resume, console=console, progress=progress, keep_loss_history=keep_loss_history
        )
    finally:
        teardown_distributed(env)
