"""EVA-CLIP (EVA-02) and PE-Core: the image-tower options (2-D RoPE, SwiGLU, sub-LN, a class token
beside attention pooling) against open_clip's outputs with timm ``Eva`` towers, recorded in
tests/assets/families by make_golden.py (open_clip 3.3.0 + timm 1.0.31, tiny towers built by timm's
registered model functions), open_clip's configs and names both ways."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from convert_utils import golden_diffs
from safetensors.torch import load_file

from clipforge.config import ConfigError, ModelConfig, TextConfig, VisionConfig
from clipforge.convert import ConvertError, export_hf, export_open_clip, import_model, open_clip_eva
from clipforge.convert.sources import resolve_model_config
from clipforge.models import CLIP, get_model_config
from clipforge.models.rope import Rope2D, apply_rope

ASSETS = Path(__file__).parent / "assets" / "families"
CASES = ("eva02_tiny", "pe_core_tiny")
# open_clip's own model configs (open_clip/model_configs/EVA02-B-16.json, PE-Core-B-16.json)
EVA02_B16 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "timm_model_name": "eva02_base_patch16_clip_224",
                   "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    "custom_text": True,
}  # fmt: skip
PE_CORE_B16 = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_pe_core_base_patch16_224",
                   "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": None},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
    "custom_text": True,
}  # fmt: skip
PE_PREPROCESS = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "resize_mode": "squash"}


def tiny_config(case: str) -> ModelConfig:
    """Our config of a golden case: open_clip's model config read by the adapter (the full-size timm
    tower's options), with the tiny trunk's sizes."""
    data = json.loads((ASSETS / f"{case}.json").read_text())
    cfg = open_clip_eva.config_from(data["model_cfg"], name=case)
    return cfg.replace(vision=dataclasses.replace(cfg.vision, **data["tiny"]))


def config_file(case: str, folder: Path) -> Path:
    path = folder / f"{case}.config.json"
    path.write_text(tiny_config(case).to_json())
    return path


def imported(case: str, folder: Path):
    return import_model(ASSETS / f"{case}.safetensors", model=config_file(case, folder))


@pytest.mark.parametrize("case", CASES)
def test_open_clip_eva_models_import_with_open_clips_outputs(case, tmp_path):
    got = imported(case, tmp_path)
    assert got.format == "open_clip"
    image, text = golden_diffs(got.model, load_file(ASSETS / f"{case}.expected.safetensors"))
    assert image <= 1e-5 and text <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_open_clip_names_round_trip_exactly(case, tmp_path):
    sd = load_file(ASSETS / f"{case}.safetensors")
    ours = open_clip_eva.state_dict_from(sd)
    assert not any(k.startswith("visual.trunk.") for k in ours)
    back = open_clip_eva.state_dict_to(ours)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # EVA-02 has no k bias: imported as zeros, dropped on export (softmax ignores it)
    if case == "eva02_tiny":
        c = sd["visual.trunk.blocks.0.attn.q_proj.weight"].shape[0]
        assert not ours["visual.transformer.blocks.0.attn.qkv.bias"][c : 2 * c].any()


def test_open_clip_configs_are_the_named_architectures(tmp_path):
    eva = open_clip_eva.config_from(EVA02_B16, name="EVA02-B-16")
    assert eva == get_model_config("EVA02-B-16")
    v = eva.vision
    assert (v.rope, v.rope_axes, v.rope_ref_grid, v.mlp, v.sub_ln, v.norm_eps, v.pool) == (
        True, "hw", 16, "swiglu", True, 1e-6, "cls"
    )  # fmt: skip
    assert int(v.width * v.mlp_ratio) == 2048  # timm's SwiGLU hidden width for EVA02-B
    pe = open_clip_eva.config_from(PE_CORE_B16, name="PE-Core-B-16", preprocess=PE_PREPROCESS)
    assert pe == get_model_config("PE-Core-B-16")
    assert (pe.vision.class_token, pe.vision.pool, pe.vision.pool_heads, pe.vision.rope_axes) == (True, "map", 8, "wh")
    assert pe.preprocess.interpolation == "bilinear" and pe.text.context_length == 32
    for cfg in (eva, pe):  # back to open_clip and again
        assert open_clip_eva.config_from(open_clip_eva.config_to(cfg), name=cfg.name).replace(
            preprocess=cfg.preprocess
        ) == cfg
    # an open_clip_config.json folder picks this adapter
    folder_config = {"model_cfg": PE_CORE_B16, "preprocess_cfg": PE_PREPROCESS}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(folder_config))
    assert resolve_model_config(tmp_path / "open_clip_config.json").replace(name="PE-Core-B-16") == pe


def test_unsupported_open_clip_options_are_named():
    with pytest.raises(ConfigError, match="timm_pool"):
        open_clip_eva.config_from({**EVA02_B16, "vision_cfg": {**EVA02_B16["vision_cfg"], "timm_pool": "avg"}})
    with pytest.raises(ConfigError, match="takes 224 px"):
        open_clip_eva.config_from({**EVA02_B16, "vision_cfg": {**EVA02_B16["vision_cfg"], "image_size": 256}})
    with pytest.raises(ConfigError, match="not a supported timm Eva tower"):
        open_clip_eva.config_from({**EVA02_B16, "vision_cfg": {"timm_model_name": "eva02_enormous_patch14_clip_224"}})
    with pytest.raises(ConfigError, match="no_causal_mask"):  # the text tower is checked by open_clip's adapter
        open_clip_eva.config_from({**EVA02_B16, "text_cfg": {**EVA02_B16["text_cfg"], "no_causal_mask": True}})


def test_weights_need_a_matching_architecture(tmp_path):
    weights = ASSETS / "eva02_tiny.safetensors"
    no_config = r'EVA-02 / PE-Core weights without their open_clip_config.json: pass `model="NAME"`'
    with pytest.raises(ConvertError, match=no_config):
        import_model(weights)
    with pytest.raises(ConvertError, match="not an EVA-02 / PE-Core architecture"):
        import_model(weights, model="ViT-B-16-SigLIP")


@pytest.mark.parametrize("case", CASES)
def test_export_open_clip_and_refuse_hf(case, tmp_path, monkeypatch):
    model = imported(case, tmp_path).model
    with pytest.raises(ValueError, match="no EVA-02 / PE-Core image tower"):
        export_hf(model, tmp_path / "hf")
    with pytest.raises(ValueError, match="timm's named models only"):  # a tiny tower has no timm model name
        export_open_clip(model, tmp_path / "oc")
    # give the tiny tower a timm name (as the named ones have): it exports, and the folder imports back
    v = model.config.vision
    family = open_clip_eva.family_of(v)
    tower = open_clip_eva._Tower(family, v.width, v.layers, v.heads, v.patch_size, v.image_size, v.rope_ref_grid)
    monkeypatch.setitem(open_clip_eva._TOWERS, f"{case}_test", tower)
    out = export_open_clip(model, tmp_path / "oc")
    assert load_file(out / "open_clip_model.safetensors").keys() == load_file(ASSETS / f"{case}.safetensors").keys()
    back = import_model(out)
    assert back.model.config.replace(name="x") == model.config.replace(name="x")
    images = torch.randn(2, 3, v.image_size, v.image_size)
    with torch.no_grad():
        assert torch.equal(back.model.encode_image(images), model.encode_image(images))


def _replace(cfg, **changes):
    return dataclasses.replace(cfg, **changes)


def test_rope_scores_depend_only_on_the_offset_between_patches():
    """With no reference-grid rescaling, RoPE'd q . k depends on (row, column) offsets alone."""
    cfg = VisionConfig(image_size=48, patch_size=8, width=32, head_width=16, rope=True, rope_offset=1.0)
    cos, sin = Rope2D(cfg, 6).cos_sin(torch.device("cpu"))  # (36, 16)
    q, k = torch.randn(16), torch.randn(16)
    rot = lambda v: apply_rope(v.expand(1, 1, 36, 16), cos, sin, prefix=0)[0, 0]  # (36, 16)  # noqa: E731
    scores = (rot(q)[:, None] * rot(k)[None]).sum(-1).view(6, 6, 6, 6)  # (qr, qc, kr, kc)
    assert torch.allclose(scores[0, 0, 1, 2], scores[3, 2, 4, 4], atol=1e-5)  # offset (1, 2) twice
    assert not torch.allclose(scores[0, 0, 1, 2], scores[0, 0, 2, 1], atol=1e-3)  # the axes differ
    # "hw" and "wh" swap which half of the pairs follows the rows
    hw = Rope2D(cfg, 6).cos_sin(torch.device("cpu"))[0].view(6, 6, 16)
    wh = Rope2D(_replace(cfg, rope_axes="wh"), 6).cos_sin(torch.device("cpu"))[0].view(6, 6, 16)
    assert torch.equal(hw[..., :8], wh[..., 8:]) and torch.equal(hw[..., 8:], wh[..., :8])
    assert not torch.equal(hw[..., :8], hw[..., 8:])
    # a class token (prefix) is left as it is
    x = torch.randn(1, 2, 37, 16)
    assert torch.equal(apply_rope(x, cos, sin, prefix=1)[:, :, 0], x[:, :, 0])


def test_family_options_train_with_checkpointing_and_validate():
    cfg = tiny_config("eva02_tiny")
    net = CLIP(cfg)
    net.set_grad_checkpointing(True)
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(1, 500, (2, 16))
    out = net(images, tokens)
    (out.image_features @ out.text_features.T).sum().backward()
    assert net.visual.transformer.blocks[0].mlp.fc1_gate.weight.grad is not None
    for bad, match in [
        (dict(rope=True, head_width=18, width=36), "divisible by 4"),
        (dict(pool="cls", class_token=False), "cannot be false"),
        (dict(pool_heads=4), "needs vision.pool='map'"),
        (dict(mlp="geglu"), "vision.mlp"),
        (dict(proj_bias=True, project=False), "proj_bias"),
    ]:
        with pytest.raises(ConfigError, match=match):
            ModelConfig(embed_dim=cfg.vision.width, vision=_replace(cfg.vision, **bad), text=TextConfig()).validate()
    with pytest.raises(ConfigError, match="ViT options"):
        VisionConfig(kind="resnet", layers=(1, 1, 1, 1), width=8, rope=True).validate()


def test_saved_checkpoint_keeps_the_options(tmp_path):
    from clipforge.checkpoint import load_checkpoint, save_checkpoint

    net = CLIP(tiny_config("pe_core_tiny")).eval()
    model, _ = load_checkpoint(save_checkpoint(tmp_path / "pe.safetensors", net))
    assert model.config == net.config
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), net.encode_image(images))


def test_a_trained_k_bias_is_refused_on_export(tmp_path, monkeypatch):
    """EVA-02's format has no k bias, and under RoPE a non-zero one changes the attention: refused,
    not dropped."""
    model = imported("eva02_tiny", tmp_path).model
    v = model.config.vision
    tower = open_clip_eva._Tower("eva02", v.width, v.layers, v.heads, v.patch_size, v.image_size, v.rope_ref_grid)
    monkeypatch.setitem(open_clip_eva._TOWERS, "eva02_tiny_test", tower)
    with torch.no_grad():
        bias = model.visual.transformer.blocks[1].attn.qkv.bias  # (3C,)
        bias[v.width : 2 * v.width] = 0.1
    with pytest.raises(ConvertError, match=r"blocks\.1\.attn\.qkv\.bias: the k part is not zero"):
        export_open_clip(model, tmp_path / "oc")
