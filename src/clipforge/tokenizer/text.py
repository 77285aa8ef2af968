"""OpenAI's text clean-up and pre-tokenisation, with an exact fast path.

OpenAI's CLIP (and open_clip's ``SimpleTokenizer``) turn a caption into words like this:

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = " ".join(text.split()).lower()
    words = regex.findall(PRETOKENIZE_PATTERN, text, flags=regex.IGNORECASE)

``ftfy.fix_text`` costs ~15 us even on plain ASCII, most of the tokenizer's time. It is skipped when
it provably changes nothing: the text holds no character that any ftfy fixer touches or that its
mojibake detector looks at (the set is read from ftfy's own tables, see ``_ftfy_sensitive_chars``),
no ``&`` (so ``html.unescape`` is a no-op too) and is already NFC-normalised. Plain ASCII captions,
CJK, Hangul, emoji and most other scripts take the fast path; accented Latin, Greek and Cyrillic
(which ftfy inspects for mojibake), curly quotes and HTML entities take the exact slow path.

Pre-tokenising a cleaned text equals pre-tokenising each of its space-separated chunks (no match of
the pattern contains a space), which lets the tokenizer cache whole chunks.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

# open_clip's special tokens come first, then the pattern of OpenAI's CLIP.
PRETOKENIZE_PATTERN = r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"

# ASCII characters ftfy or html.unescape may change: C0 controls other than \t \n \f \r (ftfy
# deletes them, \x1b starts terminal escapes), DEL and '&'. \r is safe: ftfy turns it into \n and
# both collapse to one space.
_ASCII_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f&]")


@functools.cache
def _pretokenizer():
    import regex

    return regex.compile(PRETOKENIZE_PATTERN, regex.IGNORECASE)


def pretokenize(text: str) -> list[str]:
    """Split cleaned text into OpenAI's words (the special-token strings stay whole)."""
    return _pretokenizer().findall(text)


def _chars_named_in(source: str) -> set[str]:
    """Non-ASCII characters a regex source or char list names; ``a-b`` ranges expanded (a superset)."""
    source = re.sub(
        r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})",
        lambda m: chr(int(m.group(1) or m.group(2) or m.group(3), 16)),
        source,
    )
    chars = {c for c in source if ord(c) >= 128}
    for i in range(len(source) - 2):
        lo, dash, hi = source[i : i + 3]
        if dash == "-" and max(ord(lo), ord(hi)) >= 128 and lo <= hi:
            chars.update(map(chr, range(ord(lo), ord(hi) + 1)))
    return chars


@functools.cache
def _ftfy_sensitive_chars() -> re.Pattern | None:
    """A regex matching every non-ASCII character that could make ``ftfy.fix_text`` change a text.

    Built from ftfy 6's tables: its mojibake detector (``badness.BADNESS_RE``: every match contains
    at least one non-ASCII character it names), C1 controls, ligatures, width forms, curly quotes,
    line/paragraph separators, surrogates and removed control characters. Returns None (no
    non-ASCII fast path) for an ftfy whose layout we have not verified.
    """
    try:
        import ftfy
        from ftfy import badness, chardata

        if not ftfy.__version__.startswith("6."):
            return None
        chars = _chars_named_in(badness.BADNESS_RE.pattern)
        chars |= _chars_named_in(chardata.SINGLE_QUOTE_RE.pattern + chardata.DOUBLE_QUOTE_RE.pattern)
        for table in (chardata.LIGATURES, chardata.WIDTH_MAP, chardata.CONTROL_CHARS):
            chars |= {chr(cp) for cp in table}
    except (ImportError, AttributeError, TypeError):
        return None
    chars |= {chr(cp) for cp in range(0x80, 0xA0)}  # C1 controls (incl. \x85 NEXT LINE)
    chars |= {"\u2028", "\u2029"} | {chr(cp) for cp in range(0xD800, 0xE000)}  # line breaks, surrogates
    codepoints = sorted(ord(c) for c in chars if ord(c) >= 128)
    ranges: list[list[int]] = []
    for cp in codepoints:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)
    return re.compile(f"[\\x00-\\x08\\x0b\\x0e-\\x1f\\x7f&{body}]")


def needs_ftfy(text: str) -> bool:
    """False only when ``ftfy.fix_text`` and ``html.unescape`` provably leave ``text`` unchanged
    (up to line-break characters, which the whitespace clean-up collapses anyway)."""
    if text.isascii():
        return _ASCII_UNSAFE.search(text) is not None
    sensitive = _ftfy_sensitive_chars()
    return sensitive is None or sensitive.search(text) is not None or not unicodedata.is_normalized("NFC", text)


def full_clean(text: str) -> str:
    """OpenAI's clean-up, always running ftfy (the reference path)."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()  # split/join also strips


def clean_text(text: str) -> str:
    """OpenAI's clean-up: ftfy, html.unescape twice, strip, collapse whitespace, lower-case."""
    if needs_ftfy(text):
        return full_clean(text)
    return " ".join(text.split()).lower()
