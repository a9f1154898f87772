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

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import Progress
from torch import Tensor, nn

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import ConfigError, RecipeError, TrainingError
from tadsr_cli.pipeline.progress import training_columns
from tadsr_cli.train.recipe import OptimizerSettings, Recipe

__all__ = [
    "EMA",
    "Amp",
    "CheckpointManager",
    "DataStream",
    "DistEnv",
    "RunLogger",
    "TrainTask",
    "lr_at",
    "setup_distributed",
    "step_generator",
    "train",
]

CKPT_FORMAT = "tadsr-train-checkpoint"
CKPT_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# Devices, processes, precision
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' is not available on this machine")
    return dev


def setup_distributed(device_pref: str = "auto") -> DistEnv:
    """Read torchrun's environment; initialise the process group (gloo on CPU, NCCL on CUDA) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    env = DistEnv(rank=rank, world=world, local_rank=local_rank, device=device)
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise TrainingError("torch.distributed is not available in this PyTorch build")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        import datetime

        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        env.initialized_here = True
    return env


def teardown_distributed(env: DistEnv) -> None:
    if env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


class Amp:
    """Autocast + (fp16) grad scaling. `mode`: none | bf16 | fp16 | auto (bf16 on CUDA where supported, else none)."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.device = device
        dtype: torch.dtype | None = None
        if mode == "auto":
            if device.type == "cuda" and torch.cuda.is_bf16_supported():
                dtype = torch.bfloat16
        elif mode == "bf16":
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise RecipeError("amp: bf16 is not supported by this GPU; use fp16 or none")
            dtype = torch.bfloat16
        elif mode == "fp16":
            if device.type != "cuda":
                raise RecipeError(
                    f"amp: fp16 needs a CUDA device (running on {device.type}); use bf16 or none"
                )
            dtype = torch.float16
        elif mode != "none":
            raise RecipeError(f"amp: unknown mode {mode!r}")
        self.dtype = dtype
        self.mode = "none" if dtype is None else ("bf16" if dtype == torch.bfloat16 else "fp16")
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()


def step_generator(
    seed: int, step: int, rank: int, stream: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator whose state depends only on (seed, iteration, rank, stream): resumable without saved state."""
    words = np.random.SeedSequence([seed % 2**63, step, rank, stream, 0x7AD5]).generate_state(2, np.uint32)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(words[0]) << 31 ^ int(words[1]))
    return gen


def sample_noise(seeds: list[int], shape: tuple[int, ...], device: torch.device) -> Tensor:
    """One N(0, 1) tensor per sample, each drawn from a generator seeded by that sample's seed (CPU, then moved)."""
    out = []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s) % 2**63)
        out.append(torch.randn(shape, generator=gen))
    return torch.stack(out).to(device)


# ---------------------------------------------------------------------------------------------------------------
# Optimisation helpers
# ---------------------------------------------------------------------------------------------------------------
def make_adamw(params: list[nn.Parameter], s: OptimizerSettings) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        params, lr=s.lr, betas=(s.betas[0], s.betas[1]), weight_decay=s.weight_decay, foreach=True
    )


def lr_at(
    step: int, s: OptimizerSettings, total: int, schedule: str = "constant", min_ratio: float = 0.0
) -> float:
    """Learning rate of iteration `step` (0-based): linear warm-up to `lr`, then constant or cosine to lr*min_ratio."""
    if s.warmup > 0 and step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    if schedule == "cosine":
        span = max(total - s.warmup, 1)
        progress = min(max(step - s.warmup, 0) / span, 1.0)
        return s.lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return s.lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def average_gradients(params: list[nn.Parameter], env: DistEnv) -> None:
    """All-reduce (mean) the gradients of `params` across processes in one flat buffer (no-op for one process)."""
    if not env.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params if p.requires_grad]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= env.world
    offset = 0
    for p in params:
        if not p.requires_grad:
            continue
        n = p.numel()
        chunk = flat[offset : offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


class EMA:
    """Exponential moving average of a module's floating-point state (parameters and buffers), kept in float32."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow: dict[str, Tensor] = {
            k: (v.detach().float().clone() if v.is_floating_point() else v.detach().clone())
            for k, v in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        src = module.state_dict()
        fl_dst, fl_src = [], []
        for k, v in src.items():
            dst = self.shadow[k]
            if dst.is_floating_point():
                fl_dst.append(dst)
                fl_src.append(v.detach().float())
            else:
                dst.copy_(v)
        if fl_dst:
            torch._foreach_lerp_(fl_dst, fl_src, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            v.copy_(self.shadow[k].to(v.dtype))

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(sd))
        if missing:
            raise TrainingError(f"checkpoint EMA lacks {len(missing)} entries (e.g. {missing[0]})")
        for k, v in self.shadow.items():
            v.copy_(sd[k].to(v.device, v.dtype))

    def to(self, device: torch.device) -> EMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self


# ---------------------------------------------------------------------------------------------------------------
# RNG state (saved in checkpoints; training randomness itself is step-seeded)
# ---------------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class CheckpointManager:
    """`folder/step-XXXXXXXX.pt` written atomically, each followed by a `.sha256` sidecar; keeps the last `keep`."""

    def __init__(self, folder: Path, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = max(int(keep), 1)

    def path_for(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}.pt"

    def list(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.glob("step-*.pt"):
            try:
                out.append((int(p.stem.split("-", 1)[1]), p))
            except ValueError:
                continue
        return sorted(out)

    def latest_path(self) -> Path | None:
        items = self.list()
        return items[-1][1] if items else None

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.path_for(step)
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        with atomic_write_path(path) as tmp:
            tmp.write_bytes(data)
        sidecar = path.with_suffix(".sha256")
        with atomic_write_path(sidecar) as tmp:
            tmp.write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
        self.prune()
        return path

    def prune(self) -> None:
        items = self.list()
        for _, p in items[: max(len(items) - self.keep, 0)]:
            for q in (p, p.with_suffix(".sha256")):
                with contextlib.suppress(OSError):
                    q.unlink()

    def load(self, path: Path) -> dict[str, Any]:
        sidecar = path.with_suffix(".sha256")
        if sidecar.is_file():
            expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
            if expected and _sha256(path) != expected:
                raise TrainingError(f"{path.name}: checksum mismatch (file corrupt or truncated)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means unreadable
            raise TrainingError(
                f"{path.name}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
            raise TrainingError(f"{path.name}: not a tadsr training checkpoint")
        return state

    def load_latest(self, warn: Callable[[str], None]) -> tuple[dict[str, Any], Path] | None:
        """The newest readable checkpoint; unreadable newer ones are reported through `warn` and skipped."""
        items = self.list()
        if not items:
            return None
        errors = []
        for i in range(len(items) - 1, -1, -1):
            path = items[i][1]
            try:
                state = self.load(path)
            except TrainingError as exc:
                errors.append(str(exc))
                prev = items[i - 1][1].name if i > 0 else None
                warn(
                    f"checkpoint {exc}; "
                    + (f"falling back to the previous one, {prev}" if prev else "no older checkpoint")
                )
                continue
            return state, path
        raise TrainingError(f"no readable checkpoint in {self.folder}: " + "; ".join(errors))


# ---------------------------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------------------------
class RunLogger:
    """Appends one record per logging interval to `log.jsonl` and `log.csv` (fixed columns) in `folder`."""

    def __init__(self, folder: Path, columns: list[str], enabled: bool = True) -> None:
        self.enabled = enabled
        self.columns = list(columns)
        self.jsonl = Path(folder) / "log.jsonl"
        self.csv = Path(folder) / "log.csv"

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of iterations after `step` (they are about to be redone)."""
        if not self.enabled:
            return
        if self.jsonl.is_file():
            keep = []
            for line in self.jsonl.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= step:
                        keep.append(line)
            with atomic_write_path(self.jsonl) as tmp:
                tmp.write_text("".join(k + "\n" for k in keep))
        if self.csv.is_file():
            with open(self.csv, newline="") as fh:
                rows = list(csv.reader(fh))
            if rows:
                header, body = rows[0], rows[1:]
                si = header.index("step") if "step" in header else 0
                body = [r for r in body if r and r[si].isdigit() and int(r[si]) <= step]
                with atomic_write_path(self.csv) as tmp, open(tmp, "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(header)
                    w.writerows(body)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        new = not self.csv.is_file() or self.csv.stat().st_size == 0
        with open(self.csv, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(self.columns)
            w.writerow([_fmt(record.get(c, "")) for c in self.columns])


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# ---------------------------------------------------------------------------------------------------------------
# Data stream
# ---------------------------------------------------------------------------------------------------------------
class _EpochBatches(torch.utils.data.Sampler):
    """Batch sampler of one epoch for one rank, starting at a given batch; mutated between epochs."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class DataStream:
    """Endless micro-batches for one rank: epoch `e` covers dataset indices 0..L-1 (L a multiple of world*micro),
    rank `r` takes index `(b * micro + k) * world + r` for its batch `b`. Items depend on (seed, epoch, index) only,
    so the stream can restart at any micro-batch (`start`) and yields exactly what an uninterrupted run saw."""

    def __init__(
        self, dataset: Any, micro: int, env: DistEnv, workers: int, start: int = 0, fixed_epoch: bool = False,
        crop_reuse: int = 1, seed: int = 0,
    ) -> None:
        self.dataset, self.micro, self.env = dataset, micro, env
        self.fixed_epoch = fixed_epoch
        self.crop_reuse, self.seed = max(1, int(crop_reuse)), int(seed)
        length = len(dataset)
        self.per_epoch = length // (micro * env.world)
        if self.per_epoch < 1:
            raise TrainingError(
                f"the dataset has {length} items per epoch, fewer than one global micro-batch ({micro} x {env.world})"
            )
        self.position = start
        self._sampler = _EpochBatches()
        from tadsr_cli.train.datasets import worker_init_fn

        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=worker_init_fn if workers > 0 else None,
            pin_memory=env.device.type == "cuda",
            prefetch_factor=2 if workers > 0 else None,
        )
        self._it: Iterator | None = None

    def _start_epoch(self) -> None:
        epoch, first = divmod(self.position, self.per_epoch)
        w, r, m = self.env.world, self.env.rank, self.micro
        slots = np.arange(self.per_epoch * m * w)
        if self.crop_reuse > 1:
            # The same crops again: batch them differently (a permutation that depends on the epoch only, so a
            # resumed run sees the same batches).
            slots = np.random.default_rng([self.seed % 2**63, 0x5EED_0005, epoch]).permutation(slots)
        self._sampler.batches = [
            [int(slots[(b * m + k) * w + r]) for k in range(m)] for b in range(first, self.per_epoch)
        ]
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(0 if self.fixed_epoch else epoch // self.crop_reuse)
        self._it = iter(self.loader)

    def next(self) -> dict[str, Any]:
        if self._it is None or self.position % self.per_epoch == 0:
            self._start_epoch()
        assert self._it is not None
        batch = next(self._it)
        self.position += 1
        return batch

    def close(self) -> None:
        self._it = None


# ---------------------------------------------------------------------------------------------------------------
# The task interface
# ---------------------------------------------------------------------------------------------------------------
class TrainTask:
    """What `train` drives. Subclasses: `TeacherTask` (teacher.py), `DistillTask` (distill.py)."""

    kind: str = ""
    loss_names: list[str] = []

    def __init__(self, recipe: Recipe, env: DistEnv, console: Console) -> None:
        self.recipe = recipe
        self.env = env
        self.device = env.device
        self.console = console
        self.amp = Amp(recipe.amp, env.device)

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


def _signal_guard() -> tuple[dict[str, bool], Callable[[], None]]:
    """First SIGINT/SIGTERM sets a flag (checked between iterations); a second SIGINT interrupts at once."""
    flag = {"stop": False}
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        flag["stop"] = True
        # a second Ctrl-C raises KeyboardInterrupt immediately
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, h)

    return flag, restore


def _reduce_scalars(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    if not env.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return (t / env.world).tolist()


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
    ckpts = CheckpointManager(out_dir / "checkpoints", recipe.checkpoint.keep)
    say = (lambda msg: console.print(msg, highlight=False)) if main else (lambda msg: None)

    start = 0
    if resume:
        loaded = ckpts.load_latest(warn=lambda m: say(f"[yellow]warning:[/yellow] {m}"))
        if loaded is None:
            say(f"no checkpoint in {ckpts.folder}: starting from scratch")
        else:
            state, path = loaded
            task.load_state_dict(state)
            set_rng_state(state["rng"])
            start = int(state["step"])
            say(f"resumed from {path} (iteration {start})")
            changed = _recipe_changes(state.get("recipe"), recipe.to_dict())
            if changed:
                say(f"[yellow]warning:[/yellow] the recipe changed since that checkpoint: {', '.join(changed)} "
                    "(resuming with the new values)")
    elif ckpts.list():
        raise TrainingError(
            f"{out_dir} already holds checkpoints: pass --resume to continue, or choose another --out"
        )
    if start >= recipe.iterations and resume:
        say(f"already at iteration {start} of {recipe.iterations}")

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write_path(out_dir / "recipe.json") as tmp:
            tmp.write_text(json.dumps(recipe.to_dict(), indent=2, sort_keys=True))
    accum = recipe.grad_accum
    micro = recipe.batch // (accum * env.world)
    if micro < 1 or micro * accum * env.world != recipe.batch:
        raise RecipeError(
            f"{recipe.source}: batch {recipe.batch} must be a multiple of grad_accum x processes "
            f"({accum} x {env.world})"
        )
    dataset = task.build_train_dataset()
    stream = DataStream(
        dataset, micro, env, recipe.data.workers, start=start * accum, fixed_epoch=recipe.data.fixed_crops,
        crop_reuse=recipe.data.crop_reuse, seed=recipe.seed,
    )
    columns = ["step", "lr", *task.loss_names, "it_per_s", "elapsed_s"]
    logger = RunLogger(out_dir, columns, enabled=main)
    if resume and main:
        logger.truncate_after(start)

    flag, restore_signals = _signal_guard()
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    step = start
    last_saved = start if resume and start > 0 else -1
    t0 = time.perf_counter()
    window_t, window_n = time.perf_counter(), 0
    rate = 0.0
    acc: dict[str, float] = {}
    acc_n = 0

    bar = None
    if main and progress:
        bar = Progress(
            *training_columns(console.width, task.describe(), list(task.loss_names), recipe.iterations),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        bar.start()
        bar_task = bar.add_task(task.describe(), total=recipe.iterations, completed=start, rate="",
                                **{name: "-" for name in task.loss_names})

    def save(reason: str = "") -> Path | None:
        nonlocal last_saved
        if last_saved == step:
            return ckpts.latest_path()
        path = None
        if main:
            state = task.state_dict()
            state.update(
                format=CKPT_FORMAT,
                version=CKPT_VERSION,
                step=step,
                rng=rng_state(),
                recipe=json.dumps(recipe.to_dict(), sort_keys=True),
                kind=task.kind,
            )
            path = ckpts.save(state, step)
            if reason:
                say(f"{reason}: saved {path}")
        last_saved = step
        return path

    try:
        while step < recipe.iterations:
            batches = [stream.next() for _ in range(accum)]
            lrs = task.set_lr(step)
            losses = task.train_step(batches, step)
            names = list(losses)
            local = [float(losses[n]) for n in names] + [1.0 if flag["stop"] else 0.0]
            reduced = _reduce_scalars(local, env, task.device)
            stop_requested = reduced[-1] > 0
            values = dict(zip(names, reduced[:-1], strict=True))
            step += 1
            bad = [n for n, v in values.items() if not math.isfinite(v)]
            if bad:
                latest = ckpts.latest_path() if last_saved >= 0 else None
                raise TrainingError(
                    f"loss {bad[0]} became {values[bad[0]]} at iteration {step}: training stopped; "
                    + (f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet")
                )
            for n, v in values.items():
                acc[n] = acc.get(n, 0.0) + v
            acc_n += 1
            window_n += 1
            if step % recipe.log.every == 0 or step == recipe.iterations:
                now = time.perf_counter()
                rate = window_n / max(now - window_t, 1e-9)
                window_t, window_n = now, 0
                mean = {n: v / acc_n for n, v in acc.items()}
                acc, acc_n = {}, 0
                record = {
                    "step": step,
                    "lr": lrs.get("g", 0.0),
                    **mean,
                    "it_per_s": rate,
                    "elapsed_s": now - t0,
                }
                logger.log(record)
                if keep_loss_history:
                    history.append(record)
                text = " ".join(f"{n} {mean[n]:.4g}" for n in task.loss_names if n in mean)
                if bar is not None and console.is_terminal:
                    bar.update(bar_task, completed=step, rate=f"{rate:.2f} it/s",
                               **{n: f"{mean[n]:.4g}" for n in task.loss_names if n in mean})
                elif main and progress:
                    say(f"{task.describe()} {step}/{recipe.iterations} {rate:.2f} it/s {text}")
            elif bar is not None:
                bar.update(bar_task, completed=step)
            if recipe.validation.every and step % recipe.validation.every == 0 and step < recipe.iterations:
                metrics = _validate(task, step, out_dir, logger, say)
            if step % recipe.checkpoint.every == 0 and step < recipe.iterations:
                save()
            if stop_requested:
                path = save("interrupted")
                raise KeyboardInterrupt(
                    f"stopped at iteration {step}" + (f"; checkpoint {path}" if path else "")
                )
        # end of training
        save()
        metrics = _validate(task, step, out_dir, logger, say) if _has_validation(task) else metrics
        model_path = None
        if main:
            model_path = task.export(out_dir / "model.safetensors")
            say(f"exported the EMA model to {model_path}")
        elapsed = time.perf_counter() - t0
        done = step - start
        return TrainResult(
            step,
            out_dir,
            model_path,
            ckpts.latest_path() if main else None,
            metrics,
            history,
            elapsed,
            done / elapsed if elapsed > 0 else 0.0,
        )
    finally:
        # A second Ctrl-C interrupts mid-iteration: nothing is saved then (the state may be half-updated);
        # the last checkpoint stays the newest one.
        restore_signals()
        if bar is not None:
            bar.stop()
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


def _has_validation(task: TrainTask) -> bool:
    return task.recipe.validation.n_images > 0 and getattr(task, "has_validation", False)


def _validate(
    task: TrainTask, step: int, out_dir: Path, logger: RunLogger, say: Callable[[str], None]
) -> dict[str, float]:
    if not _has_validation(task) or not task.env.is_main:
        return {}
    folder = out_dir / "validation" / f"step-{step:08d}" if task.recipe.validation.save_images else None
    metrics = task.validate(step, folder)
    if metrics:
        say(f"validation at {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        with open(out_dir / "validation.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Data and validation shared by the tasks
# ---------------------------------------------------------------------------------------------------------------
def _hr_folders(recipe: Recipe) -> list[Path]:
    hr = recipe.data.hr
    return [Path(h) for h in ([hr] if isinstance(hr, str) else list(hr or []))]


def split_train_files(recipe: Recipe) -> tuple[list[Path], list[Path]]:
    """HR training files (exclude list applied) and the held-out files (`data.holdout`), for `hr` data."""
    from tadsr_cli.train.data_files import is_excluded as _excluded
    from tadsr_cli.train.data_files import list_images, split_holdout

    excl = {str(e) for e in recipe.data.exclude}
    files: list[Path] = []
    for folder in _hr_folders(recipe):
        files += [f for f in list_images(folder) if not _excluded(f, folder, excl)]
    if not files:
        where = ", ".join(str(f) for f in _hr_folders(recipe))
        raise TrainingError(
            f"data folder {where} has no usable images" + (" (after exclusions)" if excl else "")
        )
    if recipe.data.holdout:
        train_files, held = split_holdout(files, recipe.data.holdout)
        return list(train_files), list(held)
    return files, []


def build_train_dataset(recipe: Recipe, scale: int, micro: int, world: int) -> Any:
    """The training dataset; its length is rounded up to a multiple of one global micro-batch (micro x world)."""
    from tadsr_cli.train.datasets import HRFolderDataset, PairedFolderDataset

    d = recipe.data
    unit = micro * world
    if d.hr is not None:
        files, _ = split_train_files(recipe)
        length = d.length or len(files)
        length = -(-length // unit) * unit
        return HRFolderDataset(
            files,
            gt_size=d.gt_size,
            scale=scale,
            degradation=recipe.degradation_config(),
            seed=recipe.seed,
            length=length,
        )
    probe = PairedFolderDataset(
        d.lq, d.gt, gt_size=d.gt_size, scale=scale, seed=recipe.seed, exclude=d.exclude, check_files=False
    )
    length = -(-(d.length or len(probe.pairs)) // unit) * unit
    return PairedFolderDataset(
        d.lq, d.gt, gt_size=d.gt_size, scale=scale, seed=recipe.seed, exclude=d.exclude, length=length
    )


def build_validation_set(recipe: Recipe, scale: int, lq_multiple: int) -> Any | None:
    """Fixed validation pairs: `validation.files` of `validation.folder` (default: the HR folder), all images of
    `validation.folder`, or the `data.holdout` files; None when there is nothing to validate on."""
    from tadsr_cli.train.data_files import list_images
    from tadsr_cli.train.datasets import ValidationSet

    v = recipe.validation
    if v.n_images == 0:
        return None
    if v.lq_size % lq_multiple:
        raise RecipeError(
            f"{recipe.source}: validation.lq_size {v.lq_size} must be a multiple of {lq_multiple}"
        )
    files: list[Path] = []
    if v.files:
        folder = (
            Path(v.folder) if v.folder else (_hr_folders(recipe)[0] if recipe.data.hr is not None else None)
        )
        if folder is None:
            raise RecipeError(f"{recipe.source}: validation.files needs validation.folder (paired data)")
        files = [folder / f for f in v.files]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise TrainingError(f"validation files not found: {', '.join(missing)}")
    elif v.folder:
        files = list_images(v.folder)
    elif recipe.data.hr is not None and recipe.data.holdout:
        files = split_train_files(recipe)[1]
    if not files:
        return None
    files = files[: v.n_images]
    return ValidationSet(
        files, gt_size=v.lq_size * scale, degradation=recipe.degradation_config(), seed=v.seed, scale=scale
    )


def _to_uint8(img: Tensor) -> np.ndarray:
    """3xHxW in [-1, 1] -> HxWx3 uint8."""
    x = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def validate_images(
    valset: Any,
    run: Callable[[Tensor, Tensor], Tensor],
    latent_channels: int,
    scale: int,
    device: torch.device,
    folder: Path | None,
    save_images: int,
) -> dict[str, float]:
    """PSNR-Y (4-px border for x4) of `run(lq, noise) -> hr` over the validation set, and of bicubic; saves PNGs."""
    import torch.nn.functional as F
    from PIL import Image

    from tadsr_cli.eval.psnr_ssim import psnr

    scores, bicubic = [], []
    for i in range(len(valset)):
        item = valset[i]
        lq = item["lq"][None].to(device)
        gt = _to_uint8(item["gt"])
        noise = sample_noise([int(item["seed"])], (latent_channels, lq.shape[-2], lq.shape[-1]), device)
        sr = _to_uint8(run(lq, noise)[0])
        up = _to_uint8(F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)[0])
        scores.append(psnr(sr, gt, crop_border=scale))
        bicubic.append(psnr(up, gt, crop_border=scale))
        if folder is not None and i < save_images:
            folder.mkdir(parents=True, exist_ok=True)
            dst = folder / f"{Path(item.get('name', f'{i:03d}')).stem}.png"
            with atomic_write_path(dst) as tmp:
                Image.fromarray(sr).save(tmp, format="PNG")
    finite = [s for s in scores if math.isfinite(s)]
    return {
        "psnr_y": float(np.mean(finite)) if finite else float("nan"),
        "psnr_y_bicubic": float(np.mean([b for b in bicubic if math.isfinite(b)]))
        if bicubic
        else float("nan"),
    }


def validate_ema_model(
    model: Any,
    ema: EMA,
    amp: Amp,
    valset: Any,
    run: Callable[[Tensor, Tensor], Tensor],
    device: torch.device,
    folder: Path | None,
    save_images: int,
) -> dict[str, float]:
    """`validate_images` of a `DiffusionSR` with its EMA weights loaded and its denoiser in eval mode (both restored)."""
    if valset is None:
        return {}
    was_training = model.denoiser.training
    model.denoiser.eval()
    try:
        with ema_weights(model.denoiser, ema), amp.autocast():
            return validate_images(valset, run, model.latent_channels, model.scale, device, folder, save_images)
    finally:
        model.denoiser.train(was_training)


@contextlib.contextmanager
def ema_weights(module: nn.Module, ema: EMA) -> Iterator[nn.Module]:
    """Temporarily load the EMA weights into `module` (restored exactly afterwards)."""
    backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
    ema.copy_to(module)
    try:
        yield module
    finally:
        with torch.no_grad():
            for k, v in module.state_dict().items():
                v.copy_(backup[k])


class X0Predictor(nn.Module):
    """`forward(x_t, y, t, lq) = model.predict_x0(...)`: the unit DDP wraps (only the denoiser is trainable)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        return self.model.predict_x0(x_t, y, t, lq)


def wrap_ddp(module: nn.Module, env: DistEnv) -> nn.Module:
    if not env.distributed:
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [env.device.index] if env.device.type == "cuda" else None
    # Buffers are config-derived and identical on every process: no per-forward synchronisation.
    params = inspect.signature(DDP.__init__).parameters
    kw = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(module, device_ids=ids, **kw)


def clip_and_step(
    opt: torch.optim.Optimizer, params: list[nn.Parameter], clip: float | None, amp: Amp
) -> float:
    """Unscale (fp16), clip the global grad norm, step. Returns the pre-clip norm (nan if not computed)."""
    amp.unscale(opt)
    norm = float("nan")
    if clip is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    amp.step(opt)
    return norm


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """Strictly load a model file's (or official checkpoint's) weights into `model` (a `DiffusionSR`)."""
    from tadsr_cli.models.checkpoints import load_state_dict_strict, read_state_dict

    load_state_dict_strict(model, read_state_dict(path), what=str(path))
