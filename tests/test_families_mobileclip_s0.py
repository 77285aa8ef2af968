"""Apple's original MobileCLIP-S0 (MCi0 image tower, Apple's MCT text tower: RepMixer conv blocks around
Transformer blocks), loaded from Apple's own checkpoint layout (``mobileclip_s0.pt``): against the outputs
of Apple's ``mobileclip`` package (github.com/apple/ml-mobileclip, commit 4144bb1f), recorded in
tests/assets/families by make_golden_apple_mobileclip.py for a shrunk random model, with and without
folding the train-time branches (Apple's own ``reparameterize_model`` outputs and folded weights too)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from convert_utils import golden_diffs, max_diff, small_tokenizer
from hub_fixtures import hub_repo, registry_with
from safetensors.torch import load_file

import clipforge
from clipforge.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from clipforge.config import ConfigError, TextConfig
from clipforge.convert import ConvertError, apple_mobileclip, export_hf, export_open_clip, import_model
from clipforge.convert.detect import classify_keys
from clipforge.models import CLIP, get_model_config
from clipforge.models.text_mct import ConvMixerBlock, MCTTextTower
from clipforge.pretrained import get_pretrained, resolve_model

ASSETS = Path(__file__).parent / "assets" / "families"
CASE = "apple_mobileclip_s0_tiny"
# Apple's own model configs (mobileclip/configs/mobileclip_s0.json, mobileclip_s1.json)
_APPLE_TEXT = {"context_length": 77, "vocab_size": 49408, "dim": 512, "ffn_multiplier_per_layer": 4.0,
               "n_heads_per_layer": 8, "norm_layer": "layer_norm_fp32", "causal_masking": False}  # fmt: skip
APPLE_S0 = {"embed_dim": 512, "image_cfg": {"image_size": 256, "model_name": "mci0"},
            "text_cfg": {**_APPLE_TEXT, "n_transformer_layers": 4, "model_name": "mct"}}  # fmt: skip
APPLE_S1 = {"embed_dim": 512, "image_cfg": {"image_size": 256, "model_name": "mci1"},
            "text_cfg": {**_APPLE_TEXT, "n_transformer_layers": 12, "model_name": "base"}}  # fmt: skip


def expected() -> dict[str, torch.Tensor]:
    return load_file(ASSETS / f"{CASE}.expected.safetensors")


def text_diff(model: CLIP, key: str) -> float:
    exp = expected()
    with torch.no_grad():
        return max_diff(model.encode_text(exp["tokens"]), exp[key])


def test_apple_s0_imports_with_apples_outputs_unfolded_and_folded():
    exp = expected()
    branches = import_model(ASSETS / f"{CASE}.safetensors", reparameterize=False)
    assert branches.format == "apple_mobileclip"
    b = branches.model
    assert b.config.text.kind == "mct" and not b.config.text.reparameterized and not b.text.reparameterized
    assert not b.config.vision.reparameterized and not b.config.text.causal
    folded = import_model(ASSETS / f"{CASE}.safetensors").model  # the default: folded for inference
    assert folded.config.text.reparameterized and folded.text.reparameterized
    assert folded.config.vision.reparameterized and folded.visual.reparameterized
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.text.conv_in.token_mixer.modules())
    assert sum(p.numel() for p in folded.parameters()) < sum(p.numel() for p in b.parameters())
    for model in (b, folded):
        assert max(golden_diffs(model, exp)) <= 1e-5
        assert golden_diffs(model, exp, image_key="image_features_reparameterized")[0] <= 1e-5
        assert text_diff(model, "text_features_reparameterized") <= 1e-5


def test_weights_folded_by_apple_import_as_folded_towers():
    """What Apple's reparameterize_model leaves (recorded by the generator) is our folded layout."""
    got = import_model(ASSETS / f"{CASE}.folded.safetensors", reparameterize=False).model
    assert got.config.vision.reparameterized and got.config.text.reparameterized
    assert max(golden_diffs(got, expected(), image_key="image_features_reparameterized")) <= 1e-5
    assert text_diff(got, "text_features_reparameterized") <= 1e-5
    assert apple_mobileclip.folded_towers(load_file(ASSETS / f"{CASE}.safetensors")) == (False, False)


def test_the_conv_blocks_matter_and_fold_exactly():
    """A check of the check: the MCT conv blocks change the text features, and one block folds exactly."""
    model = import_model(ASSETS / f"{CASE}.safetensors", reparameterize=False).model
    with torch.no_grad():
        model.text.conv_out.gamma.zero_()
        model.text.conv_out.token_mixer.gamma.zero_()  # conv_out is now the identity
    assert text_diff(model, "text_features") > 1e-3
    torch.manual_seed(0)
    block = ConvMixerBlock(16, 5, 2.0, folded=False).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5), m.running_var.uniform_(0.5, 2)
        x = torch.randn(3, 9, 16)
        before = block(x)
        block.token_mixer.fold()
        assert block.token_mixer.conv is None and block.token_mixer.reparam_conv is not None
        assert max_diff(block(x), before) <= 1e-5


def test_folded_config_rebuilds_the_folded_layout_and_round_trips_as_a_checkpoint(tmp_path):
    model = import_model(ASSETS / f"{CASE}.safetensors", reparameterize=False).model
    exp = expected()
    model.reparameterize()
    again = CLIP(model.config).eval()  # a config saying "reparameterized" builds the folded layout
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again.encode_text(exp["tokens"]), model.encode_text(exp["tokens"]))
    assert model.reparameterize() is model  # folding twice changes nothing
    path = save_checkpoint(tmp_path / "s0.safetensors", model)
    assert read_checkpoint_info(path).config.text.reparameterized
    loaded, _ = load_checkpoint(path)
    assert max(golden_diffs(loaded, exp)) <= 1e-5


def test_the_goldens_apple_config_is_what_the_shapes_say():
    """The generator's Apple config (text shrunk through it) with the tiny image tower's sizes is the
    architecture clipforge reads from the golden's tensor shapes."""
    data = json.loads((ASSETS / f"{CASE}.json").read_text())
    cfg = apple_mobileclip.config_from(data["apple_cfg"], name="tiny")
    tiny = {**data["tiny"], "layers": tuple(data["tiny"]["layers"])}
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, **tiny))
    inferred = apple_mobileclip.infer_config(load_file(ASSETS / f"{CASE}.safetensors"), name="tiny")
    assert inferred.replace(vision=dataclasses.replace(inferred.vision, image_size=tiny["image_size"])) == cfg


def test_a_given_architecture_must_match_the_weights(tmp_path):
    weights = ASSETS / f"{CASE}.safetensors"
    with pytest.raises(ConvertError, match="does not match model config MobileCLIP-S0: vision.width: 64 vs 8"):
        import_model(weights, model="MobileCLIP-S0")
    inferred = import_model(weights, reparameterize=False).model.config
    (tmp_path / "tiny.json").write_text(inferred.replace(name="tiny-s0").to_json())
    got = import_model(weights, model=tmp_path / "tiny.json")
    assert got.model.config.name == "tiny-s0" and got.model.config.text.reparameterized
    with pytest.raises(ConvertError, match="not an Apple MobileCLIP checkpoint"):
        import_model(ASSETS / "mobileclip_s_tiny.safetensors", format="apple_mobileclip", model="MobileCLIP2-S0")
    assert classify_keys(load_file(ASSETS / f"{CASE}.safetensors")) == "apple_mobileclip"


def test_apples_configs_are_the_named_architectures(tmp_path):
    s0 = apple_mobileclip.config_from(APPLE_S0, name="MobileCLIP-S0")
    assert s0 == get_model_config("MobileCLIP-S0")
    t = s0.text
    assert (t.kind, t.layers, t.width, t.heads, t.conv_kernel, t.causal, t.pool) == ("mct", 4, 512, 8, 11, False, "eot")
    v = s0.vision
    assert (v.kind, v.width, v.layers, v.attention_stages, v.se_stages) == ("fastvit", 64, (2, 6, 10, 2), 1, 2)
    assert (s0.preprocess.mean, s0.preprocess.std, s0.preprocess.interpolation) == ((0, 0, 0), (1, 1, 1), "bilinear")
    # Apple's S1 (a plain bidirectional text tower) is the architecture open_clip's MobileCLIP-S1 weights have
    assert apple_mobileclip.config_from(APPLE_S1, name="MobileCLIP-S1") == get_model_config("MobileCLIP-S1")
    with torch.device("meta"):  # Apple's published sizes: 11.4M image + 42.4M text parameters (+ our zero bias)
        n = sum(p.numel() for p in CLIP(s0).parameters())
    assert n == 53_848_193
    (tmp_path / "mobileclip_s0.json").write_text(json.dumps({**APPLE_S0, "text_cfg": {**APPLE_S0["text_cfg"],
                                                                                      "no_pos_embedding": True}}))
    with pytest.raises(ConfigError, match="no_pos_embedding"):
        apple_mobileclip.config_from(json.loads((tmp_path / "mobileclip_s0.json").read_text()))
    with pytest.raises(ConfigError, match="not one of Apple's MCi towers"):
        apple_mobileclip.config_from({**APPLE_S0, "image_cfg": {"model_name": "vit_b16"}})


def test_mct_options_are_validated():
    with pytest.raises(ConfigError, match="options of text.kind='mct'"):
        TextConfig(conv_kernel=11).validate()
    with pytest.raises(ConfigError, match="options of text.kind='mct'"):
        TextConfig(reparameterized=True).validate()
    with pytest.raises(ConfigError, match="odd text.conv_kernel"):
        TextConfig(kind="mct", conv_kernel=4, causal=False).validate()
    TextConfig(kind="mct", conv_kernel=11, causal=False).validate()
    assert TextConfig().kind == "clip" and TextConfig().conv_kernel == 0  # the defaults are unchanged


def test_pretrained_entry_names_apples_hub_file():
    entry = get_pretrained("MobileCLIP-S0/datacompdr")
    assert (entry.architecture, entry.format, entry.hf_hub, entry.hub_file) == (
        "MobileCLIP-S0", "apple_mobileclip", "apple/MobileCLIP-S0", "mobileclip_s0.pt"
    )  # fmt: skip
    assert entry.tokenizer == "openai" and entry.preprocess_config().std == (1.0, 1.0, 1.0)


def test_export_is_refused_with_the_reason(tmp_path):
    model = import_model(ASSETS / f"{CASE}.safetensors", reparameterize=False).model
    with pytest.raises(ValueError, match="no MobileCLIP-S0 MCT text tower"):
        export_hf(model, tmp_path / "hf")
    with pytest.raises(ValueError, match="open_clip has no MobileCLIP-S0 MCT text tower"):
        export_open_clip(model, tmp_path / "oc")


def test_training_hooks_know_the_mct_tower():
    model = import_model(ASSETS / f"{CASE}.safetensors", reparameterize=False).model
    assert isinstance(model.text, MCTTextTower)
    model.set_grad_checkpointing(True)
    model.train()
    tokens = expected()["tokens"]
    out = model.encode_text(tokens)
    out.sum().backward()
    assert model.text.conv_in.token_mixer.conv.conv.weight.grad is not None


@pytest.mark.full_suite
def test_loading_by_name_fetches_the_one_hub_file(tmp_path, monkeypatch, isolated_caches):
    """A registry entry with ``hub_file`` (here the tiny S0 with OpenAI's vocabulary size, on a local Hub
    cache) fetches that file only, converts it once, folded, with the train-time model's embeddings."""
    sd = load_file(ASSETS / f"{CASE}.safetensors")
    emb = sd["text_encoder.embedding_layer.weight"]
    torch.manual_seed(0)
    sd["text_encoder.embedding_layer.weight"] = torch.cat([emb, 0.02 * torch.randn(49408 - emb.shape[0], emb.shape[1])])
    repo = tmp_path / "repo"
    repo.mkdir()
    torch.save(sd, repo / "mobileclip_s0.pt")  # Apple's container: a plain pickled state dict
    (repo / "README.md").write_text("not fetched")
    hub_repo(tmp_path / "hf-cache", "acme/s0-tiny", repo)
    branches = import_model(repo / "mobileclip_s0.pt", reparameterize=False).model
    (tmp_path / "arch.json").write_text(branches.config.replace(name="tiny-s0").to_json())
    real = get_model_config
    monkeypatch.setattr(
        "clipforge.convert.sources.get_model_config",
        lambda name: real(tmp_path / "arch.json") if name == "tiny-s0" else real(name),
    )
    entry = {"architecture": "tiny-s0", "act": "gelu", "format": "apple_mobileclip", "hf_hub": "acme/s0-tiny",
             "hub_file": "mobileclip_s0.pt"}  # fmt: skip
    registry_with(monkeypatch, **{"tiny-s0/test": entry})
    model, tokenizer, _ = clipforge.load("tiny-s0/test", precision="fp32")
    assert model.config.text.reparameterized and model.config.vision.reparameterized
    assert read_checkpoint_info(resolve_model("tiny-s0/test").path).config.text.reparameterized  # cached
    for hub_id in ("hf-hub:acme/s0-tiny", "acme/s0-tiny"):  # the repo's Hub id leads to the same entry
        assert resolve_model(hub_id).path == resolve_model("tiny-s0/test").path
    tokens = tokenizer(["a photo of a cat", "ein Foto"])
    assert tokens.shape[1] == 16
    with torch.no_grad():
        assert max_diff(model.encode_text(tokens), branches.encode_text(tokens)) <= 1e-5
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), branches.encode_image(images)) <= 1e-5


def test_infer_config_refuses_other_layouts():
    sd = load_file(ASSETS / f"{CASE}.safetensors")
    del sd["image_encoder.model.head.proj"]
    with pytest.raises(ConfigError, match="no image_encoder.model.head.proj"):
        apple_mobileclip.infer_config(sd)
    assert dataclasses.replace(get_model_config("MobileCLIP-S0").text, reparameterized=True).kind == "mct"


@pytest.mark.parametrize("suffix", [".safetensors", ".folded.safetensors"])
def test_apple_names_round_trip_exactly(suffix):
    sd = load_file(ASSETS / f"{CASE}{suffix}")
    ours = apple_mobileclip.state_dict_from(sd)
    assert not any(k.startswith(("image_encoder.", "text_encoder.")) for k in ours)
    back = apple_mobileclip.state_dict_to(ours)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    ours["visual.proj.bias"] = ours["visual.proj.bias"] + 1.0
    with pytest.raises(ValueError, match="has no bias"):
        apple_mobileclip.state_dict_to(ours)


@pytest.mark.parametrize("keep", [False, True])
def test_cli_converts_apples_file(tmp_path, capsys, keep):
    from clipforge.cli.main import main

    small_tokenizer().save_hf(tmp_path / "vocab")  # the golden's 520-token vocabulary
    argv = ["convert", str(ASSETS / f"{CASE}.safetensors"), str(tmp_path / "out"), "--format", "apple_mobileclip",
            "--vocab", str(tmp_path / "vocab")]  # fmt: skip
    assert main(argv + (["--keep-branches"] if keep else [])) == 0
    out = capsys.readouterr().out
    assert "from apple_mobileclip" in out and "(mct)" in out
    info = read_checkpoint_info(tmp_path / "out" / "model.safetensors")
    assert info.config.text.reparameterized is not keep and info.config.vision.reparameterized is not keep
