"""The shared training loop of `tadsr distill`: teacher training and TAD-SR distillation both run through `train`.

What it provides around a `TrainTask` (teacher.py, distill.py):

* distributed data parallel via torchrun (`WORLD_SIZE`/`RANK`/`LOCAL_RANK`; gloo on CPU, NCCL on CUDA); rank 0
  alone writes checkpoints, logs, validation images and the exported model;
* data: a resumable, epoch-aware batch stream over the train dataset (`DataStream`), DataLoader workers;
* AdamW with linear warm-up (then constant or cosine), gradient clipping, gradient accumulation, EMA, AMP
  (bf16 / fp16 with a grad scaler where the device supports it);
* atomic checkpoints (`step-XXXXXXXX.pt` + `.sha256`), keep-last-N, `--resume` bit-exact (model, EMA, D,
  optimisers, scaler, step, RNG states; the data stream restarts at the same micro-batch); a corrupt last
  checkpoint falls back to the previous one and says so;
* a NaN/Inf loss stops training with the iteration number (the last good checkpoint is kept, nothing is saved);
  Ctrl-C (SIGINT) or SIGTERM saves a checkpoint at the end of the current iteration, then exits;
* periodic validation (PSNR-Y, a few saved PNGs), a rich progress bar with loss columns, `log.jsonl` + `log.csv`;
* export of the EMA model as a self-describing model file (`model.safetensors`).

Randomness: the model initialisation uses the recipe seed; each iteration draws its timesteps and noises from a
generator seeded by `(seed, iteration, rank)`; the prior noise of each sample is seeded by the sample's own seed
(so cached teacher targets stay valid). Hence a resumed run repeats an uninterrupted one exactly (CPU, same
process count).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import RecipeError, TrainingError
from tadsr_cli.base.interrupts import DeferredStop
from tadsr_cli.pipeline.progress import training_columns
from tadsr_cli.train.checkpointing import CKPT_FORMAT, CKPT_VERSION, CheckpointManager
from tadsr_cli.train.data_stream import DataStream
from tadsr_cli.train.distributed import reduce_scalars
from tadsr_cli.train.randomness import rng_state, set_rng_state
from tadsr_cli.train.run_log import RunLogger
from tadsr_cli.train.task import TrainResult, TrainTask
from tadsr_cli.train.validation import has_validation, run_validation

__all__ = ["train"]

Say = Callable[[str], None]


class _Display:
    """Progress of rank 0: a rich bar (loss columns fitted to the width) on a terminal, else one plain line per
    logging interval."""

    def __init__(self, task: TrainTask, console: Console, start: int, enabled: bool, say: Say) -> None:
        self.task, self.console, self.say, self.enabled = task, console, say, enabled
        self.bar: Progress | None = None
        if not enabled:
            return
        total = task.recipe.iterations
        self.bar = Progress(
            *training_columns(console.width, task.describe(), list(task.loss_names), total),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.bar.start()
        self.bar_task = self.bar.add_task(task.describe(), total=total, completed=start, rate="",
                                          **{name: "-" for name in task.loss_names})

    def advance(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(self.bar_task, completed=step)

    def record(self, step: int, rate: float, mean: dict[str, float]) -> None:
        names = [n for n in self.task.loss_names if n in mean]
        if self.bar is not None and self.console.is_terminal:
            self.bar.update(self.bar_task, completed=step, rate=f"{rate:.2f} it/s",
                            **{n: f"{mean[n]:.4g}" for n in names})
        elif self.enabled:
            text = " ".join(f"{n} {mean[n]:.4g}" for n in names)
            self.say(f"{self.task.describe()} {step}/{self.task.recipe.iterations} {rate:.2f} it/s {text}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _LossMeter:
    """Means of the losses over each logging interval, and the iteration rate over it."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.window_start = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def flush(self) -> tuple[dict[str, float], float]:
        now = time.perf_counter()
        rate = self.count / max(now - self.window_start, 1e-9)
        mean = {n: v / self.count for n, v in self.sums.items()}
        self.sums, self.count, self.window_start = {}, 0, now
        return mean, rate


class _Saver:
    """Writes a checkpoint of the task's state (rank 0) at most once per iteration."""

    def __init__(self, task: TrainTask, ckpts: CheckpointManager, last_saved: int, say: Say) -> None:
        self.task, self.ckpts, self.last_saved, self.say = task, ckpts, last_saved, say

    def save(self, step: int, reason: str = "") -> Path | None:
        if self.last_saved == step:
            return self.ckpts.latest_path()
        path = None
        if self.task.env.is_main:
            recipe = self.task.recipe
            state = self.task.state_dict()
            state.update(format=CKPT_FORMAT, version=CKPT_VERSION, step=step, rng=rng_state(),
                         recipe=json.dumps(recipe.to_dict(), sort_keys=True), kind=self.task.kind)
            path = self.ckpts.save(state, step)
            if reason:
                self.say(f"{reason}: saved {path}")
        self.last_saved = step
        return path

    def last_good(self) -> Path | None:
        return self.ckpts.latest_path() if self.last_saved >= 0 else None


def _restore(task: TrainTask, ckpts: CheckpointManager, resume: bool, out_dir: Path, say: Say) -> int:
    """The iteration to start at: from the newest readable checkpoint with `resume`, else 0 (refusing to
    start over a run that has checkpoints)."""
    recipe = task.recipe
    if not resume:
        if ckpts.list():
            raise TrainingError(
                f"{out_dir} already holds checkpoints: pass --resume to continue, or choose another --out"
            )
        return 0
    loaded = ckpts.load_latest(warn=lambda m: say(f"[yellow]warning:[/yellow] {m}"))
    if loaded is None:
        say(f"no checkpoint in {ckpts.folder}: starting from scratch")
        return 0
    state, path = loaded
    task.load_state_dict(state)
    set_rng_state(state["rng"])
    start = int(state["step"])
    say(f"resumed from {path} (iteration {start})")
    changed = _recipe_changes(state.get("recipe"), recipe.to_dict())
    if changed:
        say(f"[yellow]warning:[/yellow] the recipe changed since that checkpoint: {', '.join(changed)} "
            "(resuming with the new values)")
    if start >= recipe.iterations:
        say(f"already at iteration {start} of {recipe.iterations}")
    return start


def _micro_batch(task: TrainTask) -> int:
    recipe, world = task.recipe, task.env.world
    micro = recipe.batch // (recipe.grad_accum * world)
    if micro < 1 or micro * recipe.grad_accum * world != recipe.batch:
        raise RecipeError(
            f"{recipe.source}: batch {recipe.batch} must be a multiple of grad_accum x processes "
            f"({recipe.grad_accum} x {world})"
        )
    return micro


def train(
    task: TrainTask,
    out_dir: Path,
    resume: bool = False,
    console: Console | None = None,
    progress: bool = True,
    keep_loss_history: bool = False,
) -> TrainResult:
    """Run (or resume) the recipe of `task` into `out_dir`; returns what happened. Raises `TrainingError`s."""
    recipe, env = task.recipe, task.env
    console = console or Console(stderr=True)
    main = env.is_main
    out_dir = Path(out_dir)
    say: Say = (lambda msg: console.print(msg, highlight=False)) if main else (lambda msg: None)
    ckpts = CheckpointManager(out_dir / "checkpoints", recipe.checkpoint.keep)
    start = _restore(task, ckpts, resume, out_dir, say)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write_path(out_dir / "recipe.json") as tmp:
            tmp.write_text(json.dumps(recipe.to_dict(), indent=2, sort_keys=True))
    accum = recipe.grad_accum
    micro = _micro_batch(task)
    stream = DataStream(
        task.build_train_dataset(), micro, env, recipe.data.workers, start=start * accum,
        fixed_epoch=recipe.data.fixed_crops, crop_reuse=recipe.data.crop_reuse, seed=recipe.seed,
    )
    stream = task.wrap_stream(stream, max(recipe.iterations - start, 0) * accum)
    clock = task.clock
    logger = RunLogger(out_dir, ["step", "lr", *task.loss_names, "it_per_s", "elapsed_s"], enabled=main)
    if resume and main:
        logger.truncate_after(start)
    saver = _Saver(task, ckpts, start if resume and start > 0 else -1, say)
    signals = DeferredStop()  # Ctrl-C / SIGTERM: finish the iteration, save, stop
    display = _Display(task, console, start, main and progress, say)
    meter = _LossMeter()
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    step = start
    t0 = time.perf_counter()
    try:
        while step < recipe.iterations:
            lrs = task.set_lr(step)
            with clock.phase("data"):
                batches = [stream.next() for _ in range(accum)]
            losses = task.train_step(batches, step)
            clock.start("bookkeeping")
            names = list(losses)
            reduced = reduce_scalars(
                [float(losses[n]) for n in names] + [1.0 if signals.requested else 0.0], env, task.device
            )
            values = dict(zip(names, reduced[:-1], strict=True))
            step += 1
            bad = [n for n, v in values.items() if not math.isfinite(v)]
            if bad:
                latest = saver.last_good()
                raise TrainingError(
                    f"loss {bad[0]} became {values[bad[0]]} at iteration {step}: training stopped; "
                    + (f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet")
                )
            meter.add(values)
            if step % recipe.log.every == 0 or step == recipe.iterations:
                mean, rate = meter.flush()
                record = {"step": step, "lr": lrs.get("g", 0.0), **mean, "it_per_s": rate,
                          "elapsed_s": time.perf_counter() - t0}
                logger.log(record)
                if keep_loss_history:
                    history.append(record)
                display.record(step, rate, mean)
            else:
                display.advance(step)
            if recipe.validation.every and step % recipe.validation.every == 0 and step < recipe.iterations:
                metrics = run_validation(task, step, out_dir, say)
            if step % recipe.checkpoint.every == 0 and step < recipe.iterations:
                saver.save(step)
            clock.stop("bookkeeping")
            clock.end_iteration()
            if reduced[-1] > 0:  # SIGINT/SIGTERM on some process
                path = saver.save(step, "interrupted")
                raise KeyboardInterrupt(
                    f"stopped at iteration {step}" + (f"; checkpoint {path}" if path else "")
                )
        saver.save(step)
        metrics = run_validation(task, step, out_dir, say) if has_validation(task) else metrics
        model_path = None
        if main:
            model_path = task.export(out_dir / "model.safetensors")
            say(f"exported the EMA model to {model_path}")
        elapsed = time.perf_counter() - t0
        return TrainResult(step, out_dir, model_path, ckpts.latest_path() if main else None, metrics, history,
                           elapsed, (step - start) / elapsed if elapsed > 0 else 0.0)
    finally:
        # A second Ctrl-C interrupts mid-iteration: nothing is saved then (the state may be half-updated);
        # the last checkpoint stays the newest one.
        signals.restore()
        display.stop()
        stream.close()


_RESUME_FREE_KEYS = {"iterations", "output_dir", "checkpoint", "log", "validation", "threads", "device"}


def _recipe_changes(saved: str | None, current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between the checkpoint's recipe and the current one (bookkeeping keys
    such as iterations, logging, checkpointing and validation may change freely)."""
    if not saved:
        return []
    try:
        old = json.loads(saved)
    except json.JSONDecodeError:
        return []
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if not prefix and k in _RESUME_FREE_KEYS or prefix == "data." and k == "workers":
                    continue
                walk(a.get(k), b.get(k), f"{prefix}{k}.")
        elif a != b:
            out.append(prefix.rstrip("."))

    walk(old, current, "")
    return out
