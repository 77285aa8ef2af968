"""A cached zero-shot classifier: class embeddings built once from labels × prompt templates.

>>> clf = ZeroShotClassifier(model, tokenizer, ["cat", "dog"], load_templates("default"))
>>> clf.predict(images, k=2)          # [[("cat", 0.93), ("dog", 0.07)], ...]
>>> clf.save("pets.safetensors")      # class embeddings + labels, templates and the model's id
>>> ZeroShotClassifier.load("pets.safetensors", model=model)  # no text encoding; wrong model → error

Scores: ``mode="softmax"`` turns ``logit_scale · cos`` into a distribution over the labels
(single-label); ``mode="sigmoid"`` gives each label an independent probability
``sigmoid(logit_scale · cos + logit_bias)`` (multi-label), which is calibrated only for a model
trained with the sigmoid loss, so it needs a model with a ``logit_bias``. Without ``mode`` the
model's own objective decides (``model.config.objective``): sigmoid for SigLIP-style models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from ..fileio import atomic_write
from ..inference import image_transform, model_id
from ..models import CLIP
from ..tokenizer import with_language
from .prompts import check_labels, check_templates, load_templates
from .zeroshot import build_classifier

FORMAT = "clipforge.zeroshot/1"
ScoreMode = Literal["softmax", "sigmoid"]


class ZeroShotClassifier:
    """Labels scored against images by cosine similarity to prompt-ensembled text embeddings."""

    def __init__(
        self,
        model: CLIP,
        tokenizer: Callable,
        labels: Sequence[str],
        templates: Sequence[str] | None = None,
        *,
        transform: Callable | None = None,
        language: str | None = None,
    ) -> None:
        """``language``: the labels' and templates' language code (NLLB-CLIP models: ``"deu_Latn"``;
        None: the tokenizer's own), see :func:`clipforge.tokenizer.with_language`."""
        labels = check_labels(list(labels))
        templates = check_templates(list(templates)) if templates is not None else load_templates("default")
        weights = build_classifier(model, with_language(tokenizer, language), labels, templates)  # (C, E)
        self._setup(model, labels, templates, weights, transform)

    def _setup(
        self,
        model: CLIP,
        labels: list[str],
        templates: list[str],
        class_embeddings: torch.Tensor,
        transform: Callable | None,
    ) -> None:
        self.model = model
        self.labels = labels
        self.templates = templates
        self.class_embeddings = class_embeddings.float().cpu()  # (C, E), L2-normalised rows
        self.model_id = model_id(model)
        self.transform = transform if transform is not None else image_transform(model)

    # ---- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
        """Preprocessed (B, 3, H, W) tensor or PIL images → normalised image embeddings (B, E)."""
        if not isinstance(images, torch.Tensor):
            images = torch.stack([self.transform(im) for im in images])  # (B, 3, H, W)
        return self.model.encode_image(images.to(self.model.device)).float().cpu()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Image embeddings (N, E) → ``logit_scale · cos (+ logit_bias)``, (N, C)."""
        scale, bias = self.model.scale_and_bias()
        logits = scale * features.float().cpu() @ self.class_embeddings.T  # (N, C)
        if bias is not None:
            logits = logits + bias
        return logits

    def scores_from_features(self, features: torch.Tensor, *, mode: ScoreMode | None = None) -> torch.Tensor:
        """Probabilities (N, C): a distribution over labels (softmax), or one per label (sigmoid);
        ``None``: the model's own objective."""
        mode = self.model.config.objective if mode is None else mode
        if mode == "softmax":
            return self.logits(features).softmax(dim=-1)  # a constant bias cancels here
        if mode == "sigmoid":
            if self.model.logit_bias is None:
                raise ValueError(
                    "sigmoid scores need a model trained with the sigmoid loss (it has no logit_bias); "
                    "use mode='softmax'"
                )
            return self.logits(features).sigmoid()
        raise ValueError(f"mode must be 'softmax' or 'sigmoid', got {mode!r}")

    def scores(
        self, images: torch.Tensor | Sequence[Image.Image], *, mode: ScoreMode | None = None
    ) -> torch.Tensor:
        """Images → probabilities (N, C) in label order."""
        return self.scores_from_features(self.encode(images), mode=mode)

    def rank(self, scores: torch.Tensor, *, k: int | None = None) -> list[list[tuple[str, float]]]:
        """Each row of ``scores`` (N, C) → its ``k`` best (label, score), best first."""
        k = len(self.labels) if k is None else min(k, len(self.labels))
        values, indices = scores.topk(k, dim=-1)  # (N, k)
        return [
            [(self.labels[i], float(v)) for v, i in zip(vs, ix, strict=True)]
            for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def predict(
        self, images: torch.Tensor | Sequence[Image.Image], *, k: int = 1, mode: ScoreMode | None = None
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` best labels of each image with their probabilities, best first."""
        return self.rank(self.scores(images, mode=mode), k=k)

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One ``.safetensors`` file: the (C, E) class embeddings, with labels, templates and the
        model's id as JSON metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "labels": json.dumps(self.labels),
            "templates": json.dumps(self.templates),
            "model_id": self.model_id,
            "model_name": self.model.config.name or "",
        }
        tensors = {"class_embeddings": self.class_embeddings.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        return path

    @classmethod
    def load(cls, path: str | Path, *, model: CLIP, transform: Callable | None = None) -> ZeroShotClassifier:
        """A saved classifier, for the same ``model`` it was built with (checked by id)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{path}: not a clipforge zero-shot classifier (no {FORMAT!r} metadata)")
                weights = f.get_tensor("class_embeddings")
            labels, templates = json.loads(meta["labels"]), json.loads(meta["templates"])
        except (KeyError, json.JSONDecodeError, OSError, SafetensorError) as e:
            raise ValueError(f"{path}: not a readable classifier file ({e})") from e
        found = model_id(model)
        if meta["model_id"] != found:
            raise ValueError(
                f"{path}: built for model {meta['model_id']} ({meta.get('model_name') or 'unnamed'}), "
                f"but the given model is {found} ({model.config.name or 'unnamed'}): rebuild the classifier"
            )
        if weights.shape != (len(labels), model.config.embed_dim):
            raise ValueError(
                f"{path}: class embeddings {tuple(weights.shape)} do not fit {len(labels)} labels"
            )
        clf = cls.__new__(cls)
        clf._setup(model, labels, templates, weights, transform)
        return clf

    def __repr__(self) -> str:
        n, t = len(self.labels), len(self.templates)
        return f"ZeroShotClassifier({n} labels, {t} templates, model {self.model_id})"
