import dataclasses

import pytest
import torch

from clipforge.config import ModelConfig, TextConfig


def tiny_config(cfg: ModelConfig) -> ModelConfig:
    """Shrink a named architecture to test size, keeping its kind, patch size and activation."""
    v = cfg.vision
    if v.kind == "vit":
        vision = dataclasses.replace(v, image_size=2 * v.patch_size, width=32, layers=2, head_width=16)
    else:
        vision = dataclasses.replace(v, image_size=64, width=8, layers=(1, 1, 1, 1), head_width=16)
    text = TextConfig(context_length=16, vocab_size=64, width=32, layers=2, head_width=16)
    return cfg.replace(embed_dim=24, vision=vision, text=text)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
