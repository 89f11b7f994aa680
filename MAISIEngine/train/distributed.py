"""Distributed data parallel under `torchrun`: gloo on CPU, NCCL on GPUs; a no-op for one process."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from MAISIEngine.errors import MaisiError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_train_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks the process's GPU when there is one; 'cuda' under torchrun means cuda:LOCAL_RANK."""
    from MAISIEngine.models import resolve_device

    name = (name or "auto").strip().lower()
    if name in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}")
    return resolve_device(name)


def init_distributed(device_name: str = "auto") -> DistContext:
    """Join the process group torchrun set up (environment variables), or run as a single process."""
    if not _launched_by_torchrun():
        return DistContext(0, 1, 0, resolve_train_device(device_name))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_train_device(device_name, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        except Exception as exc:  # torch raises several types for rendezvous failures
            raise MaisiError(
                f"cannot join the distributed run ({exc.__class__.__name__}: {exc})",
                "launch with `torchrun --nproc_per_node N -m MAISIEngine.cli train ...`",
            ) from None
    return DistContext(rank, world, local_rank, device)


def shutdown(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def wrap_ddp(module: torch.nn.Module, ctx: DistContext, find_unused: bool = False) -> torch.nn.Module:
    """Wrap for gradient averaging across processes; the module itself when running alone."""
    if not ctx.is_distributed:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def mean_across(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average scalar logs over processes (every process must call this with the same keys)."""
    if not ctx.is_distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, tensor.tolist())}


def any_across(flag: bool, ctx: DistContext) -> bool:
    """True on every process when any process raised the flag (e.g. its time budget ran out)."""
    if not ctx.is_distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def broadcast_object(value: object, ctx: DistContext) -> object:
    """Rank 0's value on every process (small Python objects: paths, scale factors)."""
    if not ctx.is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
