"""Why did the model match this image to this text? Heat maps over image regions.

Four methods, all returning a map over the model's input view scaled to [0, 1]:

* ``"window"`` (any tower; **the default**, ``auto``): the model looks at the image through square
  windows of half the input's side on a 5 x 5 grid of positions (outside the window, the image's
  mean colour); each pixel's heat is the mean image–text cosine of the windows that show it.
  25 forward passes (batched), no gradients. It asks the model what each region alone matches, so
  it lands on the named object where the gradient methods below do not (see "Why not Grad-CAM").
* ``"gradcam"`` (ViTs and ResNets): Grad-CAM, from the gradient of the image–text cosine with
  respect to intermediate feature maps. ResNet: the last stage's map, each channel weighted by its
  mean gradient (the original Grad-CAM). ViT: at the input of every block, each patch token's
  Σ_c gradient × activation (its own gradient, not one averaged over tokens), positive part,
  scaled to a maximum of 1; the blocks' maps are averaged.
* ``"gradient"`` (any tower): input saliency, |gradient × input| summed over colour channels and
  smoothed over small windows, at pixel resolution. It highlights *both* objects against the
  background: it shows what the score is sensitive to, for or against.
* ``"patch"`` (ViTs): cosine similarity between the text embedding and every patch token pushed
  through the image tower's final norm and projection (``model.visual.project_patches``). Usually
  *inverted* on CLIP-style models (background patches score highest: only the class token is
  trained to align with text).

Why not Grad-CAM (measured with ``benchmarks/bench_explain.py`` on two-object shapes scenes,
docs/evaluation.md): a gradient is local to the image as a whole, and two traits of small CLIP
models defeat it. (1) The quickstart ResNet's last stage is a 2 x 2 grid at 64 px; any finer map
(an earlier stage, or the last stage without its final pooling) shows the attention pool reading a
summary of the whole image from *empty background cells along the image border* (the zero padding
makes them distinct), so those cells, not the object, carry the gradient, and the 2 x 2 map is
brightest on a whole half of the image with its peak at the image edge. (2) A ViT's embedding of
a two-object image is often one object's alone (the image of a blue circle beside a red heart
scored −0.58 with "a blue circle", the red heart alone −0.57, the blue circle alone +0.58), so
the gradient points at the object that decided the embedding: the other one. Looking through
windows asks about each region in isolation, which neither trait affects.

The model sees a resized, centre-cropped view of the image; :meth:`Explanation.overlay` maps the
heat back onto the original at its own resolution (``explain_draw``), dimming what was cropped.
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

from ..models import CLIP, unit_float32
from ..models.vit import VisionTransformer
from . import explain_draw

Method = Literal["auto", "window", "gradcam", "gradient", "patch"]
METHODS: tuple[str, ...] = ("auto", "window", "gradcam", "gradient", "patch")
AUTO_METHOD = "window"
WINDOW_FRACTION = 0.5  # window side / input side
WINDOW_STEPS = 6  # window positions along each axis (WINDOW_STEPS² forward passes)
WINDOW_BATCH = 36  # windows per forward pass
WINDOW_SIGMA = 0.25  # spread of a window's score around its centre, in window sides


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
    t = unit_float32(text_embedding.to(model.device))  # (E,)
    if method == "window":
        raw = _window_similarity(visual, x, t)
    elif method == "patch":
        raw = _patch_similarity(visual, x, t)
    elif method == "gradcam":
        raw = _grad_cam(visual, x, t)
    else:
        raw = _input_saliency(visual, x, t)
    raw = raw.detach().float()[None, None]  # (1, 1, h, w)
    full = F.interpolate(raw, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]  # (H, W)
    lo, hi = full.min(), full.max()
    return ((full - lo) / (hi - lo)).cpu() if hi > lo else torch.zeros_like(full).cpu()


def _window_similarity(visual: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    size = x.shape[-1]
    side = max(1, round(size * WINDOW_FRACTION))
    # Window centres at the cell centres of a WINDOW_STEPS x WINDOW_STEPS grid over the input, so
    # objects near the border get windows centred on them too (the part past the border is fill).
    centres = ((torch.arange(WINDOW_STEPS, dtype=torch.float32) + 0.5) * size / WINDOW_STEPS).tolist()
    boxes = [(cy, cx) for cy in centres for cx in centres]
    masks = torch.zeros(len(boxes), 1, size, size, device=x.device)  # (n, 1, H, W)
    for i, (cy, cx) in enumerate(boxes):
        top, left = round(cy - side / 2), round(cx - side / 2)
        masks[i, :, max(top, 0) : max(top + side, 0), max(left, 0) : max(left + side, 0)] = 1.0
    fill = x.mean(dim=(2, 3), keepdim=True)  # (1, 3, 1, 1) the image's mean colour
    scores = []
    with torch.no_grad():
        for m in masks.split(WINDOW_BATCH):
            views = x * m + fill * (1.0 - m)  # (b, 3, H, W)
            scores.append(unit_float32(visual(views)) @ t)  # (b,)
    s = torch.cat(scores)  # (n,)
    # Each window's score is spread around its centre (a Gaussian, not its whole box): a pixel's heat
    # comes from the windows centred near it, so the peak sits on the object, not beside it where
    # the windows holding the object and nothing else lie.
    coord = torch.arange(size, device=x.device, dtype=torch.float32) + 0.5  # (H,)
    centres = torch.tensor(boxes, device=x.device, dtype=torch.float32)  # (n, 2) y, x
    sigma = side * WINDOW_SIGMA
    gy = torch.exp(-((coord[None] - centres[:, :1]) ** 2) / (2 * sigma**2))  # (n, H)
    gx = torch.exp(-((coord[None] - centres[:, 1:]) ** 2) / (2 * sigma**2))  # (n, W)
    weights = gy[:, :, None] * gx[:, None, :]  # (n, H, W)
    return (s[:, None, None] * weights).sum(0) / weights.sum(0)  # (H, W)


def _patch_similarity(visual: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(visual, VisionTransformer):
        raise ValueError("method 'patch' needs a ViT image tower; use 'gradcam' or 'gradient' for a ResNet")
    with torch.no_grad():
        patches = unit_float32(visual.project_patches(x))  # (1, g, g, E)
    return patches[0] @ t  # (g, g)


def _cosine(embedding: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return unit_float32(embedding)[0] @ t  # scalar


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
            first = visual.n_prefix  # skip the class token
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


@dataclass
class Explanation:
    text: str
    method: str
    similarity: float  # cosine of the image and text embeddings
    heat: torch.Tensor  # (S, S) in [0, 1] over the model's input view
    image: Image.Image  # the original image, RGB
    resize_mode: str  # how the preprocessing fitted ``image`` to the input ("shortest" crops)

    def heat_on_image(self) -> np.ndarray:
        """The map over the original image's own pixels, (H, W) float32; NaN where the
        preprocessing cropped the image off."""
        w, h = self.image.size
        return explain_draw.heat_on_image(self.heat, w, h, resize_mode=self.resize_mode)

    def overlay(self, *, alpha: float = 0.5) -> Image.Image:
        """The original image at its own resolution with the coloured map blended over the part the
        model sees (the rest dimmed)."""
        return explain_draw.overlay(self.image, self.heat_on_image(), alpha=alpha)

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
    similarity = float(emb @ unit_float32(text_embedding.cpu()))
    heat = heat_map(model, x, text_embedding, method=method)
    resolved = AUTO_METHOD if method == "auto" else method
    return Explanation(
        text, resolved, similarity, heat, image.convert("RGB"), model.config.preprocess.resize_mode
    )
