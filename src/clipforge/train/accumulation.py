"""One optimiser step's forward and backward, with gradient accumulation that keeps every negative.

Accumulating the gradients of micro-batch losses would shrink the contrastive problem to each
micro-batch: an image would only ever be compared with the texts of its own micro-batch. Instead
(the GradCache method, Gao et al., 2021):

1. encode every micro-batch without autograd and keep only the features;
2. compute the loss over the whole accumulated batch on those cached features, and its gradient
   with respect to the features (and to the logit scale/bias);
3. encode each micro-batch again, with autograd, and backpropagate its slice of the feature
   gradient into the weights.

The result equals one big batch (same loss, same gradients up to float rounding) for the memory
of one micro-batch plus the ``(B, embed_dim)`` features, at the cost of a second forward pass.
The random state is replayed for the second pass so stochastic layers draw the same masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager

import torch
from torch import Tensor, nn

# (image_features, text_features, logit_scale, logit_bias) -> scalar loss
LossFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]
Batch = tuple[Tensor, Tensor]  # (images (B, 3, H, W), tokens (B, T))


def forward_backward(
    model: nn.Module,
    micro_batches: Sequence[Batch],
    loss_fn: LossFn,
    *,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    no_sync: Callable[[], ContextManager] | None = None,
) -> Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn`` over the concatenation of ``micro_batches``.

    ``model(images, tokens)`` must return a :class:`~clipforge.models.CLIPOutput` (it may be wrapped
    in DistributedDataParallel; then pass ``no_sync=ddp.no_sync`` so gradients are all-reduced only
    once, on the last micro-batch). Returns the detached loss.
    """
    if len(micro_batches) == 1:
        images, tokens = micro_batches[0]
        with autocast():
            out = model(images, tokens)
            loss = loss_fn(out.image_features, out.text_features, out.logit_scale, out.logit_bias)
        loss.backward()
        return loss.detach()

    # 1. Features of every micro-batch, no autograd graph kept.
    rng_states, image_parts, text_parts = [], [], []
    with torch.no_grad():
        for images, tokens in micro_batches:
            rng_states.append(_get_rng_state(images.device))
            with autocast():
                out = model(images, tokens)
            image_parts.append(out.image_features.float())
            text_parts.append(out.text_features.float())
    sizes = [p.shape[0] for p in image_parts]

    # 2. Loss over the whole accumulated batch, differentiated w.r.t. the cached features.
    image_features = torch.cat(image_parts).requires_grad_(True)  # (B, E)
    text_features = torch.cat(text_parts).requires_grad_(True)  # (B, E)
    scale = out.logit_scale.detach().float().requires_grad_(True)
    bias = None if out.logit_bias is None else out.logit_bias.detach().float().requires_grad_(True)
    leaves = [image_features, text_features, scale] + ([bias] if bias is not None else [])
    loss = loss_fn(image_features, text_features, scale, bias)
    grads = torch.autograd.grad(loss, leaves)
    image_grads = grads[0].split(sizes)  # per micro-batch (b_i, E)
    text_grads = grads[1].split(sizes)

    # 3. Re-encode each micro-batch with autograd and push its slice of the feature gradient back.
    last = len(micro_batches) - 1
    for i, (images, tokens) in enumerate(micro_batches):
        sync = contextlib.nullcontext() if (no_sync is None or i == last) else no_sync()
        with sync:
            _set_rng_state(rng_states[i], images.device)
            with autocast():
                out = model(images, tokens)
            outputs = [out.image_features, out.text_features]
            grad_outputs = [
                image_grads[i].to(out.image_features.dtype),
                text_grads[i].to(out.text_features.dtype),
            ]
            if i == last:  # the temperature (and bias) enter once, through the last pass
                outputs.append(out.logit_scale)
                grad_outputs.append(grads[2].to(out.logit_scale.dtype))
                if bias is not None:
                    outputs.append(out.logit_bias)
                    grad_outputs.append(grads[3].to(out.logit_bias.dtype))
            torch.autograd.backward(outputs, grad_outputs)
    return loss.detach()


def split_batch(images: Tensor, tokens: Tensor, parts: int) -> list[Batch]:
    """Split a local batch into ``parts`` micro-batches (as equal as possible, in order)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    parts = min(parts, images.shape[0])
    return list(zip(images.tensor_split(parts), tokens.tensor_split(parts), strict=True))


def _get_rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
