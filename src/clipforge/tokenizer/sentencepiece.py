"""SentencePiece vocabularies: SigLIP's (``spiece.model``, Unigram), SigLIP 2's (Gemma's, as a
``tokenizer.json`` BPE with byte fallback), XLM-R's (XLM-V's for MetaCLIP 2: a ``tokenizer.json``
Unigram, ``<s>`` text ``</s>`` padded with ``<pad>``) and NLLB's (NLLB-CLIP: ``<lang>`` text ``</s>``,
the start token a source-language code, :meth:`SentencePieceTokenizer.with_language`), with the
reference text rules.

The rules are data, stored with the vocabulary in checkpoint metadata (``kind="sentencepiece"``):

* ``clean``: ``"canonicalize"`` (SigLIP / big_vision: lower-case, drop ASCII punctuation, collapse
  whitespace, strip) as transformers' ``SiglipTokenizer``; ``"lower_ascii"`` (SigLIP 2 as big_vision
  prepares text for its released checkpoints: ``lower`` = TensorFlow's ``tf.strings.lower``, which
  lower-cases A-Z only); ``"lower"`` (every cased character, as transformers' ``Siglip2Tokenizer``);
  ``"whitespace"`` (open_clip's ``HFTokenizer`` before the XLM-R tokenizer of its ``xlm-roberta-*``
  models: ftfy, ``html.unescape`` twice, whitespace collapsed and stripped); ``"none"``.
* ``add_bos`` / ``add_eos``: the special ids around each text (SigLIP: end only; SigLIP 2: end only,
  big_vision's ``tok(model="gemma", bos="no", eos="sticky")``, whatever the Hub's
  ``tokenizer_config.json`` says; see docs/interop.md for where transformers differs).
* every text is padded with ``pad_id`` to the full context (``padding="max_length"``, right side):
  SigLIP's text tower reads the last position, so padding is part of the input. Texts that are too
  long are cut so that the specials still fit (``truncation=True``).

The engine is ``sentencepiece`` for ``spiece.model`` files (an optional dependency) and Hugging
Face ``tokenizers`` for ``tokenizer.json`` files; ids equal the reference tokenizers' exactly
(tests/assets/sentencepiece). Lone surrogates, which the references cannot encode, become U+FFFD.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, normalizers

from .languages import check_language, language_codes, no_languages
from .text import clean_whitespace
from .vocab import TokenizerError, TokenizerInputError

METADATA_KIND = "sentencepiece"
Clean = Literal["canonicalize", "lower_ascii", "lower", "whitespace", "none"]
Engine = Literal["sentencepiece", "tokenizers"]
CLEAN_MODES = ("canonicalize", "lower_ascii", "lower", "whitespace", "none")
SPIECE_FILE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
_SPIECE_UNDERLINE = "\u2581"
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# transformers' SiglipTokenizer class (open_clip's timm/ SigLIP repos name T5's, same vocabulary and
# read here with SigLIP's rules), and the Gemma classes that SigLIP 2 repositories name.
_SIGLIP_CLASSES = ("SiglipTokenizer", "T5Tokenizer", "T5TokenizerFast")
_GEMMA_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer")
# XLM-R's (and XLM-V's, MetaCLIP 2's) SentencePiece Unigram as tokenizer.json: <s>=0 <pad>=1 </s>=2 <unk>=3.
_XLMR_CLASSES = ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast")
# NLLB's (NLLB-CLIP): a tokenizer.json with the language codes as special tokens; transformers' default
# (non-legacy) layout is <src_lang> text </s>, right-padded with <pad> (1).
_NLLB_CLASSES = ("NllbTokenizer", "NllbTokenizerFast")
DEFAULT_NLLB_LANGUAGE = "eng_Latn"  # transformers' (and open_clip's) src_lang when none is set
_METADATA_KEYS = {
    "kind", "engine", "model", "context_length", "vocab_size", "clean", "add_bos", "add_eos",
    "bos_id", "eos_id", "pad_id", "unk", "specials",
}


def _require_sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError as err:
        raise ImportError(
            "SigLIP's spiece.model vocabulary needs sentencepiece: pip install 'clipforge[siglip]'"
        ) from err
    return sentencepiece


class SentencePieceTokenizer:
    """A SentencePiece vocabulary with SigLIP's text rules; the same call interface as
    :class:`~clipforge.tokenizer.Tokenizer` (``tok(texts) -> (B, context_length)`` ids)."""

    def __init__(
        self,
        model: bytes,
        *,
        engine: Engine,
        context_length: int = 64,
        clean: Clean = "canonicalize",
        add_bos: bool = False,
        add_eos: bool = True,
        bos_id: int | None = None,
        eos_id: int,
        pad_id: int,
        unk: str = "<unk>",
        specials: Sequence[str] = (),
    ) -> None:
        if engine not in ("sentencepiece", "tokenizers"):
            raise TokenizerError(f"engine must be 'sentencepiece' or 'tokenizers', got {engine!r}")
        if clean not in CLEAN_MODES:
            raise TokenizerError(f"clean must be one of {', '.join(CLEAN_MODES)}, got {clean!r}")
        if add_bos and bos_id is None:
            raise TokenizerError("add_bos needs a bos_id")
        n_special = int(add_bos) + int(add_eos)
        if not isinstance(context_length, int) or context_length < max(n_special, 1):
            raise TokenizerError(f"context_length must be an int >= {max(n_special, 1)}, got {context_length!r}")
        self._model = bytes(model)
        self.engine: Engine = engine
        self.context_length = context_length
        self.clean: Clean = clean
        self.add_bos, self.add_eos = bool(add_bos), bool(add_eos)
        self.bos_id, self.eos_id, self.pad_id = bos_id, int(eos_id), int(pad_id)
        self.unk = unk
        self.specials = tuple(specials)
        self._load()
        for name, i in (("eos_id", self.eos_id), ("pad_id", self.pad_id), ("bos_id", self.bos_id)):
            if i is not None and not 0 <= i < self.vocab_size:
                raise TokenizerError(f"{name} {i} is outside the vocabulary (size {self.vocab_size})")

    def _load(self) -> None:
        if self.engine == "sentencepiece":
            spm = _require_sentencepiece()
            self._sp = spm.SentencePieceProcessor()
            try:
                self._sp.LoadFromSerializedProto(self._model)
            except (RuntimeError, OSError) as e:
                raise TokenizerError(f"not a SentencePiece model: {e}") from e
            self.vocab_size: int = self._sp.get_piece_size()
            self._unk_len = len(self._sp.encode(self.unk, out_type=str))
        else:
            try:
                self._tk = RustTokenizer.from_str(self._model.decode("utf-8"))
            except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
                raise TokenizerError(f"not a tokenizers tokenizer.json: {e}") from e
            self._tk.no_truncation()
            self._tk.no_padding()
            self._exact_unigram_scores()
            self.vocab_size = self._tk.get_vocab_size(with_added_tokens=True)
        added = self._tk.get_added_tokens_decoder() if self.engine == "tokenizers" else {}
        self._languages = language_codes(added[i].content for i in sorted(added))  # NLLB's, else none
        self._lowercase = normalizers.Lowercase()
        self._special_split = (
            re.compile(r"\s*(" + "|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True)) + r")\s*")
            if self.specials and self.engine == "sentencepiece"
            else None
        )

    def _exact_unigram_scores(self) -> None:
        """A Unigram's piece scores as Python parses them (exactly), as transformers builds its
        tokenizers: the Rust JSON reader may be one ulp off, which flips ties between equally scored
        segmentations (long runs of one character)."""
        model = json.loads(self._model).get("model") or {}
        if model.get("type") == "Unigram":
            vocab = [(str(piece), float(score)) for piece, score in model["vocab"]]
            self._tk.model = models.Unigram(vocab, model.get("unk_id"), bool(model.get("byte_fallback", False)))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_hf_dir(cls, directory: str | os.PathLike, *, context_length: int | None = None) -> SentencePieceTokenizer:
        """A SigLIP (``spiece.model``) or SigLIP 2 / Gemma (``tokenizer.json``) tokenizer folder, as
        published on the Hub, read with its ``tokenizer_config.json`` (class, specials, length)."""
        folder = Path(directory)
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        cls_name = str(config.get("tokenizer_class") or "")
        ctx = context_length or _max_length(config) or 64
        if cls_name in _SIGLIP_CLASSES or (not cls_name and (folder / SPIECE_FILE).is_file()):
            if not (folder / SPIECE_FILE).is_file():
                raise TokenizerError(f"{folder}: a SiglipTokenizer folder without {SPIECE_FILE}")
            eos, pad, unk = (_token(config, k, d) for k, d in (("eos_token", "</s>"), ("pad_token", "</s>"),
                                                                ("unk_token", "<unk>")))
            spm = _require_sentencepiece()
            model = (folder / SPIECE_FILE).read_bytes()
            sp = spm.SentencePieceProcessor()
            sp.LoadFromSerializedProto(model)
            return cls(
                model,
                engine="sentencepiece",
                context_length=ctx,
                clean="canonicalize" if config.get("do_lower_case", True) else "none",
                add_eos=True,
                eos_id=_piece_id(sp.piece_to_id(eos), sp.id_to_piece, eos, folder),
                pad_id=_piece_id(sp.piece_to_id(pad), sp.id_to_piece, pad, folder),
                unk=unk,
                specials=tuple(dict.fromkeys((eos, unk, pad))),
            )
        if cls_name in _GEMMA_CLASSES:
            defaults = (("bos_token", "<bos>"), ("eos_token", "<eos>"), ("pad_token", "<pad>"))
            model, ids = _tokenizer_json(folder, cls_name, {k: _token(config, k, d) for k, d in defaults})
            # The Hub's SigLIP 2 folders name GemmaTokenizer: read them with big_vision's recipe for the
            # released weights, lower(ASCII)|tok(bos="no", eos="sticky"), right-padded with <pad>. A
            # Siglip2Tokenizer folder (clipforge writes one for clean="lower") keeps transformers' rules.
            transformers_rules = cls_name == "Siglip2Tokenizer"
            return cls(
                model,
                engine="tokenizers",
                context_length=ctx,
                clean="lower" if transformers_rules else "lower_ascii",
                add_bos=bool(config.get("add_bos_token", False)) if transformers_rules else False,
                add_eos=bool(config.get("add_eos_token", False)) if transformers_rules else True,
                bos_id=ids["bos_token"],
                eos_id=ids["eos_token"],
                pad_id=ids["pad_token"],
            )
        if cls_name in _XLMR_CLASSES:  # transformers' XLMRobertaTokenizer: <s> text </s>, right-padded with <pad>
            defaults = (("bos_token", "<s>"), ("eos_token", "</s>"), ("pad_token", "<pad>"))
            model, ids = _tokenizer_json(folder, cls_name, {k: _token(config, k, d) for k, d in defaults})
            return cls(
                model, engine="tokenizers", context_length=ctx, clean="none", add_bos=True, add_eos=True,
                bos_id=ids["bos_token"], eos_id=ids["eos_token"], pad_id=ids["pad_token"],
                unk=_token(config, "unk_token", "<unk>"),
            )  # fmt: skip
        if cls_name in _NLLB_CLASSES:  # transformers' NllbTokenizer: <src_lang> text </s>, right-padded with <pad>
            if config.get("legacy_behaviour"):
                raise TokenizerError(f"{folder}: NLLB's legacy layout (text </s> <lang>) is not supported")
            model, ids = _tokenizer_json(folder, cls_name, {
                "src_lang": str(config.get("src_lang") or DEFAULT_NLLB_LANGUAGE),
                "eos_token": _token(config, "eos_token", "</s>"),
                "pad_token": _token(config, "pad_token", "<pad>"),
            })  # fmt: skip
            return cls(
                model, engine="tokenizers", context_length=ctx, clean="none", add_bos=True, add_eos=True,
                bos_id=ids["src_lang"], eos_id=ids["eos_token"], pad_id=ids["pad_token"],
                unk=_token(config, "unk_token", "<unk>"),
            )  # fmt: skip
        raise TokenizerError(
            f"{folder}: tokenizer_class {cls_name or '(none)'!r} is not a SentencePiece tokenizer clipforge reads "
            f"(known: {', '.join(_SIGLIP_CLASSES + _GEMMA_CLASSES + _XLMR_CLASSES + _NLLB_CLASSES)})"
        )

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> SentencePieceTokenizer:
        """Inverse of :meth:`to_metadata`; unknown or missing keys are errors."""
        if set(metadata) != _METADATA_KEYS:
            raise TokenizerError(
                f"sentencepiece tokenizer metadata must have keys {sorted(_METADATA_KEYS)}, got {sorted(metadata)}"
            )
        if metadata["kind"] != METADATA_KIND:
            raise TokenizerError(f"tokenizer metadata kind {metadata['kind']!r} is not {METADATA_KIND!r}")
        try:
            model = gzip.decompress(base64.b64decode(metadata["model"]))
        except (ValueError, OSError) as e:
            raise TokenizerError(f"tokenizer metadata: the vocabulary is not gzip+base64 ({e})") from e
        tok = cls(
            model,
            engine=metadata["engine"],
            context_length=int(metadata["context_length"]),
            clean=metadata["clean"],
            add_bos=metadata["add_bos"],
            add_eos=metadata["add_eos"],
            bos_id=metadata["bos_id"],
            eos_id=metadata["eos_id"],
            pad_id=metadata["pad_id"],
            unk=metadata["unk"],
            specials=metadata["specials"],
        )
        if tok.vocab_size != int(metadata["vocab_size"]):
            raise TokenizerError(
                f"tokenizer metadata says vocab_size={metadata['vocab_size']} but its model has {tok.vocab_size}"
            )
        return tok

    def to_metadata(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer, for self-describing checkpoints."""
        return {
            "kind": METADATA_KIND,
            "engine": self.engine,
            "model": base64.b64encode(gzip.compress(self._model, mtime=0)).decode("ascii"),
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "clean": self.clean,
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "unk": self.unk,
            "specials": list(self.specials),
        }

    def save_hf(self, directory: str | os.PathLike) -> tuple[Path, ...]:
        """The vocabulary and a ``tokenizer_config.json`` that transformers' ``AutoTokenizer`` reads
        with the same rules (``SiglipTokenizer`` or ``Siglip2Tokenizer``)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.engine == "sentencepiece":
            vocab = out / SPIECE_FILE
            config: dict[str, Any] = {
                "tokenizer_class": "SiglipTokenizer",
                "eos_token": self._piece(self.eos_id),
                "pad_token": self._piece(self.pad_id),
                "unk_token": self.unk,
                "do_lower_case": self.clean == "canonicalize",
            }
        elif self.add_bos and self.clean in ("none", "whitespace") and self._piece(self.bos_id or 0) != "<s>":
            vocab = out / TOKENIZER_JSON  # NLLB's rules: the start token is the source language's code
            config = {
                "tokenizer_class": "NllbTokenizer",
                "src_lang": self._piece(self.bos_id or 0),
                "eos_token": self._piece(self.eos_id),
                "pad_token": self._piece(self.pad_id),
                "unk_token": self.unk,
                "legacy_behaviour": False,
                "padding_side": "right",
            }
        elif self.add_bos and self.clean in ("none", "whitespace"):  # XLM-R's rules (open_clip cleans first)
            vocab = out / TOKENIZER_JSON
            config = {
                "tokenizer_class": "XLMRobertaTokenizer",
                "bos_token": self._piece(self.bos_id) if self.bos_id is not None else None,
                "eos_token": self._piece(self.eos_id),
                "pad_token": self._piece(self.pad_id),
                "unk_token": self.unk,
                "padding_side": "right",
            }
        else:
            vocab = out / TOKENIZER_JSON
            config = {
                "tokenizer_class": "Siglip2Tokenizer" if self.clean == "lower" else "GemmaTokenizer",
                "bos_token": self._piece(self.bos_id) if self.bos_id is not None else None,
                "eos_token": self._piece(self.eos_id),
                "pad_token": self._piece(self.pad_id),
                "add_bos_token": self.add_bos,
                "add_eos_token": self.add_eos,
                "padding_side": "right",
            }
        config.update(model_max_length=self.context_length, processor_class="SiglipProcessor")
        vocab.write_bytes(self._model)
        config_file = out / "tokenizer_config.json"
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return vocab, config_file

    # ------------------------------------------------------------------ ids of special roles

    @property
    def eot_token_id(self) -> int:
        return self.eos_id

    @property
    def sot_token_id(self) -> int | None:
        return self.bos_id

    def _piece(self, i: int) -> str:
        return self._sp.id_to_piece(i) if self.engine == "sentencepiece" else self._tk.id_to_token(i)

    # ------------------------------------------------------------------ source language (NLLB)

    @property
    def languages(self) -> tuple[str, ...]:
        """The language codes of the vocabulary (its added tokens shaped ``xxx_Xxxx``: NLLB's
        ``eng_Latn``, ``deu_Latn`` ...), in id order; empty for other vocabularies."""
        return self._languages

    @property
    def language(self) -> str | None:
        """The language code every text starts with (NLLB's ``src_lang``); None for a tokenizer whose
        start token is not a language code (SigLIP, XLM-R)."""
        if not self.add_bos or self.bos_id is None or not self._languages:
            return None
        piece = self._piece(self.bos_id)
        return piece if piece in self._languages else None

    def with_language(self, language: str) -> SentencePieceTokenizer:
        """This tokenizer for texts in ``language`` (NLLB-CLIP: ``"deu_Latn"`` starts every text with
        ``deu_Latn``, as transformers' ``NllbTokenizer(src_lang="deu_Latn")``). A new tokenizer sharing
        the vocabulary (nothing is re-read); ``self`` is unchanged. A tokenizer without language codes,
        or a code the vocabulary does not have, is a :class:`TokenizerError`."""
        if self.language is None:
            raise no_languages(language)
        code = check_language(language, self._languages)
        new = object.__new__(type(self))  # not copy.copy: that pickles, re-reading the vocabulary
        new.__dict__.update(self.__dict__)  # shares the engine, which encoding never changes
        new.bos_id = self._tk.token_to_id(code)
        return new

    # ------------------------------------------------------------------ encoding

    def _clean(self, text: str) -> str:
        if self.clean == "none":
            return text
        if self.clean == "lower_ascii":  # big_vision's tf.strings.lower: A-Z only
            return text.translate(_ASCII_LOWER)
        if self.clean == "lower":  # per character, as the tokenizers normalizer (no final-sigma rule)
            return self._lowercase.normalize_str(text)
        if self.clean == "whitespace":
            return clean_whitespace(text)
        text = text.lower()  # Python's, as SiglipTokenizer
        text = text.translate(_PUNCTUATION)
        return _WHITESPACE.sub(" ", text).strip()

    def encode(self, text: str) -> list[int]:
        """ids of ``text`` without special tokens, padding or truncation."""
        if not isinstance(text, str):
            raise TokenizerInputError(f"text must be a str, got {type(text).__name__}")
        if not text.isascii():
            text = _SURROGATE.sub("\ufffd", text)
        if self.engine == "tokenizers":
            return self._tk.encode(self._clean(text), add_special_tokens=False).ids
        return [self._sp.piece_to_id(p) for p in self._sp_pieces(text)]

    def _sp_pieces(self, text: str) -> list[str]:
        """SiglipTokenizer's pieces: specials split out first, each remaining chunk cleaned and encoded
        after an ``unk`` prefix that is then dropped (so only the first chunk starts a word)."""
        text = _SPIECE_UNDERLINE + text.replace(_SPIECE_UNDERLINE, " ")
        parts = self._special_split.split(text) if self._special_split is not None else [text]
        pieces: list[str] = []
        for i, part in enumerate(parts):
            if i % 2:  # a special token's text (the split keeps the captured separators)
                pieces.append(part)
            elif part:
                encoded = self._sp.encode(self.unk + self._clean(part), out_type=str)
                pieces.extend(encoded[self._unk_len :] if len(encoded) >= self._unk_len else encoded)
        if len(pieces) > 1 and pieces[0] == _SPIECE_UNDERLINE and pieces[1] in self.specials:
            pieces = pieces[1:]
        return pieces

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """(B, context_length) int64 ids: [bos] ids [eos], truncated to fit, right-padded with pad_id."""
        return self.encode_batch(texts, context_length=context_length)[0]

    def encode_batch(
        self, texts: str | Sequence[str], *, context_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, ctx) as :meth:`__call__`, and each text's length (B,) with its specials."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
            raise TokenizerInputError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        ctx = self.context_length if context_length is None else context_length
        head = [self.bos_id] if self.add_bos else []
        tail = [self.eos_id] if self.add_eos else []
        room = ctx - len(head) - len(tail)
        if room < 0:
            raise TokenizerError(f"context_length {ctx} cannot hold the special tokens")
        tokens = np.full((len(texts), ctx), self.pad_id, dtype=np.int64)  # (B, ctx)
        lengths = np.zeros(len(texts), dtype=np.int64)  # (B,)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TokenizerInputError(f"texts[{i}] must be a str, got {type(text).__name__}")
            row = head + self.encode(text)[:room] + tail
            tokens[i, : len(row)] = row
            lengths[i] = len(row)
        return torch.from_numpy(tokens), torch.from_numpy(lengths)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of ``ids`` (special and padding ids dropped)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        skip = {self.pad_id, self.eos_id, self.bos_id}
        keep = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            if i not in skip:
                keep.append(i)
        if self.engine == "sentencepiece":
            return self._sp.decode(keep)
        return self._tk.decode(keep, skip_special_tokens=False)

    def with_clean(self, clean: Clean) -> SentencePieceTokenizer:
        """The same vocabulary and special tokens with the text rule ``clean``."""
        return type(self)(
            self._model, engine=self.engine, context_length=self.context_length, clean=clean, add_bos=self.add_bos,
            add_eos=self.add_eos, bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id, unk=self.unk,
            specials=self.specials,
        )  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:  # pickle without the native engines
        return {k: v for k, v in self.__dict__.items() if k not in ("_sp", "_tk", "_special_split", "_lowercase")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()

    def __repr__(self) -> str:
        return (
            f"SentencePieceTokenizer(engine={self.engine!r}, vocab_size={self.vocab_size}, "
            f"context_length={self.context_length}, clean={self.clean!r})"
        )


def _token(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if isinstance(value, dict):  # serialised AddedToken
        value = value.get("content", default)
    return str(value) if value is not None else default


def _tokenizer_json(folder: Path, cls_name: str, tokens: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    """The bytes of ``folder``'s ``tokenizer.json`` and the ids of ``tokens`` (role -> token) in it;
    a missing file or token is a :class:`TokenizerError`."""
    if not (folder / TOKENIZER_JSON).is_file():
        raise TokenizerError(f"{folder}: a {cls_name} folder without {TOKENIZER_JSON}")
    model = (folder / TOKENIZER_JSON).read_bytes()
    tk = RustTokenizer.from_str(model.decode("utf-8"))
    ids = {role: tk.token_to_id(token) for role, token in tokens.items()}
    missing = [role for role, i in ids.items() if i is None]
    if missing:
        raise TokenizerError(f"{folder}: {', '.join(missing)} not in {TOKENIZER_JSON}")
    return model, ids  # type: ignore[return-value]  # no None left


def _piece_id(i: int, id_to_piece: Any, piece: str, folder: Path) -> int:
    if id_to_piece(i) != piece:
        raise TokenizerError(f"{folder}: special token {piece!r} is not in {SPIECE_FILE}")
    return i


def _max_length(config: dict[str, Any]) -> int | None:
    n = config.get("model_max_length")
    return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else None
