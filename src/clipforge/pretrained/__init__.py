"""Pretrained weights by name and Hub id: the registry (``pretrained.json``), verified downloads, the
Hugging Face Hub, and the resolver every command's ``--model`` goes through.

    from clipforge.pretrained import resolve_model, list_pretrained
    resolve_model("ViT-B-32/openai").path     # a cached clipforge checkpoint (downloaded + converted once)
"""

from .download import DownloadError, download_url
from .registry import PretrainedEntry, UnknownModelError, get_pretrained, list_pretrained
from .resolve import ResolvedModel, cache_dir, fetch_pretrained, resolve_checkpoint, resolve_model

__all__ = [
    "DownloadError",
    "PretrainedEntry",
    "ResolvedModel",
    "UnknownModelError",
    "cache_dir",
    "download_url",
    "fetch_pretrained",
    "get_pretrained",
    "list_pretrained",
    "resolve_checkpoint",
    "resolve_model",
]
