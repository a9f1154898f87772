"""ResShift teacher training (`kind: teacher`, DESIGN.md 1.1): t ~ U{0..T-1}, x_t = q(x0, y, t, eps),
loss = MSE(f(x_t / sqrt(kappa^2 eta_t + 1), t, lq), x0) in latent space. The EMA model is exported."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from tadsr_cli.models.checkpoints import save_model
from tadsr_cli.models.sr_model import DiffusionSR
from tadsr_cli.train.data_stream import build_train_dataset, build_validation_set
from tadsr_cli.train.distributed import DistEnv, wrap_ddp
from tadsr_cli.train.ema import EMA, ema_weights
from tadsr_cli.train.losses import teacher_x0_loss
from tadsr_cli.train.optim import clip_and_step, lr_at, make_adamw, set_lr
from tadsr_cli.train.randomness import step_generator
from tadsr_cli.train.recipe_schema import Recipe
from tadsr_cli.train.task import TrainTask, X0Predictor, load_weights_into
from tadsr_cli.train.validation import validate_ema_model

__all__ = ["TeacherTask"]


class TeacherTask(TrainTask):
    kind = "teacher"
    loss_names = ["loss"]

    def __init__(self, recipe: Recipe, env: DistEnv, console: Console) -> None:
        super().__init__(recipe, env, console)
        if recipe.model.config is None:
            raise ValueError("a teacher recipe needs an inline model config")
        torch.manual_seed(recipe.seed)
        config = recipe.model.config
        if not config.name:
            config.name = recipe.name
        model = DiffusionSR(config)
        if recipe.model.init:
            load_weights_into(model, recipe.model.init)
        model.to(self.device)
        self.amp.module(model.denoiser)  # channels_last where the run uses it (before the optimiser and EMA)
        model.autoencoder.requires_grad_(False).eval()
        model.denoiser.train()
        self.model = model
        self.net = wrap_ddp(X0Predictor(model), env)
        self.params = [p for p in model.denoiser.parameters() if p.requires_grad]
        self.opt = make_adamw(self.params, recipe.optim.g)
        self.ema = EMA(model.denoiser, recipe.ema)
        self.micro = recipe.batch // (recipe.grad_accum * env.world)
        self.valset = build_validation_set(recipe, model.scale, model.lq_multiple) if env.is_main else None
        self.has_validation = self.valset is not None
        if recipe.data.gt_size % (model.scale * model.lq_multiple):
            from tadsr_cli.base.errors import RecipeError

            raise RecipeError(
                f"{recipe.source}: data.gt_size {recipe.data.gt_size} must be a multiple of "
                f"{model.scale * model.lq_multiple} (scale x the denoiser's LQ multiple)"
            )

    def describe(self) -> str:
        return f"teacher {self.recipe.name}"

    def build_train_dataset(self) -> Any:
        return build_train_dataset(self.recipe, self.model.scale, self.micro, self.env.world)

    def set_lr(self, step: int) -> dict[str, float]:
        o = self.recipe.optim
        lr = lr_at(step, o.g, self.recipe.iterations, o.lr_schedule, o.min_lr_ratio)
        set_lr(self.opt, lr)
        return {"g": lr}

    def train_step(self, batches: list[dict[str, Any]], step: int) -> dict[str, Tensor]:
        with self.clock.phase("step"):
            loss = self._step(batches, step)
        with self.clock.phase("bookkeeping"):
            self.ema.update(self.model.denoiser)
        return loss

    def _step(self, batches: list[dict[str, Any]], step: int) -> dict[str, Tensor]:
        model, schedule, amp = self.model, self.model.schedule, self.amp
        gen = step_generator(self.recipe.seed, step, self.env.rank)
        self.opt.zero_grad(set_to_none=True)
        n = len(batches)
        total = torch.zeros((), device=self.device)
        for j, batch in enumerate(batches):
            lq = batch["lq"].to(self.device, non_blocking=True)
            gt = batch["gt"].to(self.device, non_blocking=True)
            with torch.no_grad():
                x0 = model.encode(gt)
                y = model.lq_latent(lq)
            t = torch.randint(0, schedule.steps, (x0.shape[0],), generator=gen).to(self.device)
            eps = torch.randn(x0.shape, generator=gen).to(self.device)
            x_t = schedule.q_sample(x0, y, t, eps)
            sync = contextlib.nullcontext() if j == n - 1 or not self.env.distributed else self.net.no_sync()
            with sync:
                with amp.autocast():
                    x0_hat = self.net(amp.tensor(x_t), amp.tensor(y), t, amp.tensor(lq))
                loss = teacher_x0_loss(x0_hat, x0)
                amp.backward(loss / n)
            total += loss.detach()
        clip_and_step(self.opt, self.params, self.recipe.optim.g.grad_clip, amp)
        amp.update()
        return {"loss": total / n}

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.denoiser.state_dict().items()},
            "ema": self.ema.state_dict(),
            "opt_g": self.opt.state_dict(),
        }
        if self.amp.scaler is not None:
            state["scaler"] = self.amp.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from tadsr_cli.base.errors import TrainingError

        if state.get("kind") not in (None, self.kind):
            raise TrainingError(
                f"the checkpoint is from a {state.get('kind')!r} run, not a {self.kind!r} run"
            )
        self.model.denoiser.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt_g"])
        if self.amp.scaler is not None and "scaler" in state:
            self.amp.scaler.load_state_dict(state["scaler"])

    # -- validation and export -------------------------------------------------------------------------------------
    def validate(self, step: int, folder: Path | None) -> dict[str, float]:
        model = self.model
        return validate_ema_model(
            model, self.ema, self.amp, self.valset, lambda lq, noise: model.sample(lq, noise, sampler="deterministic"),
            self.device, folder, self.recipe.validation.save_images,
        )

    def export(self, path: Path) -> Path:
        model = self.model
        model.config.description = model.config.description or (
            f"ResShift teacher (T = {model.schedule.steps}) trained by recipe {self.recipe.name} (EMA weights)"
        )
        with ema_weights(model.denoiser, self.ema):
            return save_model(model, path)
