"""One model reference for every command: a path, a pretrained name or a Hub id -> a local file.

``resolve_model`` understands, in this order:

1. a local path: a clipforge checkpoint (file, or folder with ``model.safetensors``), or any source
   ``clipforge convert`` reads (OpenAI ``.pt``, open_clip files/folders, Hugging Face folders);
2. ``hf-hub:org/repo[@rev]``: an open_clip-format Hub repo (a transformers repo also works);
3. a pretrained name from ``pretrained.json`` (``ViT-B-32/openai``, ``ViT-B-32/laion2b_s34b_b79k``);
4. ``org/repo[@rev]``: a transformers-format Hub repo (an open_clip repo also works).

Pretrained names and Hub ids are downloaded (see :mod:`.download`, :mod:`.hub`), converted once and
cached as self-describing clipforge checkpoints under :func:`cache_dir`, so every later load costs
what loading a local clipforge checkpoint costs. Local non-clipforge sources are converted in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import save_checkpoint
from ..config import PreprocessConfig
from ..convert import detect, find_clipforge_checkpoint, import_model, import_tokenizer, open_clip_hf_text
from ..convert.detect import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
from ..fileio import sha256_file
from ..models import list_models
from ..tokenizer import is_tokenizer_dir
from .download import download_url
from .hub import HUB_PREFIX, file_snapshot, parse_hub_id, snapshot, tokenizer_snapshot
from .registry import (
    PretrainedEntry,
    UnknownModelError,
    closest_names_hint,
    find_hub_file_entry,
    find_pretrained,
    list_pretrained,
)

log = logging.getLogger(__name__)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
CONVERTED_FILE = "model.safetensors"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference led: a local clipforge checkpoint, or a source to convert in memory."""

    reference: str  # what the caller passed
    kind: str  # "checkpoint" | "source" | "pretrained" | "hub"
    path: Path  # the clipforge checkpoint (is_checkpoint) or the convertible source
    is_checkpoint: bool


def cache_dir() -> Path:
    """clipforge's cache: ``$CLIPFORGE_CACHE``, else ``$XDG_CACHE_HOME/clipforge``, else ``~/.cache/clipforge``."""
    if os.environ.get("CLIPFORGE_CACHE"):
        return Path(os.environ["CLIPFORGE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "clipforge"


def resolve_model(reference: str | os.PathLike, *, progress: bool = True) -> ResolvedModel:
    """Turn any model reference into a local file, downloading and converting (once) if needed.

    Raises ``ValueError`` for an empty or unknown reference (with the closest pretrained names),
    :class:`~clipforge.pretrained.download.DownloadError` (an ``OSError``) when a download fails."""
    ref = os.fspath(reference)
    if not str(ref).strip():
        raise ValueError(
            "the model reference is empty: pass a checkpoint path, a pretrained name "
            "(clipforge.pretrained.list_pretrained(), or `clipforge models --pretrained`) or a Hub id"
        )
    path = Path(ref).expanduser()
    if path.exists():
        ckpt = find_clipforge_checkpoint(path)
        if ckpt is not None:
            return ResolvedModel(ref, "checkpoint", ckpt, True)
        return ResolvedModel(ref, "source", path, False)
    if ref.startswith(HUB_PREFIX):
        return _from_hub(ref, prefer="open_clip", progress=progress)
    entry = find_pretrained(ref)
    if entry is not None:
        return ResolvedModel(ref, "pretrained", fetch_pretrained(entry, progress=progress), True)
    head = ref.split("/", 1)[0]
    known_arch = head.lower() in {m.lower() for m in list_models()}
    if _HUB_ID.match(ref) and not known_arch:
        return _from_hub(ref, prefer="transformers", progress=progress)
    if known_arch and "/" not in ref:
        tags = list_pretrained(architecture=next(m for m in list_models() if m.lower() == head.lower()))
        raise UnknownModelError(
            f"{ref!r} is an architecture, not weights: "
            + (f"pick pretrained weights, e.g. {', '.join(tags[:6])}" if tags else "it has no pretrained weights")
            + f" (or train one: clipforge.train.fit(TrainConfig.from_flat(model={ref!r}, ...)), "
            + f"or `clipforge train --model {ref}`)"
        )
    raise UnknownModelError(f"{ref!r}: no such file or folder, pretrained name or Hub id. {closest_names_hint(ref)}")


def resolve_checkpoint(reference: str | os.PathLike, *, progress: bool = True) -> Path:
    """Like :func:`resolve_model`, but always a clipforge checkpoint file: a local source (OpenAI
    ``.pt``, open_clip or Hugging Face files) is converted into the cache once, keyed by its path, size
    and modification time. For jobs that read the file again later (training's ``init``, resumes)."""
    resolved = resolve_model(reference, progress=progress)
    if resolved.is_checkpoint:
        return resolved.path
    source = resolved.path.resolve()
    weights = detect(source).weights or source
    stat = weights.stat()
    key = hashlib.sha256(f"{source}:{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "converted" / "local" / key / CONVERTED_FILE
    if not target.is_file():
        _convert_to_cache(
            source, target, format="auto", model=None, act=None, preprocess=None,
            name=source.stem if source.is_file() else source.name, origin=str(source),
        )  # fmt: skip
    return target


def fetch_pretrained(entry: PretrainedEntry, *, progress: bool = True) -> Path:
    """The cached clipforge checkpoint of a registry entry, downloading and converting it once."""
    key = hashlib.sha256(json.dumps(entry.__dict__, sort_keys=True, default=str).encode()).hexdigest()[:12]
    target = cache_dir() / "converted" / "pretrained" / entry.architecture / entry.tag / key / CONVERTED_FILE
    if target.is_file():
        return target
    if entry.url:
        filename = entry.url.rsplit("/", 1)[-1] or "weights.pt"
        source = download_url(
            entry.url, cache_dir() / "downloads" / entry.sha256 / filename, sha256=entry.sha256, progress=progress
        )
        label = entry.url
    elif entry.hub_file:  # one file of a repo in its publisher's own layout
        assert entry.hf_hub is not None
        source = file_snapshot(entry.hf_hub, entry.hub_file, revision=entry.revision, label=entry.name)
        label = f"hf-hub:{entry.hf_hub}@{source.parent.name}/{entry.hub_file}"
    else:
        assert entry.hf_hub is not None
        prefer = "transformers" if entry.format == "hf" else "open_clip"
        source = snapshot(entry.hf_hub, revision=entry.revision, prefer=prefer, label=entry.name)
        label = f"hf-hub:{entry.hf_hub}@{source.name}"
        if entry.format == "open_clip":  # the registry knows the architecture: the weights file is enough
            source = next((source / n for n in OPEN_CLIP_WEIGHTS if (source / n).is_file()), source)
    hf_folder = source.is_dir() and (source / "config.json").is_file()
    fmt = "hf" if hf_folder and entry.format != "open_clip" else entry.format
    vocab = tokenizer_snapshot(entry.tokenizer) if entry.tokenizer.startswith(HUB_PREFIX) else None
    return _convert_to_cache(
        source,
        target,
        format=fmt,
        model=None if fmt == "hf" else entry.architecture,
        act=entry.act,
        preprocess=entry.preprocess_config() if entry.preprocess else None,
        name=entry.name,
        origin=label,
        vocab=vocab,
    )


def _from_hub(ref: str, *, prefer: str, progress: bool) -> ResolvedModel:
    repo_id, revision = parse_hub_id(ref)
    entry = find_hub_file_entry(repo_id, revision)
    if entry is not None:  # a repo in its publisher's own layout (apple/MobileCLIP-S0): the registry knows it
        return ResolvedModel(ref, "pretrained", fetch_pretrained(entry, progress=progress), True)
    folder = snapshot(repo_id, revision=revision, prefer=prefer, label=ref)
    commit = folder.name  # huggingface_hub names snapshot folders by commit hash
    target = cache_dir() / "converted" / "hub" / repo_id.replace("/", "--") / commit / CONVERTED_FILE
    if not target.is_file():
        _convert_to_cache(
            folder, target, format="auto", model=None, act=None, preprocess=None,
            name=repo_id, origin=f"hf-hub:{repo_id}@{commit}", vocab=_named_tokenizer(folder),
        )  # fmt: skip
    return ResolvedModel(ref, "hub", target, True)


def _named_tokenizer(folder: Path) -> Path | None:
    """For an open_clip repo without tokenizer files whose config names an HF tokenizer (the
    ``xlm-roberta-*`` and NLLB-CLIP repos): that tokenizer repo's files, fetched alone."""
    config = folder / OPEN_CLIP_CONFIG
    if is_tokenizer_dir(folder) or not config.is_file():
        return None
    try:
        model_cfg = json.loads(config.read_text()).get("model_cfg") or {}
    except (json.JSONDecodeError, AttributeError):
        return None  # the import names the broken file
    repo = open_clip_hf_text.tokenizer_repo(model_cfg) if isinstance(model_cfg, dict) else None
    return tokenizer_snapshot(HUB_PREFIX + repo) if repo else None


def _convert_to_cache(
    source: Path,
    target: Path,
    *,
    format: str,
    model: str | None,
    act: str | None,
    preprocess: PreprocessConfig | None,
    name: str,
    origin: str,
    vocab: Path | None = None,
) -> Path:
    """Import ``source`` (file or folder) and save it as a clipforge checkpoint at ``target``; ``vocab``:
    a tokenizer folder to use instead of the source's own files."""
    log.info("converting %s into clipforge's cache (once)", origin)
    imported = import_model(source, format=format, model=model, act=act if format != "auto" else None)
    config = imported.model.config.replace(name=name)
    if preprocess is not None:
        config = config.replace(preprocess=preprocess)
    imported.model.config = config
    tokenizer = import_tokenizer(imported, vocab=vocab)
    provenance = {**imported.provenance, "source": origin, "pretrained": name}
    if source.is_file() and "sha256" not in provenance:
        provenance["sha256"] = {source.name: sha256_file(source)}
    return save_checkpoint(target, imported.model, tokenizer=tokenizer, provenance=provenance)
