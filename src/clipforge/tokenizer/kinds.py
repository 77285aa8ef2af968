"""One entry point per tokenizer kind: rebuild any tokenizer from checkpoint metadata (its ``kind``
field says which class), or read a tokenizer folder in Hugging Face's layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import sentencepiece, tokenizer
from .sentencepiece import SentencePieceTokenizer
from .tokenizer import Tokenizer
from .vocab import TokenizerError

TextTokenizer = Tokenizer | SentencePieceTokenizer
_KINDS: dict[str, Any] = {
    tokenizer.METADATA_KIND: Tokenizer,  # CLIP byte-level BPE
    sentencepiece.METADATA_KIND: SentencePieceTokenizer,  # SigLIP / SigLIP 2
}


def tokenizer_from_metadata(metadata: dict[str, Any]) -> TextTokenizer:
    """The tokenizer stored in a checkpoint's metadata (see ``to_metadata``), whatever its kind."""
    if not isinstance(metadata, dict) or "kind" not in metadata:
        raise TokenizerError("tokenizer metadata must be an object with a 'kind'")
    cls = _KINDS.get(str(metadata["kind"]))
    if cls is None:
        raise TokenizerError(f"unknown tokenizer kind {metadata['kind']!r} (known: {', '.join(sorted(_KINDS))})")
    return cls.from_metadata(metadata)


def is_tokenizer_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a vocabulary clipforge reads (CLIP BPE or SentencePiece files)."""
    p = Path(path)
    return p.is_dir() and (
        ((p / "vocab.json").is_file() and (p / "merges.txt").is_file())
        or (p / sentencepiece.SPIECE_FILE).is_file()
        or (p / sentencepiece.TOKENIZER_JSON).is_file()
    )


def tokenizer_from_dir(path: str | os.PathLike, *, context_length: int) -> TextTokenizer:
    """A Hugging Face tokenizer folder: CLIP's ``vocab.json`` + ``merges.txt``, SigLIP's
    ``spiece.model`` or SigLIP 2's ``tokenizer.json`` (with their ``tokenizer_config.json``)."""
    p = Path(path)
    if (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
        return Tokenizer.from_hf_files(p / "vocab.json", p / "merges.txt", context_length=context_length)
    if (p / sentencepiece.SPIECE_FILE).is_file() or (p / sentencepiece.TOKENIZER_JSON).is_file():
        return SentencePieceTokenizer.from_hf_dir(p, context_length=context_length)
    raise TokenizerError(
        f"{p}: no tokenizer files (expected vocab.json + merges.txt, {sentencepiece.SPIECE_FILE} or "
        f"{sentencepiece.TOKENIZER_JSON})"
    )
