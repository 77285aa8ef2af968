"""The pretrained-weights registry: ``pretrained.json`` (data, not code) read into typed entries.

A name is ``<architecture>/<tag>`` (``ViT-B-32/openai``, ``ViT-L-14/laion2b_s32b_b82k``). Each entry
says where the weights come from (a URL with its SHA-256, or a Hugging Face Hub repo), what format
they are in, and what the files do not record themselves: the activation and, where it differs from
OpenAI's, the preprocessing. The architecture is one of :func:`clipforge.list_models`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..config import ACTIVATIONS, PreprocessConfig

FORMATS = ("openai", "open_clip", "hf", "apple_mobileclip")
_KEYS = {
    "architecture", "act", "format", "url", "sha256", "hf_hub", "revision", "hub_file", "preprocess", "tokenizer",
    "description", "license",
}  # fmt: skip


class UnknownModelError(ValueError):
    """A model reference that names nothing known; the message lists the closest names."""


@dataclass(frozen=True)
class PretrainedEntry:
    name: str  # "<architecture>/<tag>"
    architecture: str
    act: str  # "gelu" | "quick_gelu" | "gelu_tanh" (SigLIP): open_clip/OpenAI files do not record it
    format: str  # "openai" | "open_clip" | "hf" | "apple_mobileclip": how the source's tensors are named
    url: str | None = None  # a plain download, verified against ``sha256``
    sha256: str | None = None
    hf_hub: str | None = None  # "org/repo" on the Hugging Face Hub
    revision: str | None = None  # Hub branch, tag or commit (default: main)
    # one file of the Hub repo, for repos in neither open_clip's nor transformers' layout (Apple's
    # apple/MobileCLIP-S0: mobileclip_s0.pt); only that file is fetched
    hub_file: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessConfig fields that differ
    # "openai" (the packaged BPE), "checkpoint" (the source's own files) or "hf-hub:ORG/REPO[@REV]": the
    # tokenizer files of another Hub repo (open_clip's XLM-R weights name FacebookAI/xlm-roberta-*'s)
    tokenizer: str = "openai"
    description: str = ""
    license: str = ""

    @property
    def tag(self) -> str:
        return self.name.split("/", 1)[1]

    def preprocess_config(self) -> PreprocessConfig:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.preprocess.items()}
        config = PreprocessConfig(**values)
        config.validate()
        return config


def _entry(name: str, data: dict[str, Any]) -> PretrainedEntry:
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"pretrained.json: {name}: unknown key(s) {', '.join(unknown)}")
    entry = PretrainedEntry(name=name, **data)
    if "/" not in name or name.split("/", 1)[0] != entry.architecture:
        raise ValueError(f"pretrained.json: {name}: a name is '<architecture>/<tag>' ({entry.architecture}/...)")
    if entry.act not in ACTIVATIONS:
        raise ValueError(f"pretrained.json: {name}: act must be one of {', '.join(ACTIVATIONS)}")
    if entry.format not in FORMATS:
        raise ValueError(f"pretrained.json: {name}: format must be one of {', '.join(FORMATS)}")
    if bool(entry.url) == bool(entry.hf_hub):
        raise ValueError(f"pretrained.json: {name}: give exactly one of url (with sha256) or hf_hub")
    if entry.hub_file is not None and (not entry.hub_file or not entry.hf_hub or "/" in entry.hub_file):
        raise ValueError(f"pretrained.json: {name}: hub_file names one file at the top of the hf_hub repo")
    if entry.url and not (entry.sha256 and len(entry.sha256) == 64):
        raise ValueError(f"pretrained.json: {name}: a url needs its 64-hex-digit sha256")
    if entry.tokenizer not in ("openai", "checkpoint") and not entry.tokenizer.startswith("hf-hub:"):
        raise ValueError(f"pretrained.json: {name}: tokenizer must be 'openai', 'checkpoint' or 'hf-hub:ORG/REPO'")
    entry.preprocess_config()  # unknown or invalid preprocessing fields fail here
    return entry


@cache
def _registry() -> dict[str, PretrainedEntry]:
    text = (resources.files("clipforge.pretrained") / "pretrained.json").read_text(encoding="utf-8")
    return {name: _entry(name, data) for name, data in json.loads(text).items()}


def list_pretrained(architecture: str | None = None) -> list[str]:
    """Every pretrained name (``ViT-B-32/openai``, ...), optionally only one architecture's, sorted."""
    return sorted(n for n, e in _registry().items() if architecture is None or e.architecture == architecture)


def find_pretrained(name: str) -> PretrainedEntry | None:
    """The entry for ``name`` (exact, else case-insensitive), or None."""
    registry = _registry()
    if name in registry:
        return registry[name]
    lowered = {n.lower(): e for n, e in registry.items()}
    return lowered.get(name.lower())


def find_hub_file_entry(repo_id: str, revision: str | None = None) -> PretrainedEntry | None:
    """The entry that fetches one file of Hub repo ``repo_id`` (``hub_file``: a repo in its publisher's
    own layout, such as ``apple/MobileCLIP-S0``), at ``revision`` if given; None if there is none."""
    for entry in _registry().values():
        if entry.hub_file and (entry.hf_hub or "").lower() == repo_id.lower() and revision in (None, entry.revision):
            return entry
    return None


def get_pretrained(name: str) -> PretrainedEntry:
    """The entry for ``name``; an unknown name is an :class:`UnknownModelError` listing the closest."""
    entry = find_pretrained(name)
    if entry is None:
        raise UnknownModelError(f"unknown pretrained model {name!r}. {closest_names_hint(name)}")
    return entry


def closest_names_hint(name: str, *, n: int = 5) -> str:
    """'Closest pretrained names: ...' for an error message (by architecture first, then spelling)."""
    names = list_pretrained()
    arch = name.split("/", 1)[0].lower()
    same_arch = [m for m in names if m.split("/", 1)[0].lower() == arch]
    spelled = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
    close = list(dict.fromkeys(spelled + same_arch))[:n] or names[:n]
    return (
        f"Closest pretrained names: {', '.join(close)} "
        "(all: clipforge.pretrained.list_pretrained(), or `clipforge models --pretrained`)."
    )
