import dataclasses

import pytest
import torch

from clipforge.config import ModelConfig


def tiny_config(cfg: ModelConfig) -> ModelConfig:
    """Shrink a named architecture to test size, keeping its kind, patch size and activation."""
    v = cfg.vision
    if v.kind == "vit":
        vision = dataclasses.replace(v, image_size=2 * v.patch_size, width=32, layers=2, head_width=16)
    else:
        vision = dataclasses.replace(v, image_size=64, width=8, layers=(1, 1, 1, 1), head_width=16)
    # Keep the text tower's kind (causal/pool/proj_bias), shrink its size.
    text = dataclasses.replace(cfg.text, context_length=16, vocab_size=64, width=32, layers=2, head_width=16)
    embed_dim = 24 if v.kind != "vit" or v.project else vision.width  # no projection: embed_dim == width
    return cfg.replace(embed_dim=embed_dim, vision=vision, text=text)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
