"""Source-language codes of NLLB-style vocabularies (NLLB-CLIP's text towers).

NLLB's tokenizer starts every text with the code of its language: ``eng_Latn``, ``deu_Latn``,
``zho_Hans`` (an ISO 639-3 language and an ISO 15924 script), one of the vocabulary's added tokens.
NLLB-CLIP was trained with each caption's own code, so a query is best tokenized with the code of the
language it is written in. The codes a tokenizer knows are read from its vocabulary (its added tokens
shaped ``xxx_Xxxx``: NLLB-200's 202, or those of any other NLLB-layout vocabulary), never listed here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from .vocab import TokenizerError

LANGUAGE_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")  # NLLB's: eng_Latn, zho_Hans, ...
_CLOSE_MATCHES = 5


def language_codes(tokens: Iterable[str]) -> tuple[str, ...]:
    """The ``tokens`` shaped like a language code (``deu_Latn``), in the order given."""
    return tuple(t for t in tokens if LANGUAGE_CODE.fullmatch(t))


def no_languages(language: object) -> TokenizerError:
    """The error for a language given to a tokenizer that has no language codes."""
    return TokenizerError(
        f"`language={language!r}` was given, but only NLLB-CLIP tokenizers take a language (this tokenizer "
        "does not start texts with a language code; it reads every language the same way): leave `language=` out"
    )


def check_language(language: object, known: Sequence[str]) -> str:
    """``language`` if it is one of the codes ``known``; otherwise a :class:`TokenizerError` naming
    the ``language`` parameter, with a few close matches (spelling and case)."""
    if not known:
        raise no_languages(language)
    if not isinstance(language, str):
        raise TokenizerError(f"`language=` must be a language code such as 'deu_Latn', got {type(language).__name__}")
    if language in known:
        return language
    folded = {code.casefold(): code for code in known}
    close = [folded[c] for c in difflib.get_close_matches(language.casefold(), list(folded), n=_CLOSE_MATCHES)]
    hint = f"close: {', '.join(close)}" if close else f"e.g. {', '.join(known[:3])}"
    raise TokenizerError(
        f"`language={language!r}` is not one of this tokenizer's {len(known)} language codes ({hint}; "
        "codes are an ISO 639-3 language and an ISO 15924 script, as deu_Latn)"
    )
