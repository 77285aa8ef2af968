"""All-gather with gradient, for contrastive losses that need every rank's negatives.

Gradient convention (the one DDP expects). A rank's loss ``L_r`` is its *local* loss: its own
rows against all gathered columns, averaged over its own rows, so that the global loss is
``L = mean_r L_r``. The backward of :func:`all_gather_with_grad` sums the incoming gradients over
all ranks and keeps the local slice, so the gradient a rank sees for its local features is
``sum_r' dL_r'/dx_r = world_size * dL/dx_r``. DDP then averages parameter gradients over ranks,
which divides that factor back out: the averaged parameter gradient equals the single-process
gradient of the global loss. Equivalently: ``rank's feature grad / world_size ==
single-process grad of the global loss`` (for the rank's slice). Scalars that are not gathered
(``logit_scale``, ``logit_bias``) get, averaged over ranks, the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_info() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of the default process group, or raise a clear error."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "distributed=True needs an initialised torch.distributed process group: launch with "
            "torchrun and call torch.distributed.init_process_group(...) first, or pass distributed=False"
        )
    return dist.get_rank(), dist.get_world_size()


def check_equal_local_batch(local_batch: int, *, device: torch.device) -> None:
    """All ranks must hold the same number of pairs: all-gather needs equal shapes."""
    _, world = world_info()
    if world == 1:
        return
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local_batch], dtype=torch.long, device=device))
    found = [int(s.item()) for s in sizes]
    if len(set(found)) != 1:
        raise ValueError(
            f"distributed contrastive loss needs the same local batch on every rank, got {found} "
            "(use drop_last=True in the data loader)"
        )


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's tensor along dim 0. Backward: sum grads over ranks, keep ours."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        rank, world = dist.get_rank(), dist.get_world_size()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rank, ctx.local = rank, x.shape[0]
        return torch.cat(parts, dim=0)  # (world * n, ...)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()  # (world * n, ...)
        if dist.get_backend() == "nccl":
            out = torch.empty((ctx.local, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad, op=dist.ReduceOp.SUM)
            return out  # (n, ...)
        grad = grad.clone()  # never modify autograd's buffer in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # gloo has no reduce-scatter
        return grad[ctx.rank * ctx.local : (ctx.rank + 1) * ctx.local]  # (n, ...)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (``(n, ...)``, equal ``n`` on every rank) from all ranks along dim 0.

    Differentiable: see the module docstring for the gradient convention.
    With a single process (or no process group of size > 1) this returns ``x`` unchanged.
    """
    _, world = world_info()
    if world == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def gather_texts(image_features: Tensor, text_features: Tensor, *, distributed: bool) -> tuple[Tensor, int]:
    """The text features a rank scores its images against, and where its own texts start among them.

    Without ``distributed`` (or with one process) that is ``(text_features, 0)``. Otherwise every
    rank's texts, all-gathered with gradient (``(W*n, d)``; the local batch ``n`` must be equal on
    every rank), and ``rank * n``: local image ``i``'s positive is text ``i + rank * n``.
    """
    if not distributed:
        return text_features, 0
    rank, world = world_info()
    if world == 1:
        return text_features, 0
    n = image_features.shape[0]
    check_equal_local_batch(n, device=image_features.device)
    return all_gather_with_grad(text_features), rank * n  # (W*n, d)


def gather_features(image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather image and text features (``(n, d)`` each) with gradient: ``(W*n, d)`` each."""
    return all_gather_with_grad(image_features), all_gather_with_grad(text_features)
