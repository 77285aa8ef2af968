"""One-call entry points: ``load`` a checkpoint with its tokenizer and transform, build transforms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from .checkpoint import load_checkpoint
from .config import ModelConfig
from .device import parse_precision, resolve_device
from .models import CLIP


class Loaded(NamedTuple):
    model: CLIP
    tokenizer: Tokenizer  # noqa: F821 (clipforge.tokenizer.Tokenizer)
    transform: Callable


def image_transform(config: ModelConfig | CLIP, *, train: bool = False) -> Callable:
    """The preprocessing a model expects (eval: OpenAI's resize + centre crop; train: random resized crop)."""
    from .data.transforms import image_transform as _build

    cfg = config.config if isinstance(config, CLIP) else config
    return _build(cfg.preprocess, cfg.vision.image_size, train=train)


def tokenizer_for(config: ModelConfig, metadata: dict | None = None):
    """The checkpoint's own tokenizer, or OpenAI's vocabulary at the model's context length."""
    from .tokenizer import get_tokenizer, tokenizer_from_metadata

    if metadata is not None:
        return tokenizer_from_metadata(metadata)
    return get_tokenizer("openai", context_length=config.text.context_length)


def load(
    path: str | Path,
    *,
    device: str | torch.device = "auto",
    precision: str | torch.dtype = "auto",
) -> Loaded:
    """Load a model: model in eval mode, tokenizer, eval transform.

    ``device="auto"`` picks CUDA when present; ``precision="auto"`` runs bf16 on GPUs and on CPUs with
    native bf16 matrix instructions (AVX512-BF16/AMX), fp32 elsewhere. Pass ``precision="fp32"`` for
    bit-exact reference numbers.

    ``path`` is a clipforge checkpoint (``.safetensors``, or a folder holding ``model.safetensors``) or
    any source ``clipforge convert`` reads (OpenAI ``.pt``, open_clip files, Hugging Face folders),
    converted in memory."""
    from .convert import find_clipforge_checkpoint, load_source

    dev = resolve_device(device)
    dtype = parse_precision(precision, dev)
    ckpt = find_clipforge_checkpoint(path)
    if ckpt is None:
        model, tokenizer = load_source(path)
        model = model.to(device=dev, dtype=dtype).eval()
        return Loaded(model, tokenizer, image_transform(model.config))
    model, info = load_checkpoint(ckpt, device=dev, dtype=dtype)
    return Loaded(model, tokenizer_for(info.config, info.tokenizer), image_transform(info.config))
