"""One optimiser step, given the rank's images and tokens: the loss, the update, nothing else.

Forward + backward over ``accum_steps`` micro-batches with the negatives of the whole global batch
(:mod:`.accumulation`, the distributed loss), the gradient sync of sharded runs, fp16 loss scaling,
clipping, then AdamW at the learning rate the schedule gives. What feeds it (data, checkpoints,
evaluation) lives in :mod:`.loop`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses import clip_loss, siglip_loss
from .accumulation import LossFn, forward_backward, split_batch
from .distributed import DistInfo
from .sharding import clip_grad_norm, no_gradient_sync, sync_replicated_grads


def make_loss_fn(kind: str, *, chunk_size: int | None, distributed: bool, label_smoothing: float = 0.0) -> LossFn:
    """(image_features, text_features, logit_scale, logit_bias) -> loss, for ``kind`` clip or siglip."""
    if kind == "clip":
        return lambda img, txt, scale, bias: clip_loss(
            img, txt, scale, chunk_size=chunk_size, distributed=distributed, label_smoothing=label_smoothing
        )
    if label_smoothing:
        raise ValueError(f"`label_smoothing=` smooths the InfoNCE targets of the clip loss, not the {kind} loss")
    if kind == "siglip":

        def siglip(img, txt, scale, bias):
            if bias is None:
                raise ValueError("the sigmoid loss needs a model with a logit bias (init_logit_bias)")
            return siglip_loss(img, txt, scale, bias, chunk_size=chunk_size, distributed=distributed)

        return siglip
    raise ValueError(f"unknown loss {kind!r}")


@dataclass
class OptimizerStep:
    """Everything one step needs, fixed for the run; call it with each step's batch."""

    model: nn.Module  # the bare model (sharded runs sync its replicated gradients)
    wrapped: nn.Module  # what the forward runs: the DDP wrapper, or the model itself
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    info: DistInfo
    autocast: Callable[[], ContextManager]
    kernels: Callable[[], ContextManager]  # matmul settings for the step's precision
    scaler: torch.amp.GradScaler | None  # fp16 only
    sharded: bool
    accum_steps: int
    grad_clip: float | None
    # an extra image loss (SLIP's SimCLR term): (model, images, step) -> loss, added with aux_weight
    aux: Callable[[nn.Module, Tensor, int], Tensor] | None = None
    aux_weight: float = 0.0
    aux_loss: Tensor | None = None  # the last step's extra loss (detached), for the log

    def __call__(self, images: Tensor, tokens: Tensor, *, step: int = 0) -> Tensor:
        """Update the weights from ``images`` (n, 3, H, W) and ``tokens`` (n, T); returns the loss
        (unscaled, detached from the scaler). The learning rate is already set on the optimiser."""
        loss_fn = self.loss_fn
        if self.scaler is not None:
            loss_fn = lambda *a: self.scaler.scale(self.loss_fn(*a))  # noqa: E731
        no_sync = self.wrapped.no_sync if self.info.distributed and not self.sharded else None
        if self.sharded:
            no_sync = lambda: no_gradient_sync(self.model)  # noqa: E731
        with self.kernels():
            loss = forward_backward(
                self.wrapped,
                split_batch(images, tokens, self.accum_steps),
                loss_fn,
                autocast=self.autocast,
                no_sync=no_sync,
            )
        if self.aux is not None:
            self._aux_backward(images, step)
        if self.sharded:
            sync_replicated_grads(self.model, self.info)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            loss = loss / self.scaler.get_scale()
        if self.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            if self.sharded:
                clip_grad_norm(params, self.grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _aux_backward(self, images: Tensor, step: int) -> None:
        """Accumulate the gradient of ``aux_weight * aux`` (per micro-batch, as the memory allows)."""
        parts = images.tensor_split(min(self.accum_steps, images.shape[0]))
        total = images.new_zeros((), dtype=torch.float32)
        with self.kernels():
            for part in parts:
                with self.autocast():
                    value = self.aux(self.model, part, step)
                scaled = value * (self.aux_weight / len(parts))
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                total += value.detach().float() / len(parts)
        self.aux_loss = total
