"""Exponential moving average of the trainable weights (evaluated and saved in their place).

After optimiser step ``t`` (1-based), every trainable parameter's average moves towards it::

    ema <- d_t * ema + (1 - d_t) * param,   d_t = min(decay, (1 + t) / (10 + t))   (warm-up)
    d_t = decay                                                                     (warmup=False)

The warm-up (as in timm's ModelEmaV2 option and TF's ``num_updates``) keeps a short run's average
from being dominated by the random initial weights. Frozen parameters and buffers are not
averaged: they are the model's own. :meth:`swapped` puts the averaged weights into the model for
an evaluation or a save and restores the trained ones after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def ema_weights(ema: EMA | None, model: nn.Module) -> Iterator[nn.Module]:
    """``ema.swapped(model)``, or ``model`` as it is when there is no EMA."""
    if ema is None:
        yield model
        return
    with ema.swapped(model):
        yield model


class EMA:
    """The moving average of ``model``'s trainable parameters (a float32-or-wider copy)."""

    def __init__(self, model: nn.Module, *, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().clone() for n in self.names]
        self.updates = 0

    def decay_at(self, t: int) -> float:
        """The decay of update ``t`` (1-based)."""
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n].detach() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step towards ``model``'s current weights (call after each optimiser step)."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        torch._foreach_lerp_(self.shadow, self._params(model), weight)

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` holding the averaged weights inside the block, its trained ones after."""
        params = self._params(model)
        saved = [p.clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(params, self.shadow)
        try:
            yield model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, saved)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "names": list(self.names), "shadow": [t.cpu() for t in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError("the checkpoint's EMA covers other parameters than this model's trainable ones")
        self.updates = int(state["updates"])
        for mine, saved in zip(self.shadow, state["shadow"], strict=True):
            mine.copy_(saved)
