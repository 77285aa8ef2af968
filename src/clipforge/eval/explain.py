"""Why did the model match this image to this text? Heat maps over image regions.

Three methods, all returning a map over the model's input view scaled to [0, 1]:

* ``"patch"`` (ViTs): cosine similarity between the text embedding and every patch token pushed
  through the image tower's final norm and projection (``model.visual.project_patches``).
  One forward pass, no gradients; as coarse as the patch grid.
* ``"gradcam"`` (ViTs and ResNets): Grad-CAM, from the gradient of the image–text cosine with
  respect to intermediate feature maps. ResNet: the last stage's map, each channel weighted by its
  mean gradient (the original Grad-CAM). ViT: at the input of every block, each patch token's
  Σ_c gradient × activation (its own gradient, not one averaged over tokens), positive part,
  scaled to a maximum of 1; the blocks' maps are averaged. In our tests the CNN form (gradients
  averaged over tokens, last block only) gave maps with no consistent contrast on ViTs, and any
  single block was less reliable than the average over all of them.
* ``"gradient"`` (any tower): input saliency, |gradient × input| summed over colour channels and
  smoothed over small windows, at pixel resolution.

``"auto"`` picks ``"gradcam"``, the most faithful of the three in our measurements on small shapes
models (``benchmarks/bench_explain.py``, docs/evaluation.md): on a red circle beside another
shape, its map of "a red circle" is brighter on the circle than on the other shape. The input
gradient highlights *both* objects against the background (it shows what the score is sensitive
to, for or against), and raw patch similarity is usually *inverted* on CLIP-style models
(background patches score highest, because only the class token is trained to align with text):
read ``"patch"`` maps with that in mind.

The model sees a resized, centre-cropped view of the image; :func:`model_view` cuts that region
out of the original, and the overlay is drawn on it at the original's resolution.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..models import CLIP
from ..models.vit import VisionTransformer

Method = Literal["auto", "patch", "gradcam", "gradient"]
METHODS: tuple[str, ...] = ("auto", "patch", "gradcam", "gradient")
AUTO_METHOD = "gradcam"

# Colour ramp for overlays (low → high): dark blue, blue, cyan, yellow, red.
_RAMP_POS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_RGB = np.array([[0, 0, 96], [0, 64, 255], [0, 224, 224], [255, 224, 0], [224, 0, 0]], dtype=np.float64)


def heat_map(
    model: CLIP, image: torch.Tensor, text_embedding: torch.Tensor, *, method: Method = "auto"
) -> torch.Tensor:
    """Preprocessed image (3, H, W) and a text embedding (E,) → heat map (H, W) in [0, 1]."""
    if method == "auto":
        method = AUTO_METHOD
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r} (choose from {', '.join(METHODS)})")
    # Maps are computed in float32 whatever the model's precision: Grad-CAM multiplies gradients by
    # activations and keeps the positive part, and in bf16 that rounding was enough to move the
    # brightest region to the wrong object on small models. A half-precision tower is copied.
    visual = model.visual if model.dtype == torch.float32 else copy.deepcopy(model.visual).float()
    x = image[None].to(device=model.device, dtype=torch.float32)  # (1, 3, H, W)
    t = F.normalize(text_embedding.float().to(model.device), dim=-1)  # (E,)
    if method == "patch":
        raw = _patch_similarity(visual, x, t)
    elif method == "gradcam":
        raw = _grad_cam(visual, x, t)
    else:
        raw = _input_saliency(visual, x, t)
    raw = raw.detach().float()[None, None]  # (1, 1, h, w)
    full = F.interpolate(raw, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]  # (H, W)
    lo, hi = full.min(), full.max()
    return ((full - lo) / (hi - lo)).cpu() if hi > lo else torch.zeros_like(full).cpu()


def _patch_similarity(visual: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(visual, VisionTransformer):
        raise ValueError("method 'patch' needs a ViT image tower; use 'gradcam' or 'gradient' for a ResNet")
    with torch.no_grad():
        patches = F.normalize(visual.project_patches(x).float(), dim=-1)  # (1, g, g, E)
    return patches[0] @ t  # (g, g)


def _cosine(embedding: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.normalize(embedding.float(), dim=-1)[0] @ t  # scalar


def _grad_cam(visual: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # torch.autograd.grad (not .backward) so that no .grad is left on the model's parameters.
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)  # keeps a graph even when the weights are frozen
        if isinstance(visual, VisionTransformer):
            captured: list[torch.Tensor] = []  # the residual stream entering each block
            grab = lambda _module, args: captured.append(args[0])
            hooks = [block.register_forward_pre_hook(grab) for block in visual.transformer.blocks]
            saved, visual.transformer.grad_checkpointing = visual.transformer.grad_checkpointing, False
            try:
                score = _cosine(visual(x), t)
            finally:
                for hook in hooks:
                    hook.remove()
                visual.transformer.grad_checkpointing = saved
            grads = torch.autograd.grad(score, captured)  # each (1, [1 +] g², width)
            first = 1 if visual.pool == "cls" else 0  # skip the class token
            cams = []
            for acts, grad in zip(captured, grads, strict=True):
                cam = F.relu((acts[0, first:].detach().float() * grad[0, first:].float()).sum(dim=-1))  # (g²,)
                cams.append(cam / cam.max() if cam.max() > 0 else cam)
            return torch.stack(cams).mean(dim=0).view(visual.grid, visual.grid)  # (g, g)
        saved, visual.grad_checkpointing = visual.grad_checkpointing, False
        try:
            features = visual.forward_features(x)  # (1, C, h, w)
            score = _cosine(visual.attnpool(features), t)
        finally:
            visual.grad_checkpointing = saved
        (grads,) = torch.autograd.grad(score, features)  # (1, C, h, w)
        weights = grads[0].float().mean(dim=(1, 2))  # (C,)
        return F.relu(torch.einsum("c,chw->hw", weights, features[0].detach().float()))  # (h, w)


def _input_saliency(visual: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().float().requires_grad_(True)
        score = _cosine(visual(x), t)
        (grads,) = torch.autograd.grad(score, x)  # (1, 3, H, W)
    sal = (grads * x.detach()).abs().sum(dim=1, keepdim=True)  # (1, 1, H, W)
    window = max(1, x.shape[-1] // 16) | 1  # odd smoothing window, about 1/16 of the image side
    return F.avg_pool2d(sal, window, stride=1, padding=window // 2)[0, 0]  # (H, W)


def model_view(image: Image.Image, *, resize_mode: str = "shortest") -> Image.Image:
    """The part of ``image`` the model sees: the centred square for ``shortest`` resizing (the
    preprocessing crops it), the whole image for ``squash``. Converted to RGB."""
    image = image.convert("RGB")
    if resize_mode == "squash":
        return image
    w, h = image.size
    s = min(w, h)
    left, top = int(round((w - s) / 2)), int(round((h - s) / 2))
    return image.crop((left, top, left + s, top + s))


def colorize(heat: np.ndarray | torch.Tensor) -> np.ndarray:
    """Values in [0, 1], (H, W) → RGB uint8 (H, W, 3) on a blue→red ramp."""
    h = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    rgb = np.stack([np.interp(h, _RAMP_POS, _RAMP_RGB[:, c]) for c in range(3)], axis=-1)  # (H, W, 3)
    return rgb.round().astype(np.uint8)


def overlay(view: Image.Image, heat: np.ndarray | torch.Tensor, *, alpha: float = 0.5) -> Image.Image:
    """Blend the coloured heat map (resized to ``view``) over ``view``."""
    heat_img = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F").resize(view.size, Image.BILINEAR)
    coloured = Image.fromarray(colorize(np.asarray(heat_img)))
    return Image.blend(view.convert("RGB"), coloured, alpha)


@dataclass
class Explanation:
    text: str
    method: str
    similarity: float  # cosine of the image and text embeddings
    heat: torch.Tensor  # (H, W) in [0, 1] over the model's input view
    view: Image.Image  # the region of the original image the model sees

    def overlay(self, *, alpha: float = 0.5) -> Image.Image:
        return overlay(self.view, self.heat, alpha=alpha)

    def save(self, path: str | Path, *, alpha: float = 0.5) -> Path:
        """Write the overlay as a PNG."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.overlay(alpha=alpha).save(path, format="PNG")
        return path


def explain(
    model: CLIP,
    transform: Callable,
    image: Image.Image,
    text_embedding: torch.Tensor,
    *,
    text: str,
    method: Method = "auto",
) -> Explanation:
    """Heat map of where ``image`` matches a text embedding (E,) (``text`` labels the result)."""
    x = transform(image)  # (3, H, W)
    with torch.no_grad():
        emb = model.encode_image(x[None].to(model.device)).float().cpu()[0]  # (E,)
    similarity = float(emb @ F.normalize(text_embedding.float().cpu(), dim=-1))
    heat = heat_map(model, x, text_embedding, method=method)
    resolved = AUTO_METHOD if method == "auto" else method
    return Explanation(
        text, resolved, similarity, heat, model_view(image, resize_mode=model.config.preprocess.resize_mode)
    )


def explain_text(
    model: CLIP,
    tokenizer: Callable,
    transform: Callable,
    image: Image.Image,
    text: str,
    *,
    method: Method = "auto",
) -> Explanation:
    """:func:`explain` for a text string (encoded as is, no templates)."""
    from .zeroshot import encode_texts

    return explain(
        model, transform, image, encode_texts(model, tokenizer, [text])[0], text=text, method=method
    )
