"""CLIP's byte-level BPE tokenizer with OpenAI's exact semantics, fast.

ids are identical to open_clip's ``SimpleTokenizer`` (OpenAI's reference): same clean-up and
pre-tokenisation (``text.py``), same merges, same start/end tokens, truncation that keeps the end
token, zero padding. The speed comes from

* skipping ``ftfy`` where it provably changes nothing and an exact, cheaper ``ftfy.fix_text``
  elsewhere (``text.py``, ``ftfy_fast.py``): ftfy dominates the reference's cost;
* a cache from whole space-separated chunks (``"dog,"``, ``"it's"``) to their ids: most chunks of a
  caption were seen before, so a caption costs a lower-case, a split and a few dict look-ups;
* Hugging Face's Rust BPE (``tokenizers.models.BPE``, built with the tokenizer) for chunks never
  seen, one word at a time (no thread pool, so DataLoader workers may fork freely);
* specials, truncation and padding done with vectorised numpy into one preallocated array.

Both caches are bounded (~25 MB at most): when one is full it is emptied; ids never change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ftfy_fast import clear_cache as clear_ftfy_cache
from .text import ASCII_UNSAFE, clean_chunks, pretokenize
from .vocab import (
    EOT_TOKEN,
    SOT_TOKEN,
    WORD_END,
    Merge,
    TokenizerError,
    TokenizerInputError,
    byte_to_unicode,
    find_openai_vocab,
    merges_to_text,
    parse_merges,
    read_hf_files,
    read_openai_merges,
    tokens_from_merges,
    unicode_to_byte,
    write_hf_files,
)

METADATA_KIND = "clip_bpe"
_CHUNK_CACHE_SIZE = 1 << 17
_WORD_CACHE_SIZE = 1 << 16


class Tokenizer:
    """Byte-level BPE with OpenAI CLIP's semantics; ``eot_token_id`` is always the largest id.

    Build it with :meth:`from_openai_vocab`, :meth:`from_hf_files`, :meth:`from_merges`,
    :meth:`from_metadata`, :func:`train_bpe` or :func:`get_tokenizer`.
    """

    def __init__(self, merges: Sequence[Merge], *, context_length: int = 77) -> None:
        _check_context_length(context_length)
        self._merges: tuple[Merge, ...] = tuple((a, b) for a, b in merges)
        self._tokens = tokens_from_merges(self._merges)
        self.vocab_size: int = len(self._tokens)
        self.sot_token_id: int = self.vocab_size - 2
        self.eot_token_id: int = self.vocab_size - 1
        self.context_length: int = context_length
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._bpe = _rust_bpe(self._tokens, self._merges)
        self._byte_table = {i: c for i, c in enumerate(byte_to_unicode())}  # for str.translate
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self._chunk_cache: dict[str, tuple[int, ...]] = {}

    def clear_cache(self) -> None:
        """Forget cached chunk/word ids and the (process-wide) ftfy detector answers. Caches never
        change ids, only memory and speed."""
        self._word_cache.clear()
        self._chunk_cache.clear()
        clear_ftfy_cache()

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_merges(cls, merges: Sequence[Merge], *, context_length: int = 77) -> Tokenizer:
        return cls(merges, context_length=context_length)

    @classmethod
    def from_openai_vocab(
        cls, path: str | os.PathLike | None = None, *, context_length: int = 77
    ) -> Tokenizer:
        """OpenAI's vocabulary (49408 tokens) from ``path``, ``$CLIPFORGE_VOCAB`` or the cache dir."""
        return cls(read_openai_merges(find_openai_vocab(path)), context_length=context_length)

    @classmethod
    def from_hf_files(
        cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, *, context_length: int = 77
    ) -> Tokenizer:
        """Hugging Face's ``vocab.json`` + ``merges.txt``; the vocab must be the one the merges build."""
        return cls(read_hf_files(vocab_json, merges_txt), context_length=context_length)

    @classmethod
    def from_metadata(cls, metadata: dict[str, str | int]) -> Tokenizer:
        """Inverse of :meth:`to_metadata` (checkpoint metadata); unknown or missing keys are errors."""
        keys = {"kind", "context_length", "vocab_size", "merges"}
        if set(metadata) != keys:
            raise TokenizerError(f"tokenizer metadata must have keys {sorted(keys)}, got {sorted(metadata)}")
        if metadata["kind"] != METADATA_KIND:
            raise TokenizerError(f"tokenizer metadata kind {metadata['kind']!r} is not {METADATA_KIND!r}")
        merges = parse_merges(str(metadata["merges"]), source="tokenizer metadata")
        tok = cls(merges, context_length=int(metadata["context_length"]))
        if tok.vocab_size != int(metadata["vocab_size"]):
            raise TokenizerError(
                f"tokenizer metadata says vocab_size={metadata['vocab_size']} but its merges build "
                f"{tok.vocab_size}"
            )
        return tok

    def to_metadata(self) -> dict[str, str | int]:
        """Everything needed to rebuild this tokenizer, for self-describing checkpoints."""
        return {
            "kind": METADATA_KIND,
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "merges": merges_to_text(self._merges),
        }

    def save_hf(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``vocab.json`` + ``merges.txt`` (Hugging Face's format) into ``directory``."""
        return write_hf_files(directory, self._merges)

    @property
    def merges(self) -> tuple[Merge, ...]:
        return self._merges

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        """ids of ``text`` without start/end tokens and without truncation."""
        if not isinstance(text, str):
            raise TokenizerInputError(f"text must be a str, got {_describe(text)}")
        return list(chain.from_iterable(self._chunk_ids(c) for c in clean_chunks(text)))

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """(B, context_length) int64 token ids: start, ids, end, zero padding (truncated keeping end)."""
        return self.encode_batch(texts, context_length=context_length)[0]

    def encode_batch(
        self, texts: str | Sequence[str], *, context_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, ctx) as :meth:`__call__`, and each text's length (B,) counting start and end
        after truncation, so ``tokens[i, lengths[i] - 1]`` is the end token."""
        texts = _as_texts(texts)
        ctx = self.context_length if context_length is None else context_length
        _check_context_length(ctx)
        flat, counts = self._encode_flat(texts)
        return self._pack(flat, counts, ctx)

    def _encode_flat(self, texts: Sequence[str]) -> tuple[list[int], list[int]]:
        """All texts' ids concatenated, and the number of ids of each text."""
        cache, add = self._chunk_cache, self._add_chunk
        ascii_unsafe = ASCII_UNSAFE.search
        flat: list[int] = []
        extend = flat.extend
        counts = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TokenizerInputError(f"texts[{i}] must be a str, got {_describe(text)}")
            if text.isascii() and not ascii_unsafe(text):
                chunks = text.lower().split()  # == the full clean-up for such text
            else:
                chunks = clean_chunks(text)
            start = len(flat)
            try:
                for chunk in chunks:
                    extend(cache[chunk])
            except KeyError:  # some chunk never seen: fill the cache as we go
                del flat[start:]
                for chunk in chunks:
                    ids = cache.get(chunk)
                    extend(ids if ids is not None else add(chunk))
            counts.append(len(flat) - start)
        return flat, counts

    def _pack(self, flat: list[int], counts: list[int], ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_ids = np.asarray(counts, dtype=np.int64)  # (B,)
        batch = len(n_ids)
        ids = np.asarray(flat, dtype=np.int64)  # (N,) all texts' ids back to back
        kept = np.minimum(n_ids, ctx - 2)  # (B,) truncation keeps room for start and end
        if batch and (kept < n_ids).any():
            starts = np.cumsum(n_ids) - n_ids  # (B,) where each text begins in ids
            kept_starts = np.cumsum(kept) - kept
            ids = ids[np.arange(kept_starts[-1] + kept[-1]) + np.repeat(starts - kept_starts, kept)]
        tokens = np.zeros((batch, ctx), dtype=np.int64)  # (B, ctx)
        positions = np.arange(ctx)
        tokens[(positions >= 1) & (positions <= kept[:, None])] = ids  # row-major order == ids order
        tokens[:, 0] = self.sot_token_id
        tokens[np.arange(batch), kept + 1] = self.eot_token_id
        return torch.from_numpy(tokens), torch.from_numpy(kept + 2)

    def _chunk_ids(self, chunk: str) -> tuple[int, ...]:
        ids = self._chunk_cache.get(chunk)
        return ids if ids is not None else self._add_chunk(chunk)

    def _add_chunk(self, chunk: str) -> tuple[int, ...]:
        ids: tuple[int, ...] = ()
        for word in pretokenize(chunk):
            word_ids = self._word_cache.get(word)
            ids += word_ids if word_ids is not None else self._add_word(word)
        if len(self._chunk_cache) >= _CHUNK_CACHE_SIZE:
            self._chunk_cache.clear()
        self._chunk_cache[chunk] = ids
        return ids

    def _add_word(self, word: str) -> tuple[int, ...]:
        if word == SOT_TOKEN or word == EOT_TOKEN:  # the text spelt a special token: OpenAI maps it
            ids = (self.sot_token_id if word == SOT_TOKEN else self.eot_token_id,)
        else:
            # Words hold no whitespace, and printable ASCII bytes map to themselves.
            symbols = word if word.isascii() and word.isprintable() else self._byte_symbols(word)
            ids = tuple([token.id for token in self._bpe.tokenize(symbols)])
        if len(self._word_cache) >= _WORD_CACHE_SIZE:
            self._word_cache.clear()
        self._word_cache[word] = ids
        return ids

    def _byte_symbols(self, word: str) -> str:
        return word.encode("utf-8").decode("latin-1").translate(self._byte_table)

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of ``ids`` as OpenAI decodes it: bytes joined, ``</w>`` -> space, bad UTF-8 replaced.
        Special and padding ids are decoded too (as their token text); strip them first if unwanted."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        tokens, n = self._tokens, self.vocab_size
        pieces = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise TokenizerError(f"token id {i} is outside the vocabulary (size {n})")
            pieces.append(tokens[i])
        to_byte = unicode_to_byte()
        data = bytes(to_byte[c] for c in "".join(pieces))
        return data.decode("utf-8", errors="replace").replace(WORD_END, " ")

    # ------------------------------------------------------------------ misc

    def __getstate__(self) -> dict[str, Any]:  # pickle without caches or the Rust model
        state = dict(self.__dict__)
        for key in ("_bpe", "_byte_table", "_word_cache", "_chunk_cache"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"


def _describe(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} (decode it first, e.g. value.decode('utf-8'))"
    return "None" if value is None else type(value).__name__


def _as_texts(texts: Any) -> Sequence[str]:
    """One str, or a list/tuple (any non-mapping sequence) of str; anything else a clear TypeError."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
        raise TokenizerInputError(f"texts must be a str or a list of str, got {_describe(texts)}")
    return texts


def _rust_bpe(tokens: list[str], merges: Sequence[Merge]) -> Any:
    """Hugging Face's Rust BPE over our vocabulary: byte-mapped word -> tokens, ``</w>`` on the last."""
    try:
        from tokenizers import models
    except ImportError as err:  # a core dependency, but say what to do
        raise ImportError("clipforge's tokenizer needs `pip install tokenizers`") from err
    vocab = {t: i for i, t in enumerate(tokens)}
    return models.BPE(
        vocab=vocab, merges=list(merges), end_of_word_suffix=WORD_END, continuing_subword_prefix=""
    )


def _check_context_length(ctx: int) -> None:
    if not isinstance(ctx, int) or isinstance(ctx, bool) or ctx < 2:
        raise TokenizerError(f"context_length must be an int >= 2 (start + end tokens), got {ctx!r}")
