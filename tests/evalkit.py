"""Helpers for the evaluation and application tests: a word-level stand-in tokenizer, tiny models
and hand-drawn shape images."""

from __future__ import annotations

import torch
from conftest import tiny_config
from PIL import Image, ImageDraw

from clipforge.models import create_model

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}


class WordTokenizer:
    """Whitespace words → ids; 0 pad, 1 start, the largest id ends the text (as the model expects)."""

    def __init__(self, vocab_size: int = 64, context_length: int = 16) -> None:
        self.vocab_size, self.context_length = vocab_size, context_length
        self.eot = vocab_size - 1

    def __call__(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        ctx = context_length or self.context_length
        out = torch.zeros(len(texts), ctx, dtype=torch.long)
        for i, text in enumerate(texts):
            words = [2 + sum(map(ord, w)) % (self.vocab_size - 3) for w in text.lower().split()]
            ids = [1] + words[: ctx - 2] + [self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def tiny_model(name: str = "vit-tiny"):
    from clipforge.models import get_model_config

    torch.manual_seed(0)
    return create_model(tiny_config(get_model_config(name))).eval()


def shape_image(shape: str = "circle", colour: str = "red", *, size: int = 64, box=None) -> Image.Image:
    image = Image.new("RGB", (size, size), (240, 240, 240))
    draw_shape(image, shape, colour, box or (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return image


def draw_shape(image: Image.Image, shape: str, colour: str, box) -> None:
    d, c = ImageDraw.Draw(image), COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=c)
    elif shape == "square":
        d.rectangle(box, fill=c)
    else:
        x0, y0, x1, y1 = box
        d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=c)
