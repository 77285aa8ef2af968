"""The CLIP BPE vocabulary: byte alphabet, merge lists and the files they come in.

A CLIP vocabulary is fully determined by its ordered list of merges:

    ids 0..255          the 256 byte characters (GPT-2's printable byte -> unicode table)
    ids 256..511        the same characters followed by the word-end marker ``</w>``
    ids 512..512+M-1    one token per merge, the two parts joined, in merge order
    id  512+M           ``<start_of_text>``
    id  512+M+1         ``<end_of_text>``  (always the LARGEST id)

The text tower reads its features at ``tokens.argmax(-1)``, which is the end-of-text position only
because end-of-text is the largest id: every vocabulary built here keeps that invariant.

Three file formats are read: OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (one header line, then
merges, of which the first 49152 - 256 - 2 = 48894 are used), Hugging Face's ``vocab.json`` +
``merges.txt``, and a plain merges text (``"a b"`` per line) as stored in checkpoint metadata.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..fileio import atomic_write_text


class TokenizerError(ValueError):
    """A tokenizer file, vocabulary or input that cannot be used."""


class TokenizerInputError(TokenizerError, TypeError):
    """Texts of the wrong type (None, bytes, a dict, a number ...): a TypeError and a TokenizerError."""


WORD_END = "</w>"
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
# Hugging Face names the same two tokens differently; both spellings are accepted when reading.
HF_SOT_TOKEN = "<|startoftext|>"
HF_EOT_TOKEN = "<|endoftext|>"

OPENAI_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
OPENAI_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
OPENAI_NUM_MERGES = 49152 - 256 - 2  # = 48894; OpenAI's released models use exactly these
OPENAI_VOCAB_SIZE = 512 + OPENAI_NUM_MERGES + 2  # = 49408 tokens

Merge = tuple[str, str]


def _printable_bytes() -> list[int]:
    return [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]


def _byte_order() -> list[int]:
    """Bytes in OpenAI's vocabulary order: the printable ones first, then the rest ascending."""
    printable = _printable_bytes()
    return printable + [b for b in range(256) if b not in printable]


@functools.cache
def byte_to_unicode() -> tuple[str, ...]:
    """GPT-2's reversible table: byte value -> a printable unicode character (index = byte).
    Printable bytes map to themselves, the others to chr(256), chr(257), ... in byte order."""
    n_printable = len(_printable_bytes())
    table = {
        b: chr(b) if i < n_printable else chr(256 + i - n_printable) for i, b in enumerate(_byte_order())
    }
    return tuple(table[b] for b in range(256))


@functools.cache
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in enumerate(byte_to_unicode())}


def base_tokens() -> list[str]:
    """The 512 tokens every CLIP vocabulary starts with (bytes, then bytes + ``</w>``), in OpenAI's
    order: ids 0..187 are the printable bytes, 188..255 the others."""
    table = byte_to_unicode()
    chars = [table[b] for b in _byte_order()]
    return chars + [c + WORD_END for c in chars]


def tokens_from_merges(merges: Sequence[Merge], *, source: str = "merges") -> list[str]:
    """The full id -> token list for ``merges``; checks every merge joins two known tokens into a
    new one (a part with a space, an empty part or a non-string is never a known token)."""
    tokens = base_tokens()
    known = set(tokens)
    for rank, merge in enumerate(merges):
        try:
            first, second = merge
            joined = first + second
            valid = first in known and second in known and joined not in known
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise TokenizerError(f"{source}: merge {rank} {merge!r}: {_merge_problem(merge, known)}")
        known.add(joined)
        tokens.append(joined)
    return tokens + [SOT_TOKEN, EOT_TOKEN]


def _merge_problem(merge: object, known: set[str]) -> str:
    if not (isinstance(merge, tuple | list) and len(merge) == 2 and all(isinstance(p, str) for p in merge)):
        return "is not a pair of strings"
    unknown = [p for p in merge if p not in known]
    if unknown:
        return f"{unknown[0]!r} is not a known token"
    return f"rebuilds existing token {merge[0] + merge[1]!r}"


def parse_merges(text: str, *, source: str = "merges") -> list[Merge]:
    """Merges from ``"a b"`` lines; a leading ``#version`` line and trailing blank lines are skipped."""
    lines = text.split("\n")
    first_line = 1
    if lines and lines[0].startswith("#version"):
        lines, first_line = lines[1:], 2
    while lines and not lines[-1].strip():
        lines.pop()
    return _parse_lines(lines, source=source, first_line=first_line)


def _parse_lines(lines: Sequence[str], *, source: str, first_line: int) -> list[Merge]:
    merges = []
    for lineno, line in enumerate(lines, start=first_line):
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"{source}: line {lineno} is not a merge 'a b': {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def merges_to_text(merges: Sequence[Merge]) -> str:
    return "\n".join(f"{a} {b}" for a, b in merges)


# --------------------------------------------------------------------------- OpenAI's file


def packaged_openai_vocab() -> Path:
    """OpenAI's vocabulary as shipped inside clipforge (MIT licence: ``LICENSE-openai-vocab.txt``)."""
    return Path(__file__).with_name(OPENAI_VOCAB_FILE)


def find_openai_vocab(path: str | os.PathLike | None = None) -> Path:
    """Locate OpenAI's vocabulary: ``path``, else ``$CLIPFORGE_VOCAB``, else the packaged copy."""
    if path is not None:
        candidate = Path(path).expanduser()
    elif os.environ.get("CLIPFORGE_VOCAB"):
        candidate = Path(os.environ["CLIPFORGE_VOCAB"]).expanduser()
    else:
        candidate = packaged_openai_vocab()
    if candidate.is_file():
        return candidate
    raise TokenizerError(
        f"OpenAI's BPE vocabulary not found at {candidate}. "
        + (
            "It ships inside clipforge: reinstall the package (`pip install --force-reinstall clipforge`)."
            if path is None and not os.environ.get("CLIPFORGE_VOCAB")
            else "Point the path (or $CLIPFORGE_VOCAB) at an existing bpe_simple_vocab_16e6.txt.gz."
        )
    )


def read_openai_merges(path: str | os.PathLike) -> list[Merge]:
    """The 48894 merges OpenAI's CLIP uses, from ``bpe_simple_vocab_16e6.txt.gz``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerError(f"{path}: cannot read the BPE vocabulary: {err}") from err
    lines = text.split("\n", OPENAI_NUM_MERGES + 1)[1 : OPENAI_NUM_MERGES + 1]  # line 1 is a header
    if len(lines) < OPENAI_NUM_MERGES or not lines[-1].strip():
        have = sum(1 for line in lines if line.strip())
        raise TokenizerError(f"{path}: has {have} merges, CLIP needs {OPENAI_NUM_MERGES}")
    return _parse_lines(lines, source=str(path), first_line=2)


# --------------------------------------------------------------------------- Hugging Face files


def read_hf_files(vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> list[Merge]:
    """Merges from ``merges.txt``, after checking ``vocab.json`` is exactly the vocabulary they build."""
    merges_path, vocab_path = Path(merges_txt), Path(vocab_json)
    try:
        merges = parse_merges(merges_path.read_text(encoding="utf-8"), source=str(merges_path))
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerError(f"cannot read Hugging Face tokenizer files: {err}") from err
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{vocab_path}: expected a JSON object token -> id")
    expected = tokens_from_merges(merges, source=str(merges_path))
    aliases = {HF_SOT_TOKEN: SOT_TOKEN, HF_EOT_TOKEN: EOT_TOKEN}
    if len(vocab) != len(expected):
        raise TokenizerError(
            f"{vocab_path}: has {len(vocab)} tokens but {merges_path} builds {len(expected)} "
            f"(512 byte tokens + {len(merges)} merges + 2 special tokens)"
        )
    for token, idx in vocab.items():
        name = aliases.get(token, token)
        if not isinstance(idx, int) or not 0 <= idx < len(expected) or expected[idx] != name:
            want = expected.index(name) if name in expected else "none"
            raise TokenizerError(
                f"{vocab_path}: token {token!r} has id {idx}, but the vocabulary built from "
                f"{merges_path} gives it id {want}"
            )
    return merges


def write_hf_files(directory: str | os.PathLike, merges: Sequence[Merge]) -> tuple[Path, Path]:
    """Write ``vocab.json`` + ``merges.txt`` (special tokens under Hugging Face's names)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokens = tokens_from_merges(merges)
    tokens[-2:] = [HF_SOT_TOKEN, HF_EOT_TOKEN]
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    atomic_write_text(vocab_path, json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    atomic_write_text(merges_path, "#version: 0.2\n" + merges_to_text(merges) + "\n")
    return vocab_path, merges_path
