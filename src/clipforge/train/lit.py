"""Locked-image tuning (LiT): freeze the image tower, or all of it but its last blocks.

Frozen parameters get ``requires_grad=False`` (so the optimiser never sees them and weight decay
cannot touch them) and frozen modules stay in eval mode during training (so BatchNorm running
statistics do not drift): a locked weight stays bit-identical for the whole run.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..models import CLIP
from ..models.fastvit import FastViT
from ..models.vit import VisionTransformer


def _stages(visual: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(trunk units in order, head modules) of an image tower; unlocking N keeps the head + last N units."""
    if isinstance(visual, VisionTransformer):
        head = [visual.norm_post] + ([visual.attn_pool] if visual.pool == "map" else [])
        return list(visual.transformer.blocks), head
    if isinstance(visual, FastViT):  # the head: the final conv and the projection
        return visual.blocks(), [visual.final_conv, visual.proj]
    # ModifiedResNet: the units are its residual blocks in order, the head is the attention pool.
    units = [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(visual, name)]
    return units, [visual.attnpool]


def lock_image_tower(model: CLIP, *, unlocked_blocks: int = 0) -> list[nn.Module]:
    """Freeze ``model.visual`` except its last ``unlocked_blocks`` blocks and, when that is > 0, its
    head (ViT: final norm, attention pool if any, projection; ResNet: attention pool). Returns the frozen modules, which
    must be kept in eval mode while training (see :func:`set_train_mode`)."""
    visual = model.visual
    units, head = _stages(visual)
    if unlocked_blocks < 0 or unlocked_blocks > len(units):
        raise ValueError(
            f"unlocked_blocks must be in 0..{len(units)} for this image tower, got {unlocked_blocks}"
        )
    for p in visual.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Module] = []
    if unlocked_blocks:
        trainable = units[len(units) - unlocked_blocks :] + head
        for module in trainable:
            for p in module.parameters():
                p.requires_grad_(True)
        if isinstance(visual, VisionTransformer) and visual.proj is not None:
            visual.proj.requires_grad_(True)
    keep = {id(m) for t in trainable for m in t.modules()}
    frozen = [m for m in visual.modules() if id(m) not in keep and not any(True for _ in m.children())]
    return frozen


def set_train_mode(model: nn.Module, frozen: Sequence[nn.Module] = ()) -> None:
    """``model.train()``, except that the ``frozen`` modules (see :func:`lock_image_tower`) stay in eval."""
    model.train()
    for module in frozen:
        module.eval()
