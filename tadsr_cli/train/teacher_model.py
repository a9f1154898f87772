"""The frozen teacher of a TAD-SR run: a model file / registry model, or the recipe's inline config (+ `init`)."""

from __future__ import annotations

import copy

import torch
from rich.console import Console

from tadsr_cli.models.checkpoints import load_model_file
from tadsr_cli.models.sr_model import DiffusionSR
from tadsr_cli.train.recipe_schema import Recipe
from tadsr_cli.train.task import load_weights_into, resolve_weights

__all__ = ["load_teacher"]


def load_teacher(recipe: Recipe, device: torch.device, console: Console | None = None) -> DiffusionSR:
    """The frozen teacher: a model file / registry model, or the inline config (+ `init` weights)."""
    if recipe.model.teacher is not None:
        teacher = load_model_file(resolve_weights(recipe.model.teacher), device=device)
        if recipe.model.prior_noise_scale is not None:  # targets and student share the prior temperature
            teacher.config.prior_noise_scale = recipe.model.prior_noise_scale
    else:
        assert recipe.model.config is not None
        torch.manual_seed(recipe.seed)
        teacher = DiffusionSR(copy.deepcopy(recipe.model.config))
        if recipe.model.init:
            load_weights_into(teacher, recipe.model.init)
        elif console is not None:
            console.print(
                "[yellow]warning:[/yellow] the teacher has random weights (no model.teacher / model.init): "
                "only useful as a smoke test",
                highlight=False,
            )
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher  # type: ignore[return-value]
