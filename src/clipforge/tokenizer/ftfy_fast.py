"""``ftfy.fix_text``, exactly, without most of its cost.

``ftfy.fix_text`` (version 6) splits a text into lines and runs each through a loop of fixers until
nothing changes: ``unescape_html`` (unless the line holds ``<``), ``fix_encoding``, then eight
character-level fixers, then NFC. It costs 15-60 us per caption, most of OpenAI's tokenizer time.

:func:`fix_text` runs the same driver with ftfy's own fixer functions, but

* skips each character-level fixer when the text holds none of the characters it changes (read
  from ftfy's tables), and NFC when the text is already normalised;
* calls ``fix_encoding`` only when its entry test passes: it returns the text unchanged unless
  ftfy's mojibake detector ``badness.BADNESS_RE`` matches. Every match of that regex contains one
  of the non-ASCII characters the regex names and is at most ``W`` (= 7) characters long, so we
  search only short windows around those characters, caching the answer per window (a window
  may over-report; then ``fix_encoding`` runs and decides, as in ftfy).

Any ftfy other than 6.x goes straight to ``ftfy.fix_text``. Equality with ``ftfy.fix_text`` is
tested on the golden corpus and on random text built around every character ftfy looks at.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Character-level fixers in the order ftfy 6's fix_and_explain applies them after fix_encoding.
_FIXER_ORDER = (
    "fix_c1_controls",
    "fix_latin_ligatures",
    "fix_character_width",
    "uncurl_quotes",
    "fix_line_breaks",
    "fix_surrogates",
    "remove_terminal_escapes",
    "remove_control_chars",
)
_WINDOW_CACHE_SIZE = 1 << 16


@dataclass(frozen=True)
class _Plan:
    fixers: tuple[tuple[re.Pattern, Callable[[str], str]], ...]  # (characters it changes, fixer)
    unescape_html: Callable[[str], str]
    fix_encoding: Callable[[str], str]
    fixed_chars: re.Pattern  # any character one of `fixers` may change
    detector_chars: re.Pattern  # the non-ASCII characters BADNESS_RE names
    detector_clusters: re.Pattern  # runs of them with gaps shorter than two windows
    detector: re.Pattern  # ftfy.badness.BADNESS_RE
    window: int | None  # longest possible detector match; None: search whole segments
    max_segment: int  # ftfy's max_decode_length
    cache: dict[str, bool]


def chars_named_in(source: str) -> set[str]:
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


def char_class(chars: set[str]) -> re.Pattern:
    """A compiled ``[...]`` matching exactly ``chars`` (written as code point ranges)."""
    ranges: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)
    return re.compile(f"[{body}]")


def _longest_match(pattern: re.Pattern) -> int | None:
    """The most characters one match of ``pattern`` can span, or None when unbounded, over 63, or unknown.

    The one place that reads CPython's private regex parser (``re._parser``, ``sre_parse`` before
    3.11): no public API gives a pattern's match width, and a hand-written parser for ftfy's regex
    would be a second, worse copy of that one. Anything unexpected (another interpreter, a changed
    parser) returns None, which only turns the windowed search off: ``fix_text`` then searches whole
    segments, slower and still exact. ``test_tokenizer.py`` pins the answer for ftfy's regex."""
    try:
        parser = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")
        longest = parser.parse(pattern.pattern, pattern.flags).getwidth()[1]
    except Exception:  # noqa: BLE001 - any failure just disables the windowed search
        return None
    return longest if 0 < longest < 64 else None


@functools.cache
def _plan() -> _Plan | None:
    """ftfy's tables for the shortcut, or None when the installed ftfy is not a verified 6.x."""
    try:
        import ftfy
        from ftfy import badness, chardata

        if not ftfy.__version__.startswith("6."):
            return None
        quotes = chars_named_in(chardata.SINGLE_QUOTE_RE.pattern + chardata.DOUBLE_QUOTE_RE.pattern)
        changed = {  # the characters each fixer may change; any other text passes through unchanged
            "fix_c1_controls": {chr(cp) for cp in range(0x80, 0xA0)},
            "fix_latin_ligatures": set(map(chr, chardata.LIGATURES)),
            "fix_character_width": set(map(chr, chardata.WIDTH_MAP)),
            "uncurl_quotes": quotes,
            "fix_line_breaks": {"\r", "\u2028", "\u2029", "\x85"},
            "fix_surrogates": {chr(cp) for cp in range(0xD800, 0xE000)},
            "remove_terminal_escapes": {"\x1b"},
            "remove_control_chars": set(map(chr, chardata.CONTROL_CHARS)),
        }
        fixers = tuple((char_class(changed[name]), ftfy.FIXERS[name]) for name in _FIXER_ORDER)
        detector = badness.BADNESS_RE
        unescape = ftfy.FIXERS["unescape_html"]
        fix_encoding = ftfy.fix_encoding
        max_segment = ftfy.TextFixerConfig().max_decode_length
    except (ImportError, AttributeError, KeyError, TypeError):
        return None
    named = char_class(chars_named_in(detector.pattern)).pattern  # "[...]"
    window = _longest_match(detector)
    gap = 2 * (window - 1) if window else 0
    return _Plan(
        fixers=fixers,
        unescape_html=unescape,
        fix_encoding=fix_encoding,
        fixed_chars=char_class(set().union(*changed.values())),
        detector_chars=re.compile(named),
        detector_clusters=re.compile(f"{named}(?:[^{named[1:-1]}]{{0,{gap}}}{named})*"),
        detector=detector,
        window=window,
        max_segment=max_segment,
        cache={},
    )


def clear_cache() -> None:
    """Forget the cached detector answers (they are exact; this only frees memory)."""
    plan = _plan()
    if plan is not None:
        plan.cache.clear()


def _detector_fires(text: str, plan: _Plan) -> bool:
    """``BADNESS_RE.search(text)``, searching only windows that could hold a match (may over-report:
    ``^`` can fire at a window start). Answers are cached per window: captions repeat phrases."""
    if plan.window is None:
        return plan.detector_chars.search(text) is not None and plan.detector.search(text) is not None
    reach, cache = plan.window - 1, plan.cache
    for cluster in plan.detector_clusters.finditer(text):  # named characters at most 2*reach apart
        window = text[max(cluster.start() - reach, 0) : cluster.end() + reach]
        fires = cache.get(window)
        if fires is None:
            fires = plan.detector.search(window) is not None
            if len(cache) >= _WINDOW_CACHE_SIZE:
                cache.clear()
            cache[window] = fires
        if fires:
            return True
    return False


def _fix_segment(text: str, unescape: bool, plan: _Plan) -> str:
    """ftfy's fix_and_explain loop for one line (explain=False, default configuration)."""
    while True:
        original = text
        if unescape and "&" in text:
            text = plan.unescape_html(text)
        if _detector_fires(text, plan):  # else fix_encoding would return the text unchanged
            text = plan.fix_encoding(text)
        if plan.fixed_chars.search(text):
            for changes, fixer in plan.fixers:
                if changes.search(text):
                    text = fixer(text)
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        if text == original:
            return text


def _fix_lines(text: str, plan: _Plan) -> str:
    """ftfy.fix_text's segmentation: lines, at most max_decode_length long, each fixed alone."""
    if "\n" not in text and len(text) <= plan.max_segment:  # the common case: one segment
        return _fix_segment(text, "<" not in text, plan)
    out: list[str] = []
    unescape, pos = True, 0
    while pos < len(text):
        end = min(text.find("\n", pos) + 1 or len(text), pos + plan.max_segment)
        segment = text[pos:end]
        unescape = unescape and "<" not in segment  # once off, off for the rest (as in ftfy)
        out.append(_fix_segment(segment, unescape, plan))
        pos = end
    return "".join(out)


def fix_text(text: str) -> str:
    """Exactly ``ftfy.fix_text(text)`` with the default configuration."""
    plan = _plan()
    return _fix_lines(text, plan) if plan is not None else _ftfy().fix_text(text)


def _ftfy() -> Any:
    try:
        import ftfy
    except ImportError as err:  # a core dependency, but say what to do
        raise ImportError("clipforge's tokenizer needs `pip install ftfy`") from err
    return ftfy
