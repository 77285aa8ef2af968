"""MobileCLIP S (FastViT / MCi image tower, bidirectional text tower): against open_clip's outputs with
timm ``FastVit`` towers, recorded in tests/assets/families by make_golden_mobileclip.py (open_clip
3.3.0 + timm 1.0.31, tiny towers built by timm's registered ``fastvit_mci0`` / ``fastvit_mci3``), with
and without folding the train-time branches (timm's own ``reparameterize_model`` output recorded
too); open_clip's configs and names both ways. MobileCLIP-B (timm ``vit_base_mci_224``: a ViT with a
conv stem) likewise, as a configuration of clipforge's ViT."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from convert_utils import golden_diffs
from hub_fixtures import hub_repo, registry_with
from safetensors.torch import load_file, save_file

import clipforge
from clipforge.checkpoint import read_checkpoint_info
from clipforge.cli.main import main
from clipforge.config import ConfigError, ModelConfig, TextConfig, VisionConfig
from clipforge.convert import (
    ConvertError,
    export_hf,
    export_open_clip,
    import_model,
    open_clip_eva,
    open_clip_mobileclip,
)
from clipforge.convert.sources import resolve_model_config
from clipforge.models import CLIP, get_model_config
from clipforge.models.fastvit import ConvBN, MobileOneBlock
from clipforge.pretrained import get_pretrained, resolve_model
from clipforge.train.lit import lock_image_tower
from clipforge.train.lora import apply_lora

ASSETS = Path(__file__).parent / "assets" / "families"
CASES = ("mobileclip_s_tiny", "mobileclip2_s3_tiny")
# open_clip's own model configs (open_clip/model_configs/MobileCLIP-S2.json, MobileCLIP2-S3.json)
_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "no_causal_mask": True}
_VISION = {"timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": None, "timm_drop": 0.0,
           "timm_drop_path": 0.0, "image_size": 256}  # fmt: skip
MOBILECLIP_S2 = {"embed_dim": 512, "vision_cfg": {"timm_model_name": "fastvit_mci2", **_VISION}, "text_cfg": _TEXT,
                 "custom_text": True}  # fmt: skip
MOBILECLIP2_S3 = {"embed_dim": 768, "vision_cfg": {"timm_model_name": "fastvit_mci3", **_VISION},
                  "text_cfg": {**_TEXT, "width": 768, "heads": 12}, "custom_text": True}  # fmt: skip


def tiny_config(case: str) -> ModelConfig:
    """Our config of a golden case: open_clip's model config read by the adapter, with the tiny trunk's sizes."""
    data = json.loads((ASSETS / f"{case}.json").read_text())
    cfg = open_clip_mobileclip.config_from(data["model_cfg"], name=case)
    tiny = {**data["tiny"], "layers": tuple(data["tiny"]["layers"])}
    return cfg.replace(vision=dataclasses.replace(cfg.vision, **tiny))


def imported(case: str, folder: Path, **options):
    path = folder / f"{case}.config.json"
    path.write_text(tiny_config(case).to_json())
    return import_model(ASSETS / f"{case}.safetensors", model=path, **options)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.mark.parametrize("case", CASES)
def test_open_clip_mobileclip_imports_with_open_clips_outputs(case, tmp_path):
    expected = load_file(ASSETS / f"{case}.expected.safetensors")
    branches = imported(case, tmp_path, reparameterize=False).model
    assert not branches.config.vision.reparameterized and not branches.visual.reparameterized
    folded = imported(case, tmp_path).model  # the default: folded for inference
    assert folded.config.vision.reparameterized and folded.visual.reparameterized
    assert not any(isinstance(m, (ConvBN, torch.nn.BatchNorm2d)) for m in folded.visual.stem.modules())
    assert sum(p.numel() for p in folded.parameters()) < sum(p.numel() for p in branches.parameters())
    for model in (branches, folded):
        assert max(golden_diffs(model, expected)) <= 1e-5
    assert golden_diffs(folded, expected, image_key="image_features_reparameterized")[0] <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_folding_keeps_the_outputs_and_the_folded_layout_reloads(case, tmp_path):
    model = imported(case, tmp_path, reparameterize=False).model
    images = torch.randn(2, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        before = model.encode_image(images, normalize=False)
        model.reparameterize()
        after = model.encode_image(images, normalize=False)
    assert _max_diff(before, after) <= 1e-5 * max(1.0, float(before.abs().max()))
    assert model.config.vision.reparameterized
    again = CLIP(model.config).eval()  # a config saying "reparameterized" builds the folded layout
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again.encode_image(images, normalize=False), after)
    assert model.reparameterize() is model  # folding twice changes nothing


def test_mobileone_fold_is_exact_per_block():
    torch.manual_seed(0)
    for groups, stride, k in ((1, 1, 3), (8, 1, 3), (8, 2, 3), (1, 1, 1)):
        block = MobileOneBlock(8, 8, k, stride=stride, groups=groups, se_hidden=2).eval()
        with torch.no_grad():
            for m in block.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.5), m.running_var.uniform_(0.5, 2), m.weight.normal_(1, 0.2)
            x = torch.randn(2, 8, 9, 9)
            before = block(x)
            block.fold()
            assert block.conv_kxk is None and block.identity is None and block.conv_scale is None
            assert _max_diff(block(x), before) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_open_clip_names_round_trip_exactly(case):
    sd = load_file(ASSETS / f"{case}.safetensors")
    ours = open_clip_mobileclip.state_dict_from(sd)
    assert not any(k.startswith("visual.trunk.") for k in ours) and "visual.proj.weight" in ours
    back = open_clip_mobileclip.state_dict_to(ours)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_weights_folded_by_timm_import_as_a_reparameterized_tower(tmp_path):
    """Weights saved after timm's reparameterize_model have ``reparam_conv`` layers only."""
    case = "mobileclip_s_tiny"
    model = imported(case, tmp_path).model

    sd = open_clip_mobileclip.state_dict_to(model.state_dict())
    assert any(".reparam_conv." in k for k in sd) and not any(".conv_kxk." in k for k in sd)
    save_file(sd, str(tmp_path / "folded.safetensors"))
    config = tmp_path / f"{case}.config.json"  # written by imported(): the train-time config
    back = import_model(tmp_path / "folded.safetensors", model=config, reparameterize=False).model
    assert back.config.vision.reparameterized
    expected = load_file(ASSETS / f"{case}.expected.safetensors")
    assert golden_diffs(back, expected)[0] <= 1e-5


def test_open_clip_configs_are_the_named_architectures(tmp_path):
    s2 = open_clip_mobileclip.config_from(MOBILECLIP_S2, name="MobileCLIP-S2")
    assert s2 == get_model_config("MobileCLIP-S2")
    v = s2.vision
    assert (v.kind, v.width, v.layers, v.attention_stages, v.se_stages, v.attention_norm) == (
        "fastvit", 80, (4, 12, 24, 4), 1, 2, "batch"
    )  # fmt: skip
    assert not s2.text.causal and s2.text.pool == "eot"  # no_causal_mask: bidirectional, read at argmax
    assert (s2.preprocess.mean, s2.preprocess.std, s2.preprocess.interpolation) == ((0, 0, 0), (1, 1, 1), "bilinear")
    s3 = open_clip_mobileclip.config_from(MOBILECLIP2_S3, name="MobileCLIP2-S3")
    assert s3 == get_model_config("MobileCLIP2-S3")
    assert (s3.vision.attention_norm, s3.vision.stem_scale_branch, len(s3.vision.layers)) == ("layer", False, 5)
    for cfg in (s2, s3):  # back to open_clip and again
        assert open_clip_mobileclip.config_to(cfg)["text_cfg"]["no_causal_mask"] is True
        assert open_clip_mobileclip.config_from(open_clip_mobileclip.config_to(cfg), name=cfg.name) == cfg
    folder_config = {"model_cfg": MOBILECLIP_S2, "preprocess_cfg": {"mean": [0.0] * 3, "std": [1.0] * 3,
                                                                    "interpolation": "bilinear"}}  # fmt: skip
    (tmp_path / "open_clip_config.json").write_text(json.dumps(folder_config))
    assert resolve_model_config(tmp_path / "open_clip_config.json").replace(name="MobileCLIP-S2") == s2


def test_pretrained_entries_name_the_architectures():
    for name, arch in (("MobileCLIP-S2/datacompdr", "MobileCLIP-S2"), ("MobileCLIP2-S4/dfndr2b", "MobileCLIP2-S4")):
        entry = get_pretrained(name)
        assert entry.architecture == arch and entry.format == "open_clip" and entry.hf_hub
        assert get_model_config(arch).vision.kind == "fastvit"
    assert get_pretrained("MobileCLIP-S2/datacompdr").preprocess_config().std == (1.0, 1.0, 1.0)


def test_unsupported_options_are_named():
    with pytest.raises(ConfigError, match="timm_pool"):
        vision = {**MOBILECLIP_S2["vision_cfg"], "timm_pool": "token"}
        open_clip_mobileclip.config_from({**MOBILECLIP_S2, "vision_cfg": vision})
    with pytest.raises(ConfigError, match="not a supported timm FastViT tower"):
        open_clip_mobileclip.config_from({**MOBILECLIP_S2, "vision_cfg": {"timm_model_name": "fastvit_sa12"}})
    with pytest.raises(ConfigError, match="scale_fc"):  # the text tower is checked by open_clip's adapter
        open_clip_mobileclip.config_from({**MOBILECLIP_S2, "text_cfg": {**_TEXT, "scale_fc": True}})
    fastvit = VisionConfig(kind="fastvit", image_size=64, width=8, layers=(1, 1, 1, 1), head_width=32)
    with pytest.raises(ConfigError, match="image_size divisible by 32"):
        dataclasses.replace(fastvit, image_size=48).validate()
    with pytest.raises(ConfigError, match="not a multiple of head_width"):
        dataclasses.replace(fastvit, attention_stages=3).validate()  # stages 2, 3: 32, 64 channels; stage 1: 16
    with pytest.raises(ConfigError, match="FastViT options"):
        VisionConfig(reparameterized=True).validate()
    with pytest.raises(ConfigError, match="ViT options"):
        dataclasses.replace(fastvit, rope=True).validate()


def test_weights_need_a_matching_architecture(tmp_path):
    weights = ASSETS / "mobileclip_s_tiny.safetensors"
    no_config = r'MobileCLIP FastViT weights without their open_clip_config.json: pass `model="NAME"`'
    with pytest.raises(ConvertError, match=no_config):
        import_model(weights)
    with pytest.raises(ConvertError, match="not a MobileCLIP FastViT architecture"):
        import_model(weights, model="EVA02-B-16")


def test_export_open_clip_and_refuse_hf(tmp_path, monkeypatch):
    case = "mobileclip_s_tiny"
    model = imported(case, tmp_path, reparameterize=False).model
    with pytest.raises(ValueError, match="no MobileCLIP FastViT image tower"):
        export_hf(model, tmp_path / "hf")
    with pytest.raises(ValueError, match="timm's named MCi models only"):  # a tiny tower has no timm model name
        export_open_clip(model, tmp_path / "oc")
    v = model.config.vision
    tower = open_clip_mobileclip._Tower(v.layers, v.width, v.mlp_ratio, v.attention_stages, v.se_stages,
                                        v.attention_norm, v.stem_scale_branch)  # fmt: skip
    monkeypatch.setitem(open_clip_mobileclip._TOWERS, f"{case}_test", tower)
    out = export_open_clip(model, tmp_path / "oc")
    assert load_file(out / "open_clip_model.safetensors").keys() == load_file(ASSETS / f"{case}.safetensors").keys()
    back = import_model(out, reparameterize=False)
    assert back.model.config.replace(name="x") == model.config.replace(name="x")
    images = torch.randn(2, 3, v.image_size, v.image_size)
    with torch.no_grad():
        assert torch.equal(back.model.encode_image(images), model.encode_image(images))
    with pytest.raises(ValueError, match="reparameterize=False"):
        export_open_clip(model.reparameterize(), tmp_path / "oc2")


def test_text_config_defaults_unchanged_by_the_family():
    """The family's bidirectional text is an adapter reading, not a new default."""
    assert TextConfig().causal and VisionConfig().kind == "vit" and not VisionConfig().uses_fastvit_options


# MobileCLIP-B: a configuration of the ViT (conv stem, positions on the patches only), read by the
# EVA / PE-Core adapter of timm ViT-family towers.
MOBILECLIP_B = {"embed_dim": 512, "vision_cfg": {**_VISION, "timm_model_name": "vit_base_mci_224", "timm_pool": "token",
                                                 "image_size": 224},
                "text_cfg": {**_TEXT, "no_causal_mask": False}, "custom_text": True}  # fmt: skip


def tiny_b_config() -> ModelConfig:
    data = json.loads((ASSETS / "mobileclip_b_tiny.json").read_text())
    cfg = open_clip_eva.config_from(data["model_cfg"], name="mobileclip_b_tiny")
    return cfg.replace(vision=dataclasses.replace(cfg.vision, **data["tiny"]))


def test_open_clip_mobileclip_b_imports_with_open_clips_outputs(tmp_path):
    (tmp_path / "b.json").write_text(tiny_b_config().to_json())
    got = import_model(ASSETS / "mobileclip_b_tiny.safetensors", model=tmp_path / "b.json")
    expected = load_file(ASSETS / "mobileclip_b_tiny.expected.safetensors")
    assert max(golden_diffs(got.model, expected)) <= 1e-5
    sd = load_file(ASSETS / "mobileclip_b_tiny.safetensors")
    back = open_clip_eva.state_dict_to(open_clip_eva.state_dict_from(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_mobileclip_b_config_is_the_named_architecture():
    b = open_clip_eva.config_from(MOBILECLIP_B, name="MobileCLIP-B")
    assert b == get_model_config("MobileCLIP-B")
    assert (b.vision.stem, b.vision.class_pos, b.vision.norm_pre, b.vision.norm_eps) == ("conv", False, False, 1e-6)
    assert b.text.causal and b.preprocess.std == (1.0, 1.0, 1.0)
    assert open_clip_eva.config_from(open_clip_eva.config_to(b), name=b.name).replace(preprocess=b.preprocess) == b
    assert get_pretrained("MobileCLIP-B/datacompdr").architecture == "MobileCLIP-B"
    with pytest.raises(ConfigError, match="16-pixel patches"):
        dataclasses.replace(b.vision, patch_size=14).validate()


def openai_vocab_model() -> CLIP:
    """The tiny MobileCLIP S with OpenAI's vocabulary (what a converted model's tokenizer needs), random
    BatchNorm statistics."""
    cfg = tiny_config("mobileclip_s_tiny")
    cfg = cfg.replace(name="tiny-mobileclip", text=dataclasses.replace(cfg.text, vocab_size=49408))
    torch.manual_seed(0)
    model = CLIP(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3), m.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.full_suite
def test_loading_by_name_gives_the_folded_tower(tmp_path, monkeypatch, isolated_caches):
    """A registry name (here a tiny MobileCLIP S on a local Hub cache, OpenAI's vocabulary) converts once
    into clipforge's cache, folded for inference, with the train-time model's embeddings."""
    branches = openai_vocab_model()
    cfg = branches.config
    repo = tmp_path / "repo"
    repo.mkdir()
    save_file(open_clip_mobileclip.state_dict_to(branches.state_dict()), str(repo / "open_clip_model.safetensors"))
    hub_repo(tmp_path / "hf-cache", "acme/mobileclip-tiny", repo)
    (tmp_path / "arch.json").write_text(cfg.to_json())
    real = get_model_config
    monkeypatch.setattr(
        "clipforge.convert.sources.get_model_config",
        lambda name: real(tmp_path / "arch.json") if name == "tiny-mobileclip" else real(name),
    )
    entry = {"architecture": "tiny-mobileclip", "act": "gelu", "format": "open_clip", "hf_hub": "acme/mobileclip-tiny"}
    registry_with(monkeypatch, **{"tiny-mobileclip/test": entry})
    model, tokenizer, _ = clipforge.load("tiny-mobileclip/test", precision="fp32")
    assert model.config.vision.reparameterized and model.visual.reparameterized
    assert read_checkpoint_info(resolve_model("tiny-mobileclip/test").path).config.vision.reparameterized  # cached
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    tokens = tokenizer(["a photo of a cat", "ein Foto"])
    with torch.no_grad():
        assert _max_diff(model.encode_image(images), branches.encode_image(images)) <= 1e-5
        assert _max_diff(model.encode_text(tokens), branches.encode_text(tokens)) <= 1e-5


def test_lit_locking_and_lora_know_the_fastvit_tower():
    model = CLIP(tiny_config("mobileclip_s_tiny")).eval()
    lock_image_tower(model, unlocked_blocks=1)
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("stages.3.blocks.0.", "final_conv.", "proj.")) for n in trainable)
    assert any(n.startswith("stages.3.blocks.0.") for n in trainable) and "proj.weight" in trainable
    with pytest.raises(ValueError, match="this image tower is a FastViT"):
        apply_lora(model, rank=2, towers=("image",))


@pytest.mark.parametrize("keep", [False, True])
def test_cli_convert_folds_unless_told_to_keep_the_branches(tmp_path, capsys, keep):
    model = openai_vocab_model()
    save_file(open_clip_mobileclip.state_dict_to(model.state_dict()), str(tmp_path / "w.safetensors"))
    (tmp_path / "arch.json").write_text(model.config.to_json())
    argv = ["convert", str(tmp_path / "w.safetensors"), str(tmp_path / "out"), "--model-config"]
    argv.append(str(tmp_path / "arch.json"))
    assert main(argv + (["--keep-branches"] if keep else [])) == 0
    assert ("(train-time branches)" if keep else "(folded)") in capsys.readouterr().out
    info = read_checkpoint_info(tmp_path / "out" / "model.safetensors")
    assert info.config.vision.reparameterized is not keep


def test_mobileclip_b_exports_to_open_clip_only(tmp_path):
    (tmp_path / "b.json").write_text(tiny_b_config().to_json())
    model = import_model(ASSETS / "mobileclip_b_tiny.safetensors", model=tmp_path / "b.json").model
    with pytest.raises(ValueError, match="MobileCLIP-B's conv stem"):
        export_hf(model, tmp_path / "hf")


@pytest.mark.parametrize("case", CASES)
def test_the_folded_layout_has_timms_reparameterized_names(case, tmp_path):
    """What timm's reparameterize_model leaves (recorded by the generator) is exactly our folded tower
    in open_clip's names, so weights saved folded by timm import as they are."""
    folded = imported(case, tmp_path).model
    timm_keys = json.loads((ASSETS / f"{case}.json").read_text())["timm_folded_keys"]
    assert sorted(open_clip_mobileclip.state_dict_to(folded.state_dict())) == timm_keys
