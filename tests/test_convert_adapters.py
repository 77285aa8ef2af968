"""Each format module is a FormatAdapter whose two directions undo each other: a model config with its
preprocessing, and the names and shapes of every parameter (values: the parity tests)."""

import pytest
import torch

from clipforge.convert import hf, hf_siglip, open_clip, open_clip_siglip
from clipforge.convert.adapters import FormatAdapter, is_siglip_layout
from clipforge.models import CLIP, get_model_config

CASES = [
    (hf, "ViT-B-32"),
    (hf_siglip, "ViT-B-16-SigLIP"),
    (open_clip, "ViT-B-32"),
    (open_clip, "RN50"),
    (open_clip_siglip, "ViT-B-16-SigLIP"),
]


@pytest.mark.parametrize(("adapter", "name"), CASES, ids=lambda x: getattr(x, "__name__", x).split(".")[-1])
def test_adapter_round_trips(adapter, name):
    assert isinstance(adapter, FormatAdapter)
    cfg = get_model_config(name)
    assert is_siglip_layout(cfg) == (adapter in (hf_siglip, open_clip_siglip))
    back = adapter.config_from(adapter.config_to(cfg), preprocess=adapter.preprocess_to(cfg), name=cfg.name)
    assert back == cfg
    with torch.device("meta"):  # full-size shapes, no memory
        sd = CLIP(cfg).state_dict()
    theirs = adapter.state_dict_to(sd)
    assert not set(theirs) & {k for k in sd if k.startswith(("visual.transformer.blocks.", "text.token_embed."))}
    again = adapter.state_dict_from(theirs)
    assert {k: v.shape for k, v in again.items()} == {k: v.shape for k, v in sd.items()}


def test_adapters_refuse_what_their_format_cannot_hold():
    with pytest.raises(ValueError, match="ResNet"):
        hf.config_to(get_model_config("RN50"))
    with pytest.raises(ValueError, match="SiglipModel"):
        hf.config_to(get_model_config("ViT-B-16-SigLIP"))
    with pytest.raises(ValueError, match="SiglipModel needs"):
        hf_siglip.config_to(get_model_config("ViT-B-32"))
