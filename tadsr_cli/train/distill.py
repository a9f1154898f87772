"""TAD-SR distillation (`kind: tadsr`, DESIGN.md 1.2): the `TrainTask` of a student run (`run.py` starts it).

Per iteration, on each micro-batch (`x0 = E(hr)`, `y = E(bicubic_up(lq))`, `x_T = y + kappa sqrt(eta_T) eps`):

1. teacher target `x_tch` = deterministic T-step sample from the same `x_T` (no grad; optionally cached);
2. student `x_s = g(x_T)` at `t = T-1`;
3. **D step** (if the GAN weight is > 0): `t ~ U{lo..hi}` (default `0..T-2`), one noise for real and fake,
   real = q(x0, y, t), fake = q(sg(x_s), y, t); hinge loss; update the heads/FiLM layers;
4. **G step**: `w_reg L_reg + w_hfsd L_hfsd + w_gan L_G`, with `L_G = -E[D(q(x_s, y, t))]` through the frozen
   teacher encoder (D's own parameters frozen for this step); update the student; EMA. Two optional terms that are
   not TAD-SR's: `w_fidelity` latent MSE to the ground truth, `w_feature` feature matching of q(x_s) against
   q(x0) in the same encoder's taps (`losses.feature_match_loss`; the real taps come from the D step),
   `w_perceptual` ST-LPIPS-VGG of the decoded output against the ground truth (`train/perceptual.py`).

Each term is logged separately: `reg`, `hfsd`, `gan_g`, `fidelity`, `feature`, `perceptual` (unweighted), `g_total` (weighted sum), `d_loss`,
`d_real`, `d_fake` (mean logits).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor, nn

from tadsr_cli.base.errors import RecipeError, TrainingError
from tadsr_cli.models.checkpoints import save_model
from tadsr_cli.train.data_stream import build_train_dataset, build_validation_set
from tadsr_cli.train.discriminator import TimeAwareDiscriminator
from tadsr_cli.train.distributed import DistEnv, average_gradients, wrap_ddp
from tadsr_cli.train.ema import EMA, ema_weights
from tadsr_cli.train.losses import (
    d_hinge_loss,
    discriminator_stats,
    feature_match_loss,
    fidelity_loss,
    g_hinge_loss,
    hfsd_loss,
    regression_loss,
)
from tadsr_cli.train.optim import clip_and_step, lr_at, make_adamw, set_lr
from tadsr_cli.train.perceptual import PerceptualLoss
from tadsr_cli.train.randomness import sample_noise, step_generator
from tadsr_cli.train.recipe import check_timesteps
from tadsr_cli.train.recipe_schema import Recipe
from tadsr_cli.train.task import TrainTask, X0Predictor, load_weights_into
from tadsr_cli.train.teacher_model import load_teacher
from tadsr_cli.train.teacher_targets import TargetsAhead, TeacherInference, choose_engine
from tadsr_cli.train.timing import timed
from tadsr_cli.train.validation import validate_ema_model

__all__ = ["DistillTask"]


class DistillTask(TrainTask):
    kind = "tadsr"
    loss_names = ["g_total", "reg", "hfsd", "gan_g", "fidelity", "feature", "perceptual", "d_loss", "d_real", "d_fake", "d_gap", "d_acc",
                  "d_acc_lo", "d_acc_hi"]
    # D is "learning" when real beats fake on clearly more than half of the pairs (same t and noise).
    D_ACC_WARN = 0.6
    D_WATCH_WINDOW = 250

    def __init__(self, recipe: Recipe, env: DistEnv, console: Console) -> None:
        super().__init__(recipe, env, console)
        teacher = load_teacher(recipe, self.device, console if env.is_main else None)
        T = teacher.schedule.steps
        check_timesteps(recipe, T)
        w = recipe.loss
        if w.gan > 0 and T < 2:
            raise RecipeError(f"{recipe.source}: the discriminator needs T >= 2 (noised at t in 0..T-2)")
        if recipe.data.gt_size % (teacher.scale * teacher.lq_multiple):
            raise RecipeError(
                f"{recipe.source}: data.gt_size {recipe.data.gt_size} must be a multiple of "
                f"{teacher.scale * teacher.lq_multiple} (scale x the denoiser's LQ multiple)"
            )
        self.amp.module(teacher.denoiser)  # channels_last where the run uses it (in place; the weights are unchanged)
        self.teacher = teacher
        # Student: a copy of the teacher's denoiser; the (frozen) autoencoder is shared.
        autoencoder = teacher.autoencoder
        teacher.autoencoder = nn.Identity()  # keep deepcopy from duplicating it
        try:
            student = copy.deepcopy(teacher)
        finally:
            teacher.autoencoder = autoencoder
        student.autoencoder = autoencoder
        student.config = dataclasses.replace(
            copy.deepcopy(teacher.config),
            name=recipe.name,
            description=f"TAD-SR one-step student distilled from {teacher.config.name or 'a teacher'} "
            f"by recipe {recipe.name} (EMA weights)",
            student_timestep=None,
        )
        if recipe.model.init:  # warm start (e.g. from the regression-only run), same architecture as the teacher
            load_weights_into(student, recipe.model.init)
        self.amp.module(student.denoiser)
        student.denoiser.requires_grad_(True).train()
        self.student = student
        self.student_net = wrap_ddp(X0Predictor(student), env)
        self.g_params = [p for p in student.denoiser.parameters() if p.requires_grad]
        self.opt_g = make_adamw(self.g_params, recipe.optim.g)
        self.ema = EMA(student.denoiser, recipe.ema)
        self.disc: TimeAwareDiscriminator | None = None
        self.opt_d: torch.optim.Optimizer | None = None
        if w.gan > 0 or w.feature > 0:  # feature matching reads the same frozen-encoder taps
            torch.manual_seed(recipe.seed + 1)
            ds = recipe.discriminator
            self.disc = TimeAwareDiscriminator(
                teacher.denoiser,
                teacher.config.denoiser,
                teacher.schedule,
                blocks=ds.blocks,
                middle=ds.middle,
                hidden=ds.hidden,
                time_dim=ds.time_dim,
                kernel=ds.kernel,
            ).to(self.device)
            self.amp.module(self.disc)
        if self.disc is not None and w.gan > 0:
            self.d_params = list(self.disc.parameters())
            if env.distributed:  # identical start on every process (weights and spectral-norm vectors)
                import torch.distributed as dist

                for value in self.disc.state_dict().values():
                    dist.broadcast(value, 0)
            self.opt_d = make_adamw(self.d_params, recipe.optim.d)
        self.perceptual = (
            PerceptualLoss(w.perceptual_taps, w.perceptual_crop, w.perceptual_blur).to(self.device) if w.perceptual > 0 else None
        )
        lo_hi = w.disc_timesteps if w.disc_timesteps is not None else [0, max(T - 2, 0)]
        self.disc_range = (int(lo_hi[0]), int(lo_hi[1]))
        self._d_acc_window: list[float] = []
        self.hfsd_ts = torch.tensor(w.hfsd_timesteps, dtype=torch.long)
        self.need_target = w.reg > 0 or (w.hfsd > 0 and w.hfsd_mode == "tadsr")
        self.micro = recipe.batch // (recipe.grad_accum * env.world)
        # The teacher's no-grad work (targets, HFSD's predictions) on the fastest engine the recipe allows.
        engine = choose_engine(recipe.targets.engine, recipe.targets.precision, self.amp)
        self.infer = TeacherInference(teacher, self.amp, engine, recipe.threads)
        self.ahead = recipe.targets.ahead and self.need_target
        self.cache = None
        if recipe.teacher_cache and self.need_target:
            from tadsr_cli.train.teacher_cache import TeacherCache, teacher_fingerprint

            data_key = {
                "data": recipe.to_dict().get("data"),
                "degradation": recipe.degradation_config().to_dict(),
                "seed": recipe.seed,
                "sampler": "deterministic",
            }
            if not self.infer.reference:
                # reduced-precision targets get folders of their own: a run never mixes them with fp32 ones (the
                # reference engines keep the key of earlier versions, so their caches stay valid)
                data_key["engine"] = engine
            self.cache = TeacherCache(recipe.teacher_cache, teacher_fingerprint(teacher, data_key))
        self.valset = (
            build_validation_set(recipe, student.scale, student.lq_multiple) if env.is_main else None
        )
        self.has_validation = self.valset is not None

    def describe(self) -> str:
        return f"tadsr {self.recipe.name}"

    def wrap_stream(self, stream: Any, batches: int) -> Any:
        return TargetsAhead(stream, self.targets_for, batches) if self.ahead else stream

    def build_train_dataset(self) -> Any:
        return build_train_dataset(self.recipe, self.student.scale, self.micro, self.env.world)

    def set_lr(self, step: int) -> dict[str, float]:
        o, total = self.recipe.optim, self.recipe.iterations
        lr_g = lr_at(step, o.g, total, o.lr_schedule, o.min_lr_ratio)
        set_lr(self.opt_g, lr_g)
        out = {"g": lr_g}
        if self.opt_d is not None:
            lr_d = lr_at(step, o.d, total, o.lr_schedule, o.min_lr_ratio)
            set_lr(self.opt_d, lr_d)
            out["d"] = lr_d
        return out

    # -- pieces ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_target(self, lq: Tensor, y: Tensor, eps: Tensor, seeds: list[int]) -> Tensor:
        """Deterministic T-step teacher sample from x_T = prior(y, eps) (from the cache where present)."""

        def compute(idx: list[int]) -> Tensor:
            return self.infer.sample(lq[idx], eps[idx], y[idx])

        if self.cache is None:
            return compute(list(range(lq.shape[0])))
        cached = self.cache.get(seeds)
        missing = [i for i, c in enumerate(cached) if c is None]
        out = torch.empty_like(y, dtype=torch.float32)
        for i, c in enumerate(cached):
            if c is not None:
                out[i] = c.to(out.device)
        if missing:
            fresh = compute(missing)
            out[missing] = fresh
            self.cache.put([seeds[i] for i in missing], fresh)
        return out

    @torch.no_grad()
    def targets_for(self, batch: dict[str, Any]) -> tuple[Tensor, float, float]:
        """The teacher targets of a micro-batch, with the wall and CPU seconds they took (this thread)."""

        def run() -> Tensor:
            lq = batch["lq"].to(self.device, non_blocking=True)
            seeds = [int(s) for s in batch["seed"]]
            y = self.teacher.lq_latent(lq).float()
            eps = sample_noise(seeds, tuple(y.shape[1:]), self.device)
            return self.teacher_target(lq, y, eps, seeds)

        return timed(run)

    def _targets(self, batch: dict[str, Any]) -> Tensor:
        future: Future | None = batch.pop("_targets", None)
        clock = self.clock
        if future is None:  # inline
            x_tch, wall, cpu = self.targets_for(batch)
            clock.add("targets", wall, cpu)
            return x_tch
        with clock.phase("targets"):  # waiting for the background thread
            x_tch, wall, cpu = future.result()
        clock.add("targets_ahead", wall, cpu)
        return x_tch

    def _prepare(self, batch: dict[str, Any], gen: torch.Generator, x_tch: Tensor | None) -> dict[str, Any]:
        t, amp = self.teacher, self.amp
        lq = batch["lq"].to(self.device, non_blocking=True)
        gt = batch["gt"].to(self.device, non_blocking=True)
        seeds = [int(s) for s in batch["seed"]]
        with torch.no_grad():
            x0 = t.encode(gt).float()
            y = t.lq_latent(lq).float()
        eps = sample_noise(seeds, tuple(y.shape[1:]), self.device)
        x_T = t.prior(y, eps)
        B = y.shape[0]
        lo, hi = self.disc_range
        t_d = torch.randint(lo, hi + 1, (B,), generator=gen).to(self.device)
        n_d = torch.randn(y.shape, generator=gen).to(self.device)
        t_h = self.hfsd_ts[torch.randint(0, len(self.hfsd_ts), (B,), generator=gen)].to(self.device)
        n_h = torch.randn(y.shape, generator=gen).to(self.device)
        if self.recipe.loss.fidelity_on == "all":
            fid_w = torch.ones(B, device=self.device)
        else:
            fid_w = torch.as_tensor(batch.get("light", [False] * B), dtype=torch.float32).to(self.device)
        cl = amp.tensor  # channels_last where the run uses it (the values are unchanged)
        return {
            "gen": gen,
            "fid_w": fid_w,
            "lq": cl(lq),
            "x0": cl(x0),
            "y": cl(y),
            "x_T": cl(x_T),
            "x_tch": None if x_tch is None else cl(x_tch),
            "t_d": t_d,
            "n_d": cl(n_d),
            "t_h": t_h,
            "n_h": cl(n_h),
        }

    def _student(self, p: dict[str, Any]) -> Tensor:
        T1 = self.student.config.one_step_timestep
        t = torch.full((p["y"].shape[0],), T1, dtype=torch.long, device=self.device)
        with self.amp.autocast():
            return self.student_net(p["x_T"], p["y"], t, p["lq"]).float()

    def _disc_features(self, x: Tensor, p: dict[str, Any]) -> list[Tensor]:
        """The frozen teacher encoder's taps on x noised at the discriminator's t with its noise."""
        assert self.disc is not None
        x_t = self.teacher.schedule.q_sample(x, p["y"], p["t_d"], p["n_d"])
        with self.amp.autocast():
            return self.disc.features(x_t, p["t_d"], p["lq"])

    def _disc_score(self, feats: list[Tensor], p: dict[str, Any]) -> Tensor:
        assert self.disc is not None
        with self.amp.autocast():
            return self.disc.score(feats, p["t_d"]).float()

    # -- one iteration ---------------------------------------------------------------------------------------------
    def train_step(self, batches: list[dict[str, Any]], step: int) -> dict[str, Tensor]:
        clock = self.clock
        gen = step_generator(self.recipe.seed, step, self.env.rank)
        prepared = []
        for b in batches:
            x_tch = self._targets(b) if self.need_target else None  # records its own phase
            with clock.phase("step"):
                prepared.append(self._prepare(b, gen, x_tch))
        with clock.phase("step"):
            logs = self._step(prepared, step)
        with clock.phase("bookkeeping"):
            self.ema.update(self.student.denoiser)
            if self.opt_d is not None:
                self._watch_discriminator(float(logs["d_acc"]), step)
        return logs

    def _step(self, prepared: list[dict[str, Any]], step: int) -> dict[str, Tensor]:
        r, w, amp = self.recipe, self.recipe.loss, self.amp
        n = len(prepared)
        zero = torch.zeros((), device=self.device)
        logs = {k: zero.clone() for k in self.loss_names}
        kept: Tensor | None = None  # with one micro-batch the student runs once for both steps

        # ---- D step ------------------------------------------------------------------------------------------
        if self.opt_d is not None:
            assert self.disc is not None
            self.disc.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            for p in prepared:
                if n == 1:
                    kept = self._student(p)
                    fake = kept.detach()
                else:
                    with torch.no_grad():
                        fake = self._student(p)
                real_feats = self._disc_features(p["x0"], p)
                p["real_feats"] = [f.detach() for f in real_feats]  # the frozen encoder's: reused by the G step
                real_logits = self._disc_score(real_feats, p)
                fake_logits = self._disc_score(self._disc_features(fake, p), p)
                l_d = d_hinge_loss(real_logits, fake_logits)
                amp.backward(l_d / n)
                logs["d_loss"] += l_d.detach() / n
                logs["d_real"] += real_logits.detach().mean() / n
                logs["d_fake"] += fake_logits.detach().mean() / n
                for key, value in discriminator_stats(
                    real_logits.detach(), fake_logits.detach(), p["t_d"], self.disc_range
                ).items():
                    logs[key] += value / n
            average_gradients(self.d_params, self.env)
            clip_and_step(self.opt_d, self.d_params, r.optim.d.grad_clip, amp)
            self.disc.requires_grad_(False)

        # ---- G step ------------------------------------------------------------------------------------------
        self.opt_g.zero_grad(set_to_none=True)
        for j, p in enumerate(prepared):
            sync = (
                self.student_net.no_sync() if self.env.distributed and j < n - 1 else contextlib.nullcontext()
            )
            with sync:
                x_s = kept if (kept is not None and n == 1) else self._student(p)
                total = zero.clone()
                if w.reg > 0:
                    l_reg = regression_loss(x_s, p["x_tch"])
                    total = total + w.reg * l_reg
                    logs["reg"] += l_reg.detach() / n
                if w.hfsd > 0:
                    y, lq = p["y"], p["lq"]

                    def denoise(x: Tensor, t: Tensor, y: Tensor = y, lq: Tensor = lq) -> Tensor:
                        return self.infer.predict_x0(x, y, t, lq)

                    l_hfsd = hfsd_loss(
                        x_s,
                        p["x_tch"],
                        y,
                        p["t_h"],
                        p["n_h"],
                        denoise,
                        self.teacher.schedule,
                        w.hfsd_mode,
                        x_hr=p["x0"],
                    )
                    total = total + w.hfsd * l_hfsd
                    logs["hfsd"] += l_hfsd.detach() / n
                if w.fidelity > 0:
                    l_fid = fidelity_loss(x_s, p["x0"], p["fid_w"])
                    total = total + w.fidelity * l_fid
                    logs["fidelity"] += l_fid.detach() / n
                use_gan = self.opt_d is not None and step >= w.gan_start
                if use_gan or w.feature > 0:
                    fake_feats = self._disc_features(x_s, p)
                if use_gan:
                    l_gan = g_hinge_loss(self._disc_score(fake_feats, p))
                    total = total + w.gan * l_gan
                    logs["gan_g"] += l_gan.detach() / n
                if self.perceptual is not None:
                    decode = self.student.decode
                    with self.amp.autocast():  # the VGG in bf16 where the run uses it: most of this term's cost
                        l_per = self.perceptual(decode(x_s), decode(p["x0"]), p["gen"]).float()
                    total = total + w.perceptual * l_per
                    logs["perceptual"] += l_per.detach() / n
                if w.feature > 0:
                    if "real_feats" not in p:  # no D step this run
                        with torch.no_grad():
                            p["real_feats"] = self._disc_features(p["x0"], p)
                    l_fm = feature_match_loss(fake_feats, p["real_feats"])
                    total = total + w.feature * l_fm
                    logs["feature"] += l_fm.detach() / n
                amp.backward(total / n)
                logs["g_total"] += total.detach() / n
        clip_and_step(self.opt_g, self.g_params, r.optim.g.grad_clip, amp)
        amp.update()
        return logs

    def _watch_discriminator(self, acc: float, step: int) -> None:
        """Warn (once per window) when D tells real from fake no better than chance: its loss is then noise."""
        self._d_acc_window.append(acc)
        window = self.D_WATCH_WINDOW
        if (step + 1) % window == 0 and self.env.is_main:
            mean = sum(self._d_acc_window[-window:]) / window
            if mean < self.D_ACC_WARN:
                self.console.print(
                    f"[yellow]warning:[/yellow] the discriminator is not learning: real beats fake on "
                    f"{mean:.0%} of pairs over iterations {step + 2 - window}-{step + 1} "
                    "(try a higher optim.d.lr, lower loss.disc_timesteps, more discriminator.blocks)",
                    highlight=False,
                )
            self._d_acc_window.clear()

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": {k: v.detach().cpu().clone() for k, v in self.student.denoiser.state_dict().items()},
            "ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
        }
        if self.disc is not None and self.opt_d is not None:
            state["disc"] = {k: v.detach().cpu().clone() for k, v in self.disc.state_dict().items()}
            state["opt_d"] = self.opt_d.state_dict()
        if self.amp.scaler is not None:
            state["scaler"] = self.amp.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") not in (None, self.kind):
            raise TrainingError(
                f"the checkpoint is from a {state.get('kind')!r} run, not a {self.kind!r} run"
            )
        self.student.denoiser.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.disc is not None and self.opt_d is not None:
            if "disc" not in state:
                raise TrainingError(
                    "the checkpoint has no discriminator but the recipe uses one (loss.gan > 0)"
                )
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        if self.amp.scaler is not None and "scaler" in state:
            self.amp.scaler.load_state_dict(state["scaler"])

    # -- validation and export -------------------------------------------------------------------------------------
    def validate(self, step: int, folder: Path | None) -> dict[str, float]:
        model = self.student
        return validate_ema_model(
            model, self.ema, self.amp, self.valset, model.one_step,
            self.device, folder, self.recipe.validation.save_images,
        )

    def export(self, path: Path) -> Path:
        with ema_weights(self.student.denoiser, self.ema):
            return save_model(self.student, path)
