"""One-call entry point: ``load`` any model reference with its tokenizer and transform."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch

from .inference import image_transform, load_model
from .models import CLIP

__all__ = ["Loaded", "image_transform", "load"]


class Loaded(NamedTuple):
    model: CLIP
    tokenizer: Callable  # texts -> (B, T) token ids (a clipforge.tokenizer.Tokenizer)
    transform: Callable  # PIL image -> (3, H, W) tensor


def load(
    model: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    precision: str | torch.dtype = "auto",
    progress: bool = True,
    backend: str = "torch",
) -> Loaded:
    """Load a model: model in eval mode, tokenizer, eval transform.

    ``model`` is any reference: a clipforge checkpoint (``.safetensors``, or a folder holding
    ``model.safetensors``); any source ``clipforge convert`` reads (OpenAI ``.pt``, open_clip files,
    Hugging Face folders), converted in memory; a pretrained name (``"ViT-B-32/openai"``, see
    ``clipforge.pretrained.list_pretrained()``); or a Hugging Face Hub id (``"hf-hub:laion/CLIP-ViT-B-32-
    laion2B-s34B-b79K"`` for open_clip repos, ``"openai/clip-vit-base-patch32"`` for transformers repos).
    Names and Hub ids are downloaded and converted once, then loaded from clipforge's cache.

    ``device="auto"`` picks CUDA when present; ``precision="auto"`` runs bf16 on GPUs and on CPUs with
    native bf16 matrix instructions (AVX512-BF16/AMX), fp32 elsewhere. Pass ``precision="fp32"`` for
    bit-exact reference numbers. ``backend="onnx"`` or ``"onnx-int8"`` runs the encoders in ONNX
    Runtime on the CPU (exported once, cached beside the checkpoint)."""
    loaded = load_model(model, device=device, precision=precision, progress=progress, backend=backend)
    return Loaded(loaded.model, loaded.tokenizer, loaded.transform)
