"""LoRA: low-rank adapters on the attention and MLP projections of either tower.

Each adapted ``nn.Linear`` keeps its weight ``W (out, in)`` frozen and learns ``A (r, in)`` and
``B (out, r)``; the layer computes with ``W + (alpha / r) * B @ A``. ``B`` starts at zero, so the
adapted model starts as exactly the base model. The adapter is a weight *parametrization*
(``torch.nn.utils.parametrize``): the plain layers call the Linear, and the model's fast path
(``models.fast_path``: fused q/k/v slices, in-place inference MLP) reads ``linear.weight``; both see
the adapted weight, with no change to the model code.

Training updates only ``A`` and ``B``. :func:`merged_state_dict` gives the plain weights
(``W + scale * B @ A``) under the model's ordinary parameter names, which is what a saved model
holds: it loads like any clipforge checkpoint and exports to open_clip / Hugging Face unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..models import CLIP
from ..models.fastvit import FastViT
from ..models.vit import VisionTransformer

LORA_TOWERS = ("image", "text")
TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")  # per transformer block
_ORIGINAL = ".parametrizations.weight.original"


class LoRADelta(nn.Module):
    """The parametrization ``W -> W + scale * B @ A`` with ``A (rank, in)``, ``B (out, rank)``."""

    def __init__(self, out_features: int, in_features: int, *, rank: int, alpha: float, like: torch.Tensor) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=like.device, dtype=like.dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=like.device, dtype=like.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A).to(weight.dtype)  # (out, in)


def parse_towers(text: str) -> tuple[str, ...]:
    """``"image,text"`` → ``("image", "text")``; an unknown tower is a ValueError."""
    towers = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in towers if t not in LORA_TOWERS]
    if bad or not towers:
        raise ValueError(f"lora_towers: expected a comma-separated subset of image,text, got {text!r}")
    return towers


def _targets(model: CLIP, towers: Sequence[str]) -> Iterator[tuple[str, nn.Linear]]:
    for tower in towers:
        module = model.visual if tower == "image" else model.text
        prefix = "visual" if tower == "image" else "text"
        if tower == "image" and not isinstance(module, VisionTransformer):
            kind = "FastViT" if isinstance(module, FastViT) else "ResNet"
            raise ValueError(f"LoRA adapts transformer towers; this image tower is a {kind} (use lora_towers='text')")
        for i, block in enumerate(module.transformer.blocks):
            for target in TARGETS:
                owner, attr = target.split(".")
                yield f"{prefix}.transformer.blocks.{i}.{target}", getattr(getattr(block, owner), attr)


def apply_lora(model: CLIP, *, rank: int, alpha: float | None = None, towers: Sequence[str] = LORA_TOWERS) -> int:
    """Freeze every parameter of ``model`` and add rank-``rank`` adapters (``alpha`` defaults to
    ``rank``: scale 1) to the projections of ``towers``. Returns the number of adapted layers."""
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    count = 0
    for _, linear in _targets(model, towers):
        delta = LoRADelta(
            linear.out_features, linear.in_features, rank=rank, alpha=float(alpha or rank), like=linear.weight
        )
        parametrize.register_parametrization(linear, "weight", delta)
        count += 1
    return count


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (``...lora_A`` / ``...lora_B``), detached copies."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def load_adapters(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors saved by :func:`adapter_state_dict` into ``model``'s adapters."""
    own = adapter_state_dict(model)
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"saved LoRA adapters do not fit the model (missing {missing[:3]}, unexpected {extra[:3]})")
    model.load_state_dict(state, strict=False)


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with every adapter merged, under the plain (un-adapted) names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith((".lora_A", ".lora_B")):
            continue
        if key.endswith(_ORIGINAL):
            module_name = key[: -len(_ORIGINAL)]
            out[module_name + ".weight"] = model.get_submodule(module_name).weight.detach().clone()
        else:
            out[key] = value
    return out


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its weight in place: plain ``nn.Linear`` layers again."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, LoRADelta) for p in module.parametrizations.weight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
