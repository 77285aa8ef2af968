"""CLIP's byte-level BPE tokenizer (OpenAI-exact ids, fast) and BPE vocabulary training.

    from clipforge.tokenizer import get_tokenizer
    tok = get_tokenizer("openai")            # OpenAI's vocabulary ships inside the package
    tokens, lengths = tok.encode_batch(["a photo of a cat"])   # (B, 77), (B,)

Invariant (CLIP BPE): the end-of-text token has the largest id, so the text tower may pool at
``argmax``. SigLIP's SentencePiece vocabularies (:class:`SentencePieceTokenizer`) pad to the full
context instead; their text towers read the last position. Checkpoints store either kind:
:func:`tokenizer_from_metadata` rebuilds it. NLLB-CLIP's tokenizers start each text with its
language's code: :func:`with_language` gives one for another language (``"deu_Latn"``).
"""

from .kinds import (
    TextTokenizer,
    get_tokenizer,
    is_tokenizer_dir,
    tokenizer_from_dir,
    tokenizer_from_metadata,
    with_language,
)
from .sentencepiece import SentencePieceTokenizer
from .tokenizer import Tokenizer
from .train import train_bpe
from .vocab import TokenizerError, TokenizerInputError

__all__ = [
    "SentencePieceTokenizer",
    "TextTokenizer",
    "Tokenizer",
    "TokenizerError",
    "TokenizerInputError",
    "get_tokenizer",
    "is_tokenizer_dir",
    "tokenizer_from_dir",
    "tokenizer_from_metadata",
    "train_bpe",
    "with_language",
]
