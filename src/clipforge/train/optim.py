"""AdamW with CLIP's parameter groups, and the warm-up + cosine learning-rate schedule.

Weight decay applies to weight matrices only: never to norms, biases, embeddings (token, position,
class token), the logit scale or the logit bias. The schedule is a pure function of the step, so
a resumed run needs no scheduler state beyond the step counter.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

_NO_DECAY_NAMES = ("token_embed", "pos_embed", "cls_token", "probe", "logit_scale", "logit_bias")


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for parameters that AdamW must not decay (norms, biases, embeddings, temperature)."""
    if param.ndim < 2:  # biases, norm weights, logit_scale/bias, cls_token
        return True
    return any(key in name.split(".") for key in _NO_DECAY_NAMES)  # token/position embeddings


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters: decayed matrices, and everything else."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, using the fused/foreach kernel when this torch has one."""
    groups = param_groups(model, weight_decay=weight_decay)
    if not any(g["params"] for g in groups):
        raise ValueError("no trainable parameters (is every tower locked?)")
    device = next(p for g in groups for p in g["params"]).device
    options: dict = {}
    if "fused" in inspect.signature(torch.optim.AdamW).parameters and device.type in ("cuda", "cpu"):
        options["fused"] = True
    else:
        options["foreach"] = True
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **options)


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up to ``base_lr`` over
    ``warmup_steps`` steps, then half a cosine from ``base_lr`` down to ``min_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
