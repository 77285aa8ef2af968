"""Zero-shot classification: class embeddings from prompt templates, and accuracy against labels.

A class's embedding is the mean of its L2-normalised prompt embeddings ("a photo of a {c}.",
"a drawing of a {c}.", ...), normalised again (template ensembling, as in the CLIP paper).
Templates mark the class name with ``{c}`` (or a bare ``{}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import CLIP
from .accuracy import topk_accuracy


def fill_template(template: str, classname: str) -> str:
    """``"a photo of a {c}."`` -> ``"a photo of a dog."`` (``{}`` works too)."""
    if "{c}" not in template and "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{c}}' placeholder for the class name")
    return template.replace("{c}", classname).replace("{}", classname)


@torch.no_grad()
def encode_texts(model: CLIP, tokenizer, texts: Sequence[str], *, batch_size: int = 256) -> Tensor:
    """L2-normalised text embeddings (N, E) in float32."""
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[i : i + batch_size]), context_length=model.config.text.context_length)
        out.append(model.encode_text(tokens.to(model.device)).float())
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


@torch.no_grad()
def encode_images(model: CLIP, images: Tensor | Iterable[Tensor], *, batch_size: int = 256) -> Tensor:
    """L2-normalised image embeddings (N, E) in float32 from preprocessed images (N, 3, H, W),
    given as one tensor or as an iterable of batches."""
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    out = [model.encode_image(b.to(model.device)).float() for b in batches]
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


@torch.no_grad()
def build_classifier(model: CLIP, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
    """Class embeddings (C, E), float32, each the normalised mean of its normalised prompt embeddings."""
    if not classnames:
        raise ValueError("no class names given")
    if not templates:
        raise ValueError("no prompt templates given")
    prompts = [fill_template(t, c) for c in classnames for t in templates]
    emb = encode_texts(model, tokenizer, prompts)  # (C * n_templates, E)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)  # (C, E)
    return F.normalize(emb, dim=-1)


def zero_shot_accuracy(
    image_features: Tensor,
    classifier: Tensor,
    labels: Tensor | Sequence[int],
    *,
    topk: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Top-k accuracy of ``image_features (N, E) @ classifier (C, E).T`` against ``labels (N,)``.

    Returns ``{"top1": ..., "top5": ...}`` as floats in [0, 1]; a k larger than the number of
    classes is left out.
    """
    labels = torch.as_tensor(labels, dtype=torch.long, device=image_features.device)
    if image_features.shape[0] != labels.shape[0]:
        raise ValueError(f"{image_features.shape[0]} images but {labels.shape[0]} labels")
    if image_features.shape[0] == 0:
        raise ValueError("no images to evaluate")
    num_classes = classifier.shape[0]
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    logits = image_features.float() @ classifier.float().to(image_features.device).T  # (N, C)
    return {f"top{k}": v for k, v in topk_accuracy(logits, labels, ks=tuple(topk)).items()}


def predict(image_features: Tensor, classifier: Tensor) -> Tensor:
    """Most likely class per image, (N,) long."""
    return (image_features.float() @ classifier.float().to(image_features.device).T).argmax(dim=1)
