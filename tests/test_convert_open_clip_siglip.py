"""open_clip's SigLIP layout (timm image tower under visual.trunk, CustomTextCLIP text tower): names
round-trip, configs map to clipforge's named SigLIP architectures, weights convert with equal outputs."""

import json

import pytest
import torch
from test_siglip_parity import IMAGE, ours_from, siglip

from clipforge.config import ConfigError
from clipforge.convert import ConvertError, import_model, open_clip_siglip
from clipforge.convert.sources import resolve_model_config
from clipforge.models import get_model_config

B16 = {  # open_clip's model config for ViT-B-16-SigLIP (hf-hub:timm/ViT-B-16-SigLIP)
    "embed_dim": 768,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_base_patch16_siglip_224",
                   "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 64, "vocab_size": 32000, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                 "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 768, "heads": 12, "layers": 12,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
}
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "squash"}


def test_open_clip_siglip_config_is_the_named_architecture(tmp_path):
    got = open_clip_siglip.config_from(B16, name="ViT-B-16-SigLIP", preprocess=PREPROCESS)
    assert got == get_model_config("ViT-B-16-SigLIP")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": B16, "preprocess_cfg": PREPROCESS}))
    assert resolve_model_config(tmp_path / "open_clip_config.json").replace(name="x") == got.replace(name="x")
    back = open_clip_siglip.config_from(open_clip_siglip.config_to(got), name=got.name)
    assert back == got
    so400m = {**B16, "embed_dim": 1152, "vision_cfg": {**B16["vision_cfg"], "image_size": 384,
              "timm_model_name": "vit_so400m_patch14_siglip_384"},
              "text_cfg": {**B16["text_cfg"], "width": 1152, "heads": 16, "layers": 27, "mlp_ratio": 3.7361}}
    cfg = open_clip_siglip.config_from(so400m)
    assert (cfg.vision.width, cfg.vision.layers, cfg.vision.image_size, cfg.vision.patch_size) == (1152, 27, 384, 14)
    with pytest.raises(ConfigError, match="pool_type"):
        open_clip_siglip.config_from({**B16, "text_cfg": {**B16["text_cfg"], "pool_type": "argmax"}})
    with pytest.raises(ConfigError, match="timm_pool"):
        open_clip_siglip.config_from({**B16, "vision_cfg": {**B16["vision_cfg"], "timm_pool": "avg"}})


@pytest.mark.reference
def test_open_clip_siglip_weights_convert_with_equal_outputs(tmp_path):
    pytest.importorskip("transformers", reason="the random SigLIP comes from transformers")
    ref = siglip()
    ours = ours_from(ref)
    sd = open_clip_siglip.state_dict_to(ours.state_dict())
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in sd if k.startswith("visual.")} == {"visual.trunk"}
    assert "visual.trunk.attn_pool.latent" in sd and sd["visual.trunk.pos_embed"].ndim == 3
    back = open_clip_siglip.state_dict_from(sd)
    assert back.keys() == ours.state_dict().keys()
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "cfg.json").write_text(ours.config.to_json())
    imported = import_model(tmp_path / "open_clip_model.safetensors", model=tmp_path / "cfg.json")
    assert imported.format == "open_clip"
    images, tokens = torch.randn(2, 3, IMAGE, IMAGE), torch.randint(2, 90, (2, 12))
    with torch.no_grad():
        assert torch.equal(imported.model.encode_image(images), ours.encode_image(images))
        assert torch.equal(imported.model.encode_text(tokens), ours.encode_text(tokens))
    with pytest.raises(ConvertError, match=r'pass `model="NAME"` \(e\.g\. ViT-B-16-SigLIP\) or `model="CONFIG\.json"`'):
        import_model(tmp_path / "open_clip_model.safetensors")
