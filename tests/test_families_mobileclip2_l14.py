"""MobileCLIP2-L-14 (timm ``vit_large_patch14_clip_224``: OpenAI CLIP's ViT layout with a biased
projection; open_clip's text tower run bidirectionally), a configuration of clipforge's ViT read by the
timm ViT-family adapter: against open_clip's outputs recorded in tests/assets/families by
make_golden_mobileclip.py (open_clip 3.3.0 + timm 1.0.31, the tower built by timm's registered
function with the sizes shrunk), open_clip's config and names both ways, the registry entry."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from convert_utils import golden_diffs
from safetensors.torch import load_file

from clipforge.config import ConfigError, ModelConfig
from clipforge.convert import export_hf, export_open_clip, import_model, open_clip_eva
from clipforge.models import get_model_config
from clipforge.pretrained import get_pretrained

ASSETS = Path(__file__).parent / "assets" / "families"
CASE = "mobileclip2_l14_tiny"
# open_clip/model_configs/MobileCLIP2-L-14.json
MOBILECLIP2_L14 = {
    "embed_dim": 768,
    "vision_cfg": {"timm_model_name": "vit_large_patch14_clip_224", "timm_model_pretrained": False,
                   "timm_pool": "token", "timm_proj": None, "timm_drop": 0.0, "timm_drop_path": 0.1,
                   "image_size": 224},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12,
                 "no_causal_mask": True},
    "custom_text": True,
}  # fmt: skip


def tiny_config() -> ModelConfig:
    data = json.loads((ASSETS / f"{CASE}.json").read_text())
    cfg = open_clip_eva.config_from(data["model_cfg"], name=CASE)
    return cfg.replace(vision=dataclasses.replace(cfg.vision, **data["tiny"]))


def imported(folder: Path):
    (folder / "l14.json").write_text(tiny_config().to_json())
    return import_model(ASSETS / f"{CASE}.safetensors", model=folder / "l14.json")


def test_open_clip_mobileclip2_l14_imports_with_open_clips_outputs(tmp_path):
    got = imported(tmp_path)
    cfg = got.model.config
    assert (cfg.text.causal, cfg.vision.norm_pre, cfg.vision.proj_bias, cfg.vision.pool) == (False, True, True, "cls")
    expected = load_file(ASSETS / f"{CASE}.expected.safetensors")
    image, text = golden_diffs(got.model, expected)
    assert image <= 1e-5 and text <= 1e-5
    sd = load_file(ASSETS / f"{CASE}.safetensors")
    back = open_clip_eva.state_dict_to(open_clip_eva.state_dict_from(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_mobileclip2_l14_config_is_the_named_architecture():
    cfg = open_clip_eva.config_from(MOBILECLIP2_L14, name="MobileCLIP2-L-14")
    assert cfg == get_model_config("MobileCLIP2-L-14")
    v = cfg.vision
    assert (v.width, v.layers, v.heads, v.patch_size, v.norm_eps, v.stem) == (1024, 24, 16, 14, 1e-5, "patch")
    assert not cfg.text.causal and cfg.preprocess.interpolation == "bicubic"
    assert open_clip_eva.family_of(v) == "clip_vit"
    out = open_clip_eva.config_to(cfg)
    assert out["text_cfg"]["no_causal_mask"] is True and out["vision_cfg"]["timm_pool"] == "token"
    assert open_clip_eva.config_from(out, name=cfg.name).replace(preprocess=cfg.preprocess) == cfg
    entry = get_pretrained("MobileCLIP2-L-14/dfndr2b")
    assert (entry.hf_hub, entry.format, entry.act) == ("timm/MobileCLIP2-L-14-OpenCLIP", "open_clip", "gelu")
    assert entry.preprocess_config() == cfg.preprocess  # OpenAI's mean and std, bicubic (open_clip's _mc2cfg)
    # EVA-02's configs still have a causal text tower only
    eva = {**MOBILECLIP2_L14, "vision_cfg": {"timm_model_name": "eva02_base_patch16_clip_224", "timm_pool": "token",
                                             "timm_proj": None}}  # fmt: skip
    with pytest.raises(ConfigError, match="no_causal_mask"):
        open_clip_eva.config_from(eva)


def test_exports_to_open_clip_only(tmp_path, monkeypatch):
    model = imported(tmp_path).model
    with pytest.raises(ValueError, match="EVA-02 / PE-Core image tower"):  # a biased projection: not OpenAI's
        export_hf(model, tmp_path / "hf")
    tiny = open_clip_eva._Tower("clip_vit", 32, 2, 2, 7, 28, 0)  # the tiny tower under a name of its own
    monkeypatch.setitem(open_clip_eva._TOWERS, "vit_tiny_clip_test", tiny)
    out = export_open_clip(model, tmp_path / "out")
    saved = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    assert saved["text_cfg"]["no_causal_mask"] is True
    written = load_file(out / "open_clip_model.safetensors")
    assert written.keys() == load_file(ASSETS / f"{CASE}.safetensors").keys()
    back = import_model(out).model
    assert back.config.replace(name="x", preprocess=model.config.preprocess) == model.config.replace(name="x")
    expected = load_file(ASSETS / f"{CASE}.expected.safetensors")
    with torch.no_grad():
        assert torch.equal(back.encode_image(expected["images"]), model.encode_image(expected["images"]))
        assert torch.equal(back.encode_text(expected["tokens"]), model.encode_text(expected["tokens"]))
