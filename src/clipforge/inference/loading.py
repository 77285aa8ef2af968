"""Load any model reference into (model, tokenizer, transform) on the right device and precision.

The one place where a reference (path, pretrained name, Hub id — :mod:`clipforge.pretrained`) meets
the device/precision policy (:mod:`clipforge.device`); ``clipforge.load`` and :class:`Encoder` use it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from ..checkpoint import load_checkpoint
from ..config import ModelConfig
from ..convert import load_source
from ..data.transforms import image_transform as build_transform
from ..device import parse_precision, resolve_device
from ..models import CLIP
from ..pretrained import ResolvedModel, resolve_model
from ..tokenizer import TextTokenizer, TokenizerError, get_tokenizer, tokenizer_from_metadata
from ..tokenizer.vocab import OPENAI_VOCAB_SIZE
from .identity import model_id
from .onnx_backend import check_backend, onnx_model


class LoadedModel(NamedTuple):
    model: CLIP  # eval mode, on the chosen device and dtype
    tokenizer: Callable  # texts -> (B, T) token ids
    transform: Callable  # PIL image -> (3, H, W) tensor
    resolved: ResolvedModel  # where the reference led


def image_transform(config: ModelConfig | CLIP, *, train: bool = False) -> Callable:
    """The preprocessing a model expects (eval: OpenAI's resize + centre crop; train: random resized crop)."""
    cfg = config.config if isinstance(config, CLIP) else config
    return build_transform(cfg.preprocess, cfg.vision.image_size, train=train)


def tokenizer_for(config: ModelConfig, metadata: dict[str, Any] | None = None) -> TextTokenizer:
    """The checkpoint's own tokenizer, else OpenAI's vocabulary at the model's context length when the
    text tower has OpenAI's vocabulary size (anything else would silently give wrong token ids)."""
    if metadata is not None:
        return tokenizer_from_metadata(metadata)  # CLIP BPE or SigLIP SentencePiece, as recorded
    if config.text.vocab_size != OPENAI_VOCAB_SIZE:
        raise TokenizerError(
            f"the checkpoint carries no tokenizer and its text tower has {config.text.vocab_size} tokens, "
            f"not OpenAI's {OPENAI_VOCAB_SIZE}: re-save it with its tokenizer (clipforge.save_checkpoint(..., "
            "tokenizer=...))"
        )
    return get_tokenizer("openai", context_length=config.text.context_length)


def load_model(
    reference: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    precision: str | torch.dtype = "auto",
    progress: bool = True,
    backend: str = "torch",
) -> LoadedModel:
    """Resolve ``reference`` and load it. A checkpoint's tokenizer is built on first use (image-only
    work never reads the vocabulary; a checkpoint without a usable one fails only when text comes).

    ``backend`` "onnx" or "onnx-int8" runs the encoders in ONNX Runtime on the CPU (float32 or int8
    weights; exported once and cached beside the checkpoint, see :mod:`.onnx_backend`); the PyTorch
    model it wraps is then loaded in float32 unless ``precision`` says otherwise."""
    check_backend(backend)
    if backend != "torch" and precision == "auto":
        precision = "fp32"
    resolved = resolve_model(reference, progress=progress)
    dev = resolve_device(device)
    dtype = parse_precision(precision, dev)
    if not resolved.is_checkpoint:
        model, tokenizer = load_source(resolved.path)
        model = model.to(device=dev, dtype=dtype).eval()
    else:
        model, info = load_checkpoint(resolved.path, device=dev, dtype=dtype)
        tokenizer = LazyTokenizer(info.config, info.tokenizer)
    transform = image_transform(model.config)
    if backend != "torch":
        model = onnx_model(model, backend=backend, model_id=model_id(model), checkpoint=resolved.path)
    return LoadedModel(model, tokenizer, transform, resolved)


class LazyTokenizer:
    """A checkpoint's tokenizer, built when first used (thread-safe); otherwise it behaves as the
    :class:`~clipforge.tokenizer.Tokenizer` it wraps."""

    def __init__(self, config: ModelConfig, metadata: dict[str, Any] | None) -> None:
        self.config, self.metadata = config, metadata
        self._tokenizer: TextTokenizer | None = None
        self._lock = threading.Lock()

    def get(self) -> TextTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = tokenizer_for(self.config, self.metadata)
            return self._tokenizer

    def __call__(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        return self.get()(texts, context_length=context_length)

    def __getattr__(self, name: str) -> Any:  # only reached for attributes the wrapper lacks
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)
