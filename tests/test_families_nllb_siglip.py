"""NLLB-CLIP's SigLIP variants (open_clip's ``nllb-clip-base-siglip`` / ``nllb-clip-large-siglip``): an
NLLB (M2M100) encoder text tower beside a timm SigLIP image tower, scored with the sigmoid loss's
logit bias. Against open_clip's outputs recorded in tests/assets/families by make_golden_nllb_siglip.py
(open_clip 3.3.0 + timm 1.0.31 + transformers 5.25, tiny towers built by timm's registered
``vit_base_patch16_siglip_384`` / ``vit_so400m_patch14_siglip_384``, which use exact GELU); open_clip's
configs, folders and names both ways; the registry entries."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from convert_utils import golden_diffs, max_diff
from safetensors.torch import load_file

from clipforge.api import load
from clipforge.config import ConfigError, ModelConfig
from clipforge.convert import convert, export_hf, export_open_clip, import_model, open_clip_hf_text, open_clip_siglip
from clipforge.convert.sources import resolve_model_config
from clipforge.models import get_model_config
from clipforge.pretrained import get_pretrained

ASSETS = Path(__file__).parent / "assets" / "families"
NLLB_VOCAB = ASSETS / "nllb_vocab"
CASES = ("nllb_siglip_base_tiny", "nllb_siglip_large_tiny")
# open_clip/model_configs/nllb-clip-base-siglip.json and nllb-clip-large-siglip.json
NLLB_BASE_SIGLIP = {
    "embed_dim": 768, "custom_text": True, "init_logit_bias": -10,
    "vision_cfg": {"image_size": 384, "timm_model_name": "vit_base_patch16_siglip_384", "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"hf_model_name": "facebook/nllb-200-distilled-600M",
                 "hf_tokenizer_name": "facebook/nllb-200-distilled-600M", "hf_proj_type": "linear",
                 "hf_pooler_type": "cls_pooler"},
}  # fmt: skip
NLLB_LARGE_SIGLIP = {
    **NLLB_BASE_SIGLIP, "embed_dim": 1152,
    "vision_cfg": {**NLLB_BASE_SIGLIP["vision_cfg"], "timm_model_name": "vit_so400m_patch14_siglip_384"},
    "text_cfg": {**NLLB_BASE_SIGLIP["text_cfg"], "hf_model_name": "facebook/nllb-200-distilled-1.3B",
                 "hf_tokenizer_name": "facebook/nllb-200-distilled-1.3B"},
}  # fmt: skip
SIGLIP_PREPROCESS = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", "resize_mode": "squash"}


def record(case: str) -> dict:
    return json.loads((ASSETS / f"{case}.json").read_text())


def hf_folder(case: str, folder: Path) -> Path:
    """The tiny text model's transformers config folder (open_clip's hf_model_name names it)."""
    hf = folder / f"{case}_hf"
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "config.json").write_text(json.dumps(record(case)["hf_config"]))
    return hf


def tiny_config(case: str, folder: Path) -> ModelConfig:
    """Our config of a golden case: open_clip's model config read by the adapter (the full-size timm
    tower's options, the text model of the case's folder), with the tiny image tower's sizes."""
    data = record(case)
    model_cfg = {**data["model_cfg"], "text_cfg": {**data["model_cfg"]["text_cfg"],
                 "hf_model_name": str(hf_folder(case, folder))}}  # fmt: skip
    full_width = open_clip_siglip.image_tower(model_cfg).width  # no image projection: embed_dim is the width
    cfg = open_clip_hf_text.config_from({**model_cfg, "embed_dim": full_width}, name=case)
    tiny = data["tiny"]
    return cfg.replace(embed_dim=tiny["width"], vision=dataclasses.replace(cfg.vision, **tiny))


def imported(case: str, folder: Path, weights: Path | None = None):
    path = folder / f"{case}.config.json"
    path.write_text(tiny_config(case, folder).to_json())
    return import_model(weights or ASSETS / f"{case}.safetensors", model=path)


def tiny_open_clip_folder(case: str, folder: Path, monkeypatch) -> Path:
    """An open_clip folder as the Hub holds one (open_clip_config.json + weights), its timm tower named
    by the tiny sizes: the adapter's size table learns them for the test."""
    tiny = record(case)["tiny"]
    size = "base" if "base" in case else "so400m"
    hidden = round(tiny["width"] * tiny["mlp_ratio"])
    shape = (tiny["width"], tiny["layers"], tiny["width"] // tiny["head_width"], hidden)
    monkeypatch.setitem(open_clip_siglip._TIMM_SIZES, size, shape)
    data = record(case)
    timm_name = f"vit_{size}_patch{tiny['patch_size']}_siglip_{tiny['image_size']}"
    model_cfg = {**data["model_cfg"],
                 "vision_cfg": {**data["model_cfg"]["vision_cfg"], "timm_model_name": timm_name,
                                "image_size": tiny["image_size"]},
                 "text_cfg": {**data["model_cfg"]["text_cfg"],
                              "hf_model_name": str(hf_folder(case, folder))}}  # fmt: skip
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    shutil.copy(ASSETS / f"{case}.safetensors", folder / "open_clip_model.safetensors")
    return folder


@pytest.mark.parametrize("case", CASES)
def test_open_clip_nllb_siglip_models_import_with_open_clips_outputs(case, tmp_path):
    got = imported(case, tmp_path)
    assert got.format == "open_clip"
    cfg = got.model.config
    assert (cfg.act, cfg.vision.pool, cfg.vision.norm_eps, cfg.text.kind, cfg.objective) == (
        "gelu", "map", 1e-6, "m2m100", "sigmoid"
    )  # fmt: skip
    expected = load_file(ASSETS / f"{case}.expected.safetensors")
    image, text = golden_diffs(got.model, expected)
    assert image <= 1e-5 and text <= 1e-5
    # the tanh approximation, which the SigLIP weights' own towers use, is not what open_clip computes here
    tanh = dataclasses.replace(got.model.config, act="gelu_tanh")
    (tmp_path / "tanh.json").write_text(tanh.to_json())
    other = import_model(ASSETS / f"{case}.safetensors", model=tmp_path / "tanh.json").model
    with torch.no_grad():  # 3x the tolerance (measured: 9.2e-5 base, 4.6e-5 large)
        assert max_diff(other.encode_image(expected["images"]), expected["image_features"]) > 3e-5
    sd = load_file(ASSETS / f"{case}.safetensors")
    assert float(got.model.logit_bias) == float(sd["logit_bias"])


def test_a_pytorch_bin_file_imports_too(tmp_path):
    case = CASES[0]
    weights = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(load_file(ASSETS / f"{case}.safetensors"), weights)
    expected = load_file(ASSETS / f"{case}.expected.safetensors")
    image, text = golden_diffs(imported(case, tmp_path, weights).model, expected)
    assert image <= 1e-5 and text <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_open_clip_names_round_trip_exactly(case):
    sd = load_file(ASSETS / f"{case}.safetensors")
    ours = open_clip_hf_text.state_dict_from(sd)
    assert not any(k.startswith(("visual.trunk.", "text.transformer.layers.")) for k in ours)
    back = open_clip_hf_text.state_dict_to(ours)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_open_clip_configs_are_the_named_architectures(tmp_path):
    base = open_clip_hf_text.config_from(NLLB_BASE_SIGLIP, name="nllb-clip-base-siglip")
    assert base == get_model_config("nllb-clip-base-siglip")
    v, t = base.vision, base.text
    assert (base.act, base.norm_eps, base.init_logit_bias, base.embed_dim) == ("gelu", 1e-5, -10.0, 768)
    assert (v.image_size, v.patch_size, v.width, v.pool, v.project, v.norm_eps) == (384, 16, 768, "map", False, 1e-6)
    assert (t.kind, t.width, t.layers, t.pool, t.proj) == ("m2m100", 1024, 12, "first", "linear")
    assert base.preprocess == dataclasses.replace(base.preprocess, **SIGLIP_PREPROCESS)
    large = open_clip_hf_text.config_from(NLLB_LARGE_SIGLIP, name="nllb-clip-large-siglip")
    assert large == get_model_config("nllb-clip-large-siglip")
    assert (large.vision.width, large.vision.layers, large.vision.patch_size, int(1152 * large.vision.mlp_ratio)) == (
        1152, 27, 14, 4304
    )  # fmt: skip
    assert (large.text.layers, large.text.mlp_ratio, large.act) == (24, 8.0, "gelu")
    for cfg in (base, large):  # back to open_clip and again
        out = open_clip_hf_text.config_to(cfg)
        assert out["vision_cfg"]["timm_model_name"] in ("vit_base_patch16_siglip_384", "vit_so400m_patch14_siglip_384")
        assert open_clip_hf_text.config_from(out, name=cfg.name) == cfg
    # an open_clip_config.json folder picks this adapter
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": NLLB_BASE_SIGLIP, "preprocess_cfg": {}}))
    assert resolve_model_config(tmp_path / "open_clip_config.json").replace(name=base.name) == base
    # the plain NLLB-CLIP large (ViT-H/14 beside the 1.3B encoder) is named too
    plain_large = {"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80,
                   "patch_size": 14}, "text_cfg": {**NLLB_LARGE_SIGLIP["text_cfg"]}}  # fmt: skip
    assert open_clip_hf_text.config_from(plain_large, name="nllb-clip-large") == get_model_config("nllb-clip-large")


def test_timm_activation_table_and_unsupported_options():
    assert open_clip_siglip.timm_act("vit_base_patch16_siglip_384") == "gelu"  # timm's original towers
    assert open_clip_siglip.timm_act("vit_so400m_patch14_siglip_384") == "gelu"
    assert open_clip_siglip.timm_act("vit_so400m_patch16_siglip_384") == "gelu_tanh"  # SigLIP 2's
    with pytest.raises(ConfigError, match="timm_pool"):
        open_clip_hf_text.config_from({**NLLB_BASE_SIGLIP, "vision_cfg": {**NLLB_BASE_SIGLIP["vision_cfg"],
                                                                          "timm_pool": "avg"}})  # fmt: skip
    with pytest.raises(ConfigError, match="differs from the image width"):
        open_clip_hf_text.config_from({**NLLB_BASE_SIGLIP, "embed_dim": 512})
    with pytest.raises(ConfigError, match="unknown open_clip option.*multimodal_cfg"):
        open_clip_hf_text.config_from({**NLLB_BASE_SIGLIP, "multimodal_cfg": {}})
    base = get_model_config("nllb-clip-base-siglip")
    with pytest.raises(ValueError, match="vit_base_patch16_siglip_384 is a SigLIP ViT with gelu"):
        open_clip_hf_text.config_to(base.replace(act="gelu_tanh"))  # not what timm builds for that tower


@pytest.mark.parametrize("case", CASES)
def test_open_clip_folder_imports_and_exports_back(case, tmp_path, monkeypatch):
    folder = tiny_open_clip_folder(case, tmp_path / "oc", monkeypatch)
    got = import_model(folder)
    expected = load_file(ASSETS / f"{case}.expected.safetensors")
    assert max(golden_diffs(got.model, expected)) <= 1e-5
    with pytest.raises(ValueError, match="no XLM-RoBERTa / NLLB text tower; export it to open_clip"):
        export_hf(got.model, tmp_path / "hf")
    hf_name = str(folder / f"{case}_hf")
    monkeypatch.setitem(open_clip_hf_text.HF_TEXT_CONFIGS, hf_name, record(case)["hf_config"])
    out = export_open_clip(got.model, tmp_path / "out")
    written = load_file(out / "open_clip_model.safetensors")
    assert written.keys() == load_file(ASSETS / f"{case}.safetensors").keys()
    saved = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    source = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    assert saved["vision_cfg"]["timm_model_name"] == source["vision_cfg"]["timm_model_name"]
    assert (saved["init_logit_bias"], saved["text_cfg"]["hf_model_name"]) == (-10.0, hf_name)
    back = import_model(out).model
    assert back.config.replace(name="x") == got.model.config.replace(name="x")
    with torch.no_grad():
        assert torch.equal(back.encode_image(expected["images"]), got.model.encode_image(expected["images"]))
        assert torch.equal(back.encode_text(expected["tokens"]), got.model.encode_text(expected["tokens"]))


@pytest.mark.full_suite
def test_convert_and_load_score_with_the_logit_bias(tmp_path, monkeypatch):
    case = CASES[0]
    path = convert(tiny_open_clip_folder(case, tmp_path / "oc", monkeypatch), tmp_path / "ck", vocab=NLLB_VOCAB)
    loaded = load(path, device="cpu", precision="fp32")
    assert loaded.model.config.objective == "sigmoid" and loaded.tokenizer.clean == "whitespace"
    expected = load_file(ASSETS / f"{case}.expected.safetensors")
    assert max(golden_diffs(loaded.model, expected)) <= 1e-5


def test_registry_entries_name_the_weights_and_the_tokenizer_repo():
    for name, repo, text_model in [
        ("nllb-clip-base-siglip/v1", "visheratin/nllb-clip-base-siglip", "600M"),
        ("nllb-clip-base-siglip/mrl", "visheratin/nllb-siglip-mrl-base", "600M"),
        ("nllb-clip-large-siglip/v1", "visheratin/nllb-clip-large-siglip", "1.3B"),
        ("nllb-clip-large-siglip/mrl", "visheratin/nllb-siglip-mrl-large", "1.3B"),
        ("nllb-clip-large/v1", "visheratin/nllb-clip-large-oc", "1.3B"),
    ]:
        entry = get_pretrained(name)
        vocab = f"hf-hub:facebook/nllb-200-distilled-{text_model}"
        assert (entry.hf_hub, entry.format, entry.act, entry.tokenizer) == (repo, "open_clip", "gelu", vocab)
        cfg = get_model_config(entry.architecture)
        assert cfg.text.kind == "m2m100"
        if "siglip" in name:
            assert cfg.objective == "sigmoid" and entry.preprocess_config() == cfg.preprocess
