r"""OpenAI's text clean-up and pre-tokenisation, with an exact fast path.

OpenAI's CLIP (and open_clip's ``SimpleTokenizer``) turn a caption into words like this:

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = " ".join(text.split()).lower()
    words = regex.findall(PRETOKENIZE_PATTERN, text, flags=regex.IGNORECASE)

``ftfy.fix_text`` costs ~15 us even on plain ASCII, most of the reference tokenizer's time. Printable
ASCII without ``&`` (most captions) skips it and ``html.unescape``: both provably change nothing
there (``\t \n \f \r`` included: ftfy keeps or turns them into ``\n``, and all collapse to one
space). Any other text goes through ``ftfy_fast.fix_text``, which equals ``ftfy.fix_text``.

Pre-tokenising a cleaned text equals pre-tokenising each of its space-separated chunks (no match of
the pattern contains a space), which lets the tokenizer cache whole chunks.
"""

from __future__ import annotations

import functools
import html
import re

from .ftfy_fast import fix_text

# open_clip's special tokens come first, then the pattern of OpenAI's CLIP.
PRETOKENIZE_PATTERN = (
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)

# ASCII characters ftfy or html.unescape may change: C0 controls other than \t \n \f \r (ftfy
# deletes them, \x1b starts terminal escapes), DEL and '&'. \r is safe: ftfy turns it into \n and
# both collapse to one space.
ASCII_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f&]")


@functools.cache
def _pretokenizer():
    import regex

    return regex.compile(PRETOKENIZE_PATTERN, regex.IGNORECASE)


# The same pattern for ASCII text, where \p{L} is [a-zA-Z], \p{N} is [0-9] and \s is [\t\n\v\f\r ]:
# the stdlib engine runs it ~2x faster than `regex`.
_ASCII_PRETOKENIZE = re.compile(
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\t\n\x0b\x0c\r a-z0-9]+",
    re.IGNORECASE,
)


def pretokenize(text: str) -> list[str]:
    """Split cleaned text into OpenAI's words (the special-token strings stay whole)."""
    if text.isascii():
        return _ASCII_PRETOKENIZE.findall(text)
    return _pretokenizer().findall(text)


def full_clean(text: str) -> str:
    """OpenAI's clean-up, always running ftfy (the reference path)."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()  # split/join also strips


def _fixed(text: str) -> str:
    """ftfy + html.unescape twice, skipped where provably a no-op."""
    if text.isascii() and ASCII_UNSAFE.search(text) is None:
        return text
    return html.unescape(html.unescape(fix_text(text)))  # exact ftfy, see ftfy_fast.py


def clean_text(text: str) -> str:
    """OpenAI's clean-up: ftfy, html.unescape twice, strip, collapse whitespace, lower-case."""
    return clean_whitespace(text).lower()


def clean_whitespace(text: str) -> str:
    """OpenAI's clean-up without lower-casing (open_clip's ``HFTokenizer`` default, ``clean="whitespace"``):
    ftfy, html.unescape twice, strip, collapse whitespace."""
    return " ".join(_fixed(text).split())  # split/join also strips


def clean_chunks(text: str) -> list[str]:
    """``clean_text(text).split(" ")`` (``[]`` for an empty result), without the joined string.

    Lower-casing before splitting is the same: no case mapping creates or removes whitespace, and
    the only context-dependent one (Greek final sigma) stops at any whitespace character.
    """
    return _fixed(text).lower().split()
