"""The inference component: a model with its tokenizer, transform, id, device and dtype.

An :class:`Encoder` turns texts and images into unit-norm float32 numpy embeddings and scores them
the way the model was trained to (``logit_scale``, clamped as in training, and ``logit_bias`` for
sigmoid-loss models). Model calls run under one lock, so an encoder can be shared by a server's
threads. Search, the HTTP service and embedding jobs all go through it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..device import precision_name
from ..models import CLIP
from ..tokenizer import with_language
from .identity import model_id as compute_model_id
from .loading import load_model


class Encoder:
    """CLIP model + tokenizer + transform, producing (B, E) unit-norm float32 numpy embeddings."""

    def __init__(
        self,
        model: CLIP,
        tokenizer: Callable[[list[str]], torch.Tensor],
        transform: Callable,
        *,
        model_id: str | None = None,
        model_name: str = "",
        reference: str = "",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = transform
        self.model_id = model_id or compute_model_id(model)
        self.model_name = model_name or model.config.name or ""
        self.reference = reference  # what to pass to `Encoder.load` to get this model again
        self.embed_dim = int(model.config.embed_dim)
        self.lock = threading.Lock()
        self._by_language: dict[str, Callable] = {}  # language code -> tokenizer (valid codes only)

    @classmethod
    def load(
        cls,
        reference: str | os.PathLike,
        *,
        device: str | torch.device = "auto",
        precision: str | torch.dtype = "auto",
        progress: bool = True,
        backend: str = "torch",
    ) -> Encoder:
        """Any model reference (checkpoint, convertible source, pretrained name, Hub id). The tokenizer
        is built on first use, so image-only work (indexing) never reads the text vocabulary.
        ``backend``: "torch", or "onnx" / "onnx-int8" for ONNX Runtime on the CPU."""
        loaded = load_model(reference, device=device, precision=precision, progress=progress, backend=backend)
        resolved = loaded.resolved
        # a local path is remembered absolutely (an index may be searched from another directory)
        remembered = str(os.path.abspath(reference)) if resolved.kind in ("checkpoint", "source") else str(reference)
        name = loaded.model.config.name or (resolved.path.name if resolved.kind == "checkpoint" else str(reference))
        return cls(loaded.model, loaded.tokenizer, loaded.transform, model_name=name, reference=remembered)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def precision(self) -> str:
        """The precision the towers run in, as the commands name it ("fp32", "bf16", "fp16")."""
        return precision_name(self.dtype)

    @property
    def backend(self) -> str:
        """"torch", or the ONNX Runtime backend ("onnx", "onnx-int8") the towers run in."""
        return getattr(self.model, "backend", "torch")

    @property
    def logit_scale(self) -> float:
        return float(self.model.scale_and_bias()[0])

    @property
    def logit_bias(self) -> float | None:
        bias = self.model.scale_and_bias()[1]
        return None if bias is None else float(bias)

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) preprocessed images → (B, E) float32."""
        with self.lock, torch.inference_mode():
            x = pixels.to(self.device, self.dtype, non_blocking=True)
            features = self.model.encode_image(x, normalize=True)  # (B, E)
            return features.float().cpu().numpy()

    def encode_images(self, images: Sequence) -> np.ndarray:
        """PIL images → (B, E) float32 (the transform runs outside the model lock)."""
        pixels = torch.stack([self.transform(im) for im in images])  # (B, 3, H, W)
        return self.encode_pixels(pixels)

    @property
    def language(self) -> str | None:
        """The language code the tokenizer starts texts with (NLLB-CLIP), else None."""
        return getattr(self.tokenizer, "language", None)

    @property
    def languages(self) -> tuple[str, ...]:
        """The language codes ``language=`` takes (NLLB-CLIP's), empty for other tokenizers."""
        return tuple(getattr(self.tokenizer, "languages", ()))

    def text_tokenizer(self, language: str | None = None) -> Callable:
        """The tokenizer for texts in ``language`` (NLLB-CLIP: a code such as ``"deu_Latn"``; None:
        the model's own), made once per language; a bad code is a ``TokenizerError`` naming ``language``."""
        if language is None:
            return self.tokenizer
        tokenizer = self._by_language.get(language)
        if tokenizer is None:  # two threads may both make it: the same tokenizer, kept once
            tokenizer = self._by_language.setdefault(language, with_language(self.tokenizer, language))
        return tokenizer

    def encode_texts(self, texts: Sequence[str], *, language: str | None = None) -> np.ndarray:
        """Strings → (B, E) float32; ``language``: the texts' language code (NLLB-CLIP models only,
        see :meth:`text_tokenizer`)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not one string")
        tokens = self.text_tokenizer(language)(list(texts))  # (B, T)
        with self.lock, torch.inference_mode():
            features = self.model.encode_text(tokens.to(self.device), normalize=True)  # (B, E)
            return features.float().cpu().numpy()
