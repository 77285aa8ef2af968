"""The model side of search: texts and images in, unit-norm float32 embeddings out.

An :class:`Encoder` bundles a CLIP model with its tokenizer and eval transform, and a *model id*
that names the exact weights: the SHA-256 of the checkpoint file (or, for a model built in memory,
of its config and tensors). The index stores that id and refuses to mix embeddings of two models.
Model calls run under one lock, so an encoder can be shared by the threads of a server.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..fileio import sha256_file


def checkpoint_model_id(path: str | Path) -> str:
    """``sha256:<hex>`` of a checkpoint file: the same bytes give the same id on any machine."""
    return "sha256:" + sha256_file(path)


def state_dict_model_id(model: torch.nn.Module) -> str:
    """``sd-sha256:<hex>`` over a model's config and tensors (for models not loaded from a file)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json"):
        h.update(config.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(t.numpy().tobytes())
    return "sd-sha256:" + h.hexdigest()


class Encoder:
    """CLIP model + tokenizer + transform, producing (B, E) unit-norm float32 numpy embeddings."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        transform: Callable,
        *,
        model_id: str | None = None,
        model_name: str = "",
        model_path: str = "",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = transform
        self.model_id = model_id or state_dict_model_id(model)
        config = getattr(model, "config", None)
        self.model_name = model_name or getattr(config, "name", "") or ""
        self.model_path = model_path  # the checkpoint file, when loaded from one
        self.embed_dim = int(config.embed_dim) if config is not None else None
        self.lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str | torch.device = "auto", precision: str = "fp32"
    ) -> Encoder:
        """Load a clipforge checkpoint and hash it for its id. The tokenizer is built on first use,
        so image-only work (indexing) does not need the text vocabulary."""
        from clipforge.api import image_transform
        from clipforge.checkpoint import load_checkpoint
        from clipforge.device import parse_precision, resolve_device

        dev = resolve_device(device)
        model, info = load_checkpoint(path, device=dev, dtype=parse_precision(precision, dev))
        return cls(
            model,
            _LazyTokenizer(info.config, info.tokenizer),
            image_transform(info.config),
            model_id=checkpoint_model_id(path),
            model_name=Path(path).name,
            model_path=str(Path(path).resolve()),
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().clamp(max=100).item())

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

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings → (B, E) float32."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not one string")
        tokens = self.tokenizer(list(texts))  # (B, T)
        with self.lock, torch.inference_mode():
            features = self.model.encode_text(tokens.to(self.device), normalize=True)  # (B, E)
            return features.float().cpu().numpy()


class _LazyTokenizer:
    """The checkpoint's tokenizer, built when first called."""

    def __init__(self, config, metadata: dict | None) -> None:
        self.config, self.metadata, self._tokenizer = config, metadata, None
        self._lock = threading.Lock()

    def __call__(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        with self._lock:
            if self._tokenizer is None:
                from clipforge.api import tokenizer_for

                self._tokenizer = tokenizer_for(self.config, self.metadata)
        return self._tokenizer(texts, context_length=context_length)
