"""Helpers shared by the conversion/export tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

ASSETS = Path(__file__).parent / "assets" / "convert"
VOCAB = 520  # = small_tokenizer().vocab_size and the golden models' vocabulary
CTX = 16
# Six merges on top of the 512 byte tokens: a tiny, valid CLIP BPE vocabulary (512 + 6 + 2 = 520 ids).
MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("c", "a"), ("ca", "t</w>")]


def small_tokenizer(context_length: int = CTX):
    from clipforge.tokenizer import Tokenizer

    return Tokenizer.from_merges(MERGES, context_length=context_length)


def example_tokens(batch: int = 3, ctx: int = CTX, vocab: int = VOCAB, *, lengths=None) -> torch.Tensor:
    """Start token, random ids, end token (the largest id) at varied positions, zero padding."""
    lengths = lengths or [3, ctx, 9][:batch]
    tokens = torch.zeros(len(lengths), ctx, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, 0], tokens[i, n - 1] = vocab - 2, vocab - 1
        tokens[i, 1 : n - 1] = torch.randint(1, vocab - 2, (n - 2,))
    return tokens


def perturb(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Make every parameter (norms included) and BatchNorm statistic non-trivial."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def golden_diffs(model, expected: dict, *, image_key: str = "image_features") -> tuple[float, float]:
    """How far ``model``'s image and text embeddings of a golden file's inputs (``images``,
    ``tokens``) are from the recorded ones (``expected[image_key]``, ``text_features``): the largest
    absolute differences, after checking that the shapes agree."""
    with torch.no_grad():
        image, text = model.encode_image(expected["images"]), model.encode_text(expected["tokens"])
    assert image.shape == expected[image_key].shape and text.shape == expected["text_features"].shape
    return max_diff(image, expected[image_key]), max_diff(text, expected["text_features"])


def normalized(x) -> torch.Tensor:
    """transformers 4.x returns tensors from get_*_features, 5.x a model output with pooler_output."""
    x = x if isinstance(x, torch.Tensor) else x.pooler_output
    return F.normalize(x, dim=-1)
