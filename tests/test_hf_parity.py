"""Architecture parity: a random-weight transformers.CLIPModel mapped into ours gives equal embeddings."""

import pytest
import torch
import torch.nn.functional as F

from clipforge.checkpoint import load_state_dict_strict
from clipforge.convert import hf
from clipforge.models import CLIP

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
pytestmark = pytest.mark.reference


def hf_model(act: str, *, patch: int = 8, image: int = 32) -> "transformers.CLIPModel":
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=20, vocab_size=100, hidden_act=act,
                         bos_token_id=98, eos_token_id=99, pad_token_id=0),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image, patch_size=patch, hidden_act=act),
        projection_dim=48,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # HF initialises LayerNorms to identity; make them non-trivial
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def features(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.mark.parametrize("act,patch", [("gelu", 8), ("quick_gelu", 8), ("quick_gelu", 16)])
def test_hf_clip_embeddings_equal(act, patch):
    ref = hf_model(act, patch=patch)
    cfg = hf.config_from(ref.config.to_dict())
    assert cfg.act == act
    ours = CLIP(cfg).eval()
    load_state_dict_strict(ours, hf.state_dict_from(ref.state_dict()), source="hf")
    images = torch.randn(3, 3, 32, 32)
    tokens = torch.zeros(3, 20, dtype=torch.long)
    for i, n in enumerate([4, 20, 11]):
        tokens[i, 0], tokens[i, 1 : n - 1], tokens[i, n - 1] = 98, torch.randint(1, 98, (n - 2,)), 99
    with torch.no_grad():
        want_i = F.normalize(features(ref.get_image_features(pixel_values=images)), dim=-1)
        want_t = F.normalize(features(ref.get_text_features(input_ids=tokens)), dim=-1)
        got_i, got_t = ours.encode_image(images), ours.encode_text(tokens)
    assert (got_i - want_i).abs().max() <= 1e-5
    assert (got_t - want_t).abs().max() <= 1e-5


def test_state_dict_round_trip_through_hf_names():
    ref = hf_model("quick_gelu")
    ours = CLIP(hf.config_from(ref.config.to_dict()))
    sd = ours.state_dict()
    back = hf.state_dict_from(hf.state_dict_to(sd))
    assert back.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    # and the HF names are exactly the reference model's (bar constant position-id buffers)
    hf_keys = {k for k in ref.state_dict() if not k.endswith("position_ids")}
    assert set(hf.state_dict_to(sd)) == hf_keys
    assert hf.config_from(hf.config_to(ours.config)).text == ours.config.text
