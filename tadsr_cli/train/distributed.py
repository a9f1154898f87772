"""Processes of a training run: torchrun's environment, the process group, gradient and scalar averaging, DDP wrapping."""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import TrainingError


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

        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        env.initialized_here = True
    return env


def teardown_distributed(env: DistEnv) -> None:
    if env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


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


def reduce_scalars(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    if not env.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return (t / env.world).tolist()


def wrap_ddp(module: nn.Module, env: DistEnv) -> nn.Module:
    if not env.distributed:
        return module


    ids = [env.device.index] if env.device.type == "cuda" else None
    # Buffers are config-derived and identical on every process: no per-forward synchronisation.
    params = inspect.signature(DDP.__init__).parameters
    kw = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(module, device_ids=ids, **kw)
