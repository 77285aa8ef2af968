"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for towers too large to replicate on every rank.

With ``shard=True`` under torchrun, every transformer block (or ResNet stage block) of both towers
is its own FSDP unit, and each tower is one more unit for its remaining weights (embeddings,
norms, projection): parameters, gradients and AdamW state are split over the ranks and each
block is gathered only while it computes. The scalar logit scale / bias cannot be sharded
(FSDP2 shards along dim 0); they stay replicated and their gradients are averaged here, as DDP
would. Precision is the loop's autocast (the same numerics as DDP); gradient checkpointing works
per block as without sharding.

Checkpoints of a sharded run: each rank writes its shards of the model and optimiser with
``torch.distributed.checkpoint`` into ``step-N.dcp.tmp/``, which rank 0 renames to ``step-N.dcp/``
only after every rank has finished (a crash leaves at most a ``.tmp`` folder, never a half
checkpoint). The full weights are also gathered to rank 0 and written as the usual
self-describing ``.safetensors`` file, so a sharded run's saved model is one ordinary checkpoint.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..fileio import fsync_dir
from ..models import CLIP
from ..models.fastvit import FastViT
from ..models.resnet import ModifiedResNet
from ..models.vit import VisionTransformer
from .distributed import DistInfo


def _units(model: CLIP) -> list[nn.Module]:
    """Sub-modules that become their own FSDP unit, innermost first, towers last."""
    units: list[nn.Module] = list(model.text.transformer.blocks)
    visual = model.visual
    if isinstance(visual, VisionTransformer):
        units += list(visual.transformer.blocks)
    elif isinstance(visual, FastViT):
        units += visual.blocks()
    else:  # ResNet: each residual block of each stage
        units += [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(visual, name)]
    return units + [model.visual, model.text]


def shard_model(model: CLIP, info: DistInfo) -> None:
    """Apply FSDP2 in place (after ``model.to(device)``, before building the optimiser)."""
    from torch.distributed.fsdp import fully_shard

    if not info.distributed:
        raise ValueError("shard=True needs several processes (run under torchrun)")
    if isinstance(model.visual, ModifiedResNet):  # FSDP2 shards contiguous parameters only
        model.visual.set_memory_format(torch.contiguous_format)
    for unit in _units(model):
        fully_shard(unit)


def replicated_params(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters FSDP does not manage (the scalar logit scale / bias)."""
    from torch.distributed.tensor import DTensor

    return [p for p in model.parameters() if p.requires_grad and not isinstance(p, DTensor)]


def sync_replicated_grads(model: nn.Module, info: DistInfo) -> None:
    """Average the gradients of the replicated parameters over the ranks (DDP's job for them)."""
    for p in replicated_params(model):
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(info.world_size)


@contextlib.contextmanager
def no_gradient_sync(model: nn.Module) -> Iterator[None]:
    """FSDP2's ``no_sync``: accumulate unsharded gradients locally (all micro-batches but the last)."""
    units = [m for m in model.modules() if hasattr(m, "set_requires_gradient_sync")]
    for m in units:
        m.set_requires_gradient_sync(False, recurse=False)
    try:
        yield
    finally:
        for m in units:
            m.set_requires_gradient_sync(True, recurse=False)


def clip_grad_norm(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` over a mix of sharded (DTensor) and replicated parameters: the total
    norm over the full, unsharded gradients, the same on every rank."""
    from torch.distributed.tensor import DTensor

    sharded = [p for p in params if isinstance(p, DTensor) and p.grad is not None]
    plain = [p for p in params if not isinstance(p, DTensor) and p.grad is not None]
    squares = []
    for group in (sharded, plain):
        if group:
            norm = torch.nn.utils.get_total_norm([p.grad for p in group], foreach=True)
            norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
            squares.append(norm.float() ** 2)
    total = torch.stack(squares).sum().sqrt()
    for group in (sharded, plain):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total, foreach=True)
    return total


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0 (CPU); empty on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path, info: DistInfo) -> None:
    """Every rank writes its shards of model + optimiser to ``path`` (a folder), atomically. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp = path.with_name(path.name + ".tmp")
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    dist.barrier()  # every rank's shards are on disk
    if info.is_main:
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        fsync_dir(path.parent)
    dist.barrier()


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Restore the model and optimiser shards written by :func:`save_sharded`. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not path.is_dir():
        raise FileNotFoundError(f"{path}: the sharded checkpoint of this step is missing")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
