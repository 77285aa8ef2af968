"""CLIP's byte-level BPE tokenizer (OpenAI-exact ids, fast) and BPE vocabulary training.

    from clipforge.tokenizer import get_tokenizer
    tok = get_tokenizer("openai")            # OpenAI's vocabulary ships inside the package
    tokens, lengths = tok.encode_batch(["a photo of a cat"])   # (B, 77), (B,)

Invariant: the end-of-text token has the largest id, so the text tower may pool at ``argmax``.
"""

from .tokenizer import Tokenizer, get_tokenizer
from .train import train_bpe
from .vocab import TokenizerError, TokenizerInputError

__all__ = ["Tokenizer", "TokenizerError", "TokenizerInputError", "get_tokenizer", "train_bpe"]
