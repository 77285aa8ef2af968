"""Architecture parity: random-weight transformers SiglipModel / Siglip2Model mapped into ours give
equal embeddings and logits, and our export reloads in transformers with equal outputs."""

import pytest
import torch
import torch.nn.functional as F

from clipforge.checkpoint import load_state_dict_strict
from clipforge.convert import hf_siglip
from clipforge.models import CLIP

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
pytestmark = pytest.mark.reference

CTX, VOCAB, PATCH, IMAGE = 12, 90, 8, 32


def _towers(act: str = "gelu_pytorch_tanh") -> tuple[dict, dict]:
    text = dict(hidden_size=48, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=CTX, vocab_size=VOCAB, hidden_act=act, pad_token_id=1, eos_token_id=1)
    vision = dict(hidden_size=48, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                  patch_size=PATCH, hidden_act=act)
    return text, vision


def perturbed(model):
    torch.manual_seed(1)
    with torch.no_grad():  # HF initialises norms to identity and logit_scale/bias to 0: make all non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.logit_scale.fill_(4.7)  # exp = 110: above CLIP's clamp at 100, as trained SigLIPs are
        model.logit_bias.fill_(-12.5)
    return model.eval()


def siglip(act: str = "gelu_pytorch_tanh", image: int = IMAGE):
    text, vision = _towers(act)
    cfg = transformers.SiglipConfig(text_config=text, vision_config={**vision, "image_size": image})
    return perturbed(transformers.SiglipModel(cfg))


def siglip2():
    text, vision = _towers()
    cfg = transformers.Siglip2Config(text_config=text, vision_config={**vision, "num_patches": (IMAGE // PATCH) ** 2})
    return perturbed(transformers.Siglip2Model(cfg))


def ours_from(ref) -> CLIP:
    cfg = hf_siglip.config_from(ref.config.to_dict())
    model = CLIP(cfg).eval()
    load_state_dict_strict(model, hf_siglip.state_dict_from(ref.state_dict()), source="hf")
    return model


def tokens(batch: int = 3, length: int = CTX) -> torch.Tensor:
    torch.manual_seed(2)
    t = torch.randint(2, VOCAB, (batch, length))
    t[0, length // 2 :] = 1  # a short text padded with the pad/eos id, as SiglipTokenizer does
    return t


def patchify(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, p*p*3), as Siglip2ImageProcessor cuts patches (row, col, channel)."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // PATCH, PATCH, W // PATCH, PATCH).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // PATCH) * (W // PATCH), PATCH * PATCH * C)


def pooled(x):
    return x if isinstance(x, torch.Tensor) else x.pooler_output


def check(ours: CLIP, want_i, want_t, want_logits, images, toks):
    with torch.no_grad():
        got_i, got_t = ours.encode_image(images), ours.encode_text(toks)
        logits = ours.logits(got_i, got_t)
    assert (got_i - F.normalize(want_i, dim=-1)).abs().max() <= 1e-5
    assert (got_t - F.normalize(want_t, dim=-1)).abs().max() <= 1e-5
    assert (logits - want_logits).abs().max() <= 1e-4


@pytest.mark.parametrize("length", [CTX, 7], ids=["full-context", "shorter"])
@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu"])
def test_siglip_model_parity(act, length):
    ref = siglip(act)
    ours = ours_from(ref)
    assert ours.config.objective == "sigmoid" and ours.config.norm_eps == 1e-6
    images, toks = torch.randn(2, 3, IMAGE, IMAGE), tokens(3, length)
    with torch.no_grad():
        out = ref(input_ids=toks, pixel_values=images)
        want_i = pooled(ref.get_image_features(pixel_values=images))
        want_t = pooled(ref.get_text_features(input_ids=toks))
    check(ours, want_i, want_t, out.logits_per_image, images, toks)


def test_siglip2_naflex_model_parity_at_native_grid():
    ref = siglip2()
    ours = ours_from(ref)
    assert ours.config.vision.image_size == IMAGE
    images, toks = torch.randn(2, 3, IMAGE, IMAGE), tokens()
    grid = IMAGE // PATCH
    kw = dict(pixel_values=patchify(images), pixel_attention_mask=torch.ones(2, grid * grid, dtype=torch.long),
              spatial_shapes=torch.tensor([[grid, grid]] * 2))
    with torch.no_grad():
        out = ref(input_ids=toks, **kw)
        want_i = pooled(ref.get_image_features(**kw))
        want_t = pooled(ref.get_text_features(input_ids=toks))
    check(ours, want_i, want_t, out.logits_per_image, images, toks)


def test_so400m_style_image_size_not_divisible_by_patch():
    # So400m/14 runs at 384 px: 384 % 14 = 6 pixels are dropped by the patch convolution, as in HF.
    ref = siglip(image=IMAGE + 5)
    ours = ours_from(ref)
    images = torch.randn(2, 3, IMAGE + 5, IMAGE + 5)
    with torch.no_grad():
        want = F.normalize(pooled(ref.get_image_features(pixel_values=images)), dim=-1)
        got = ours.encode_image(images)
    assert (got - want).abs().max() <= 1e-5


def test_state_dict_names_round_trip():
    ref = siglip()
    ours = ours_from(ref)
    sd = ours.state_dict()
    theirs = hf_siglip.state_dict_to(sd)
    assert set(theirs) == {k for k in ref.state_dict() if not k.endswith("position_ids")}
    back = hf_siglip.state_dict_from(theirs)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    again = hf_siglip.config_from(hf_siglip.config_to(ours.config))
    assert again.replace(preprocess=ours.config.preprocess) == ours.config


def test_refusals():
    text, vision = _towers()
    with pytest.raises(ValueError, match="vision_use_head"):
        hf_siglip.config_from({"model_type": "siglip", "text_config": text,
                                  "vision_config": {**vision, "vision_use_head": False}})
    with pytest.raises(ValueError, match="square"):
        hf_siglip.config_from({"model_type": "siglip2", "text_config": text,
                                  "vision_config": {**vision, "num_patches": 24}})
    with pytest.raises(ValueError, match="projection_size"):
        hf_siglip.config_from({"model_type": "siglip", "text_config": {**text, "projection_size": 32},
                                  "vision_config": vision})
    from clipforge.models import create_model, get_model_config

    with pytest.raises(ValueError, match="attention pooling"):
        hf_siglip.config_to(get_model_config("vit-tiny"))
    from clipforge.convert import hf

    with pytest.raises(ValueError, match="SiglipModel"):
        hf.config_to(create_model("siglip-tiny").config)
