"""One entry point for every tokenizer kind: by name or path (:func:`get_tokenizer`), from checkpoint
metadata (its ``kind`` field says which class), or from a tokenizer folder in Hugging Face's layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import sentencepiece, tokenizer
from .languages import no_languages
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


def get_tokenizer(
    name_or_path: str | os.PathLike | None = "openai", *, context_length: int = 77
) -> TextTokenizer:
    """``"openai"`` (or None): OpenAI's vocabulary; a directory: Hugging Face ``vocab.json`` +
    ``merges.txt``, or SigLIP's ``spiece.model`` / ``tokenizer.json`` (:func:`tokenizer_from_dir`);
    a ``.gz`` file: a vocabulary in OpenAI's format."""
    if name_or_path is None or str(name_or_path) == "openai":
        return Tokenizer.from_openai_vocab(context_length=context_length)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return tokenizer_from_dir(path, context_length=context_length)
    if path.is_file() and path.name.endswith(".gz"):
        return Tokenizer.from_openai_vocab(path, context_length=context_length)
    raise TokenizerError(
        f"unknown tokenizer {str(name_or_path)!r}: expected 'openai', a tokenizer directory (vocab.json + "
        "merges.txt, spiece.model or tokenizer.json), or an OpenAI-format .txt.gz vocabulary"
    )


def with_language(tokenizer: TextTokenizer, language: str | None) -> TextTokenizer:
    """``tokenizer`` for texts in ``language``, a source-language code such as ``"deu_Latn"``
    (NLLB-CLIP's tokenizers start every text with it; see :mod:`.languages`); ``None``: ``tokenizer``
    itself. The given tokenizer is not changed (it may be shared). A tokenizer without language codes
    (CLIP's BPE, SigLIP's, XLM-R's: the language makes no difference to them) or an unknown code is a
    :class:`TokenizerError` naming ``language``. Wrappers that forward attributes (a checkpoint's lazy
    tokenizer) work too."""
    if language is None:
        return tokenizer
    method = getattr(tokenizer, "with_language", None)
    if method is None:
        raise no_languages(language)
    return method(language)
