"""Hugging Face Hub repos through ``huggingface_hub``: its cache, ``HF_HOME``/``HF_HUB_CACHE``,
``HF_HUB_OFFLINE`` and tokens work exactly as users have set them up.

Only the files a conversion needs are fetched: an open_clip repo's ``open_clip_config.json`` and
weights, or a transformers repo's config, preprocessing, tokenizer files and weights (safetensors
first; ``.bin`` only when a repo has no safetensors). Environment variables are read at call time.
"""

from __future__ import annotations

import os
from pathlib import Path

from .download import DownloadError, offline

HUB_PREFIX = "hf-hub:"
_OPEN_CLIP_TOKENIZER = [  # repos with their own vocabulary (SigLIP's spiece.model, SigLIP 2's tokenizer.json)
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "vocab.json", "merges.txt",
]  # fmt: skip
_OPEN_CLIP = (
    ["open_clip_config.json", "open_clip_model.safetensors", *_OPEN_CLIP_TOKENIZER],
    ["open_clip_config.json", "open_clip_pytorch_model.bin", *_OPEN_CLIP_TOKENIZER],
)
_TRANSFORMERS_FILES = [
    "config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.json", "merges.txt", "spiece.model",
]  # fmt: skip
_TRANSFORMERS = (
    [*_TRANSFORMERS_FILES, "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"],
    [*_TRANSFORMERS_FILES, "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"],
)
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def parse_hub_id(reference: str) -> tuple[str, str | None]:
    """``hf-hub:org/repo[@revision]`` or ``org/repo[@revision]`` -> (repo id, revision)."""
    ref = reference[len(HUB_PREFIX) :] if reference.startswith(HUB_PREFIX) else reference
    repo, _, revision = ref.partition("@")
    parts = repo.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{reference!r} is not a Hub id: expected 'org/repo' (optionally '@revision')")
    return "/".join(parts), revision or None


def hub_cache_dir() -> str | None:
    """The Hub cache as the environment says now (None: huggingface_hub's own default)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def snapshot(repo_id: str, *, revision: str | None = None, prefer: str = "open_clip", label: str = "") -> Path:
    """A local snapshot folder of ``repo_id`` holding one loadable model layout.

    ``prefer``: ``"open_clip"`` (``hf-hub:`` ids) tries open_clip's files first, ``"transformers"``
    (bare ``org/repo`` ids) a transformers model first; the other layout is the fallback. ``label``
    is what the user asked for (a Hub id or pretrained name), for error messages."""
    label = label or f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    layouts = (_OPEN_CLIP, _TRANSFORMERS) if prefer == "open_clip" else (_TRANSFORMERS, _OPEN_CLIP)
    folder: Path | None = None
    for layout in layouts:
        for patterns in layout:
            folder = _download(repo_id, revision, patterns, label=label)
            if has_weights(folder):
                return folder
    where = hub_cache_dir() or "the Hugging Face cache"
    raise DownloadError(
        f"{label}: the snapshot in {where} holds no open_clip ({', '.join(_OPEN_CLIP_WEIGHTS)}) "
        f"or transformers ({', '.join(_HF_WEIGHTS)}) weights"
        + ("; with HF_HUB_OFFLINE set, only files already cached are used" if offline() else "")
    )


def file_snapshot(repo_id: str, filename: str, *, revision: str | None = None, label: str = "") -> Path:
    """One file of ``repo_id`` (for repos in neither open_clip's nor transformers' layout, such as
    Apple's ``apple/MobileCLIP-S0`` with ``mobileclip_s0.pt``): its local path."""
    label = label or f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    path = _download(repo_id, revision, [filename], label=label) / filename
    if not path.is_file():
        raise DownloadError(f"{label}: the repo has no file {filename!r}")
    return path


def tokenizer_snapshot(reference: str) -> Path:
    """A local snapshot of only the tokenizer files of Hub repo ``reference`` (``hf-hub:ORG/REPO[@REV]``),
    for weights whose repo carries none (open_clip's XLM-R models)."""
    repo_id, revision = parse_hub_id(reference)
    folder = _download(repo_id, revision, _OPEN_CLIP_TOKENIZER, label=reference)
    if not any((folder / n).is_file() for n in ("tokenizer.json", "spiece.model", "vocab.json")):
        raise DownloadError(f"{reference}: the snapshot holds no tokenizer files ({', '.join(_OPEN_CLIP_TOKENIZER)})")
    return folder


def has_weights(folder: Path) -> bool:
    return any((folder / n).is_file() for n in (*_OPEN_CLIP_WEIGHTS, *_HF_WEIGHTS))


def _download(repo_id: str, revision: str | None, patterns: list[str], *, label: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=hub_cache_dir(),
                allow_patterns=patterns,
                local_files_only=offline(),
            )
        )
    except GatedRepoError as e:
        raise DownloadError(
            f"{label} is gated: accept its terms on the Hub, then log in (`hf auth login`) or set HF_TOKEN"
        ) from e
    except RepositoryNotFoundError as e:
        raise DownloadError(
            f"{label}: no such Hub repo (or it is private: log in with `hf auth login` or set HF_TOKEN)"
        ) from e
    except RevisionNotFoundError as e:
        raise DownloadError(f"{label}: no such revision") from e
    except LocalEntryNotFoundError as e:
        where = hub_cache_dir() or "~/.cache/huggingface/hub"
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hub could not be reached"
        raise DownloadError(
            f"{label} is not in the Hugging Face cache ({where}) and {why}: on a machine with network access "
            f"run `clipforge download {label}` (or `hf download {repo_id}`) and copy the cache here, "
            "or download the files and pass their folder as the model"
        ) from e
    except OSError as e:  # connection errors surface as requests/httpx OSErrors
        raise DownloadError(f"{label}: download failed ({e})") from e
