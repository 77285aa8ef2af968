"""torchrun support: read the launcher's environment, join the process group, wrap the model in DDP.

``torchrun --nproc-per-node N -m clipforge train ...`` (or SLURM's ``srun`` running torchrun on each
node) sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without them
the run is a single process and nothing here touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we created the process group, so we destroy it

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (run directory, checkpoints, logs)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), or run single-process.

    Each process takes GPU ``LOCAL_RANK`` when the device is CUDA.
    """
    dev = resolve_device(device)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return DistInfo(device=dev)
    rank, local_rank, world = (
        int(os.environ["RANK"]),
        int(os.environ["LOCAL_RANK"]),
        int(os.environ["WORLD_SIZE"]),
    )
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
        created = True
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev, initialized_here=created)


def cleanup_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around ``model`` when running on several processes, else ``model``."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over all ranks (a copy; identity on one process)."""
    if not info.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def all_reduce_min_int(value: int, info: DistInfo) -> int:
    """Smallest ``value`` over all ranks (used to trim batches that lost samples to equal sizes)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.long, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a run name, a tokenizer's metadata...)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
