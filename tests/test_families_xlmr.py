"""Multilingual XLM-RoBERTa text towers (open_clip's ``xlm-roberta-*`` models): clipforge's own encoder
tower (``text.kind="roberta"``) against open_clip's ``HFTextEncoder`` outputs, recorded in
tests/assets/families by make_golden_hf_text.py (open_clip 3.3.0 + transformers 5.25, tiny
``XLMRobertaConfig`` towers with random weights, one per pooler: mean, cls, first token), the
token ids of the XLM-R tokenizer, open_clip's configs and names both ways."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipforge.api import load
from clipforge.config import ConfigError, ModelConfig, TextConfig, VisionConfig
from clipforge.convert import ConvertError, convert, export_hf, export_open_clip, import_model, open_clip_hf_text
from clipforge.convert.sources import resolve_model_config
from clipforge.models import CLIP, get_model_config
from clipforge.pretrained import get_pretrained
from clipforge.tokenizer import SentencePieceTokenizer, TokenizerError

ASSETS = Path(__file__).parent / "assets" / "families"
XLMR_VOCAB = Path(__file__).parent / "assets" / "sentencepiece" / "xlmr"
CASES = ("xlmr_tiny", "xlmr_cls_tiny", "xlmr_first_tiny", "nllb_tiny")
TOWERS = {  # case -> (text.kind, pool, proj)
    "xlmr_tiny": ("roberta", "mean", "mlp"),
    "xlmr_cls_tiny": ("roberta", "cls", "linear"),
    "xlmr_first_tiny": ("roberta", "first", "none"),
    "nllb_tiny": ("m2m100", "first", "linear"),  # open_clip's cls_pooler on an encoder without a pooler
}
# the texts make_golden_hf_text.py tokenized with transformers' XLMRobertaTokenizerFast for xlmr_tiny
TEXTS = [
    "a photo of a cat", "一只猫在沙发上", "قطة على الشاطئ", "एक बिल्ली की तस्वीर",
    "Katze 🐈 am Strand, sehr schön und lang!",
]  # fmt: skip
# open_clip's own model configs (open_clip/model_configs/xlm-roberta-*.json)
XLMR_BASE_B32 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
    "text_cfg": {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base",
                 "hf_pooler_type": "mean_pooler"},
}  # fmt: skip
XLMR_LARGE_H14 = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"hf_model_name": "xlm-roberta-large", "hf_tokenizer_name": "xlm-roberta-large",
                 "hf_pooler_type": "mean_pooler"},
}  # fmt: skip


def open_clip_folder(case: str, folder: Path) -> Path:
    """An open_clip folder as the Hub holds one (open_clip_config.json + weights), its text model a
    local transformers config folder (as open_clip accepts for hf_model_name)."""
    data = json.loads((ASSETS / f"{case}.json").read_text())
    hf = folder / f"{case}_hf"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text(json.dumps(data["hf_config"]))
    model_cfg = {**data["model_cfg"], "text_cfg": {**data["model_cfg"]["text_cfg"], "hf_model_name": str(hf)}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    shutil.copy(ASSETS / f"{case}.safetensors", folder / "open_clip_model.safetensors")
    return folder


@pytest.mark.parametrize("case", CASES)
def test_open_clip_xlmr_models_import_with_open_clips_outputs(case, tmp_path):
    got = import_model(open_clip_folder(case, tmp_path / "oc"))
    assert got.format == "open_clip"
    t = got.model.config.text
    assert (t.kind, t.pool, t.proj) == TOWERS[case]
    expected = load_file(ASSETS / f"{case}.expected.safetensors")
    with torch.no_grad():
        image = got.model.encode_image(expected["images"])
        text = got.model.encode_text(expected["tokens"])
    assert text.shape == expected["text_features"].shape
    assert float((image - expected["image_features"]).abs().max()) <= 1e-5
    assert float((text - expected["text_features"]).abs().max()) <= 1e-5
    # the texts are told apart, and padding is masked out of attention and pooling
    assert float((text[0] - text[1]).abs().max()) > 1e-4
    padded = (expected["tokens"][:, -2:] == 1).all(dim=1)  # the texts that end in two <pad>
    assert padded.any() and not padded.all()
    with torch.no_grad():
        shorter = got.model.encode_text(expected["tokens"][padded, :-2])  # the same texts, less padding
    assert torch.allclose(shorter, text[padded], atol=1e-6)


def test_xlmr_tokenizer_ids_are_the_references_and_embed_as_open_clip(tmp_path):
    tok = SentencePieceTokenizer.from_hf_dir(XLMR_VOCAB, context_length=16)
    expected = load_file(ASSETS / "xlmr_tiny.expected.safetensors")
    ids = tok(TEXTS)
    assert torch.equal(ids, expected["tokens"])  # <s> ... </s>, right-padded with <pad> = 1, cut to 16
    model = import_model(open_clip_folder("xlmr_tiny", tmp_path / "oc")).model
    with torch.no_grad():
        text = model.encode_text(ids)
    assert float((text - expected["text_features"]).abs().max()) <= 1e-5


def test_open_clip_names_round_trip_exactly():
    for case in CASES:
        sd = load_file(ASSETS / f"{case}.safetensors")
        ours = open_clip_hf_text.state_dict_from(sd)
        assert not any(k.startswith("text.transformer.encoder.") for k in ours)
        back = open_clip_hf_text.state_dict_to(ours)
        assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd), case


def test_open_clip_configs_are_the_named_architectures():
    base = open_clip_hf_text.config_from(XLMR_BASE_B32, name="xlm-roberta-base-ViT-B-32")
    assert base == get_model_config("xlm-roberta-base-ViT-B-32")
    t = base.text
    assert (t.kind, t.vocab_size, t.width, t.layers, t.heads, t.pool, t.proj, t.pad_id, t.max_positions) == (
        "roberta", 250002, 768, 12, 12, "mean", "mlp", 1, 514
    )  # fmt: skip
    assert (base.act, base.vision.width, base.vision.patch_size) == ("gelu", 768, 32)
    large = open_clip_hf_text.config_from(XLMR_LARGE_H14, name="xlm-roberta-large-ViT-H-14")
    assert large == get_model_config("xlm-roberta-large-ViT-H-14")
    assert (large.text.width, large.text.layers, large.text.heads, large.embed_dim) == (1024, 24, 16, 1024)
    for cfg in (base, large):  # back to open_clip and again
        assert open_clip_hf_text.config_from(open_clip_hf_text.config_to(cfg), name=cfg.name) == cfg
    # "FacebookAI/" Hub names are the same models
    hub = {**XLMR_BASE_B32, "text_cfg": {**XLMR_BASE_B32["text_cfg"], "hf_model_name": "FacebookAI/xlm-roberta-base"}}
    assert open_clip_hf_text.config_from(hub, name=base.name) == base


def test_open_clip_config_json_picks_this_adapter(tmp_path):
    path = tmp_path / "open_clip_config.json"
    path.write_text(json.dumps({"model_cfg": XLMR_BASE_B32, "preprocess_cfg": {}}))
    assert resolve_model_config(path).replace(name="x") == get_model_config("xlm-roberta-base-ViT-B-32").replace(
        name="x"
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"hf_pooler_type": "max_pooler"}, "hf_pooler_type='max_pooler'"),
        ({"hf_proj_type": "conv"}, "hf_proj_type='conv'"),
        ({"hf_proj_type": None}, "hf_proj_type=null needs the text width 768"),
        ({"hf_model_name": "bert-base-uncased"}, "neither a text model clipforge knows"),
        ({"attn_pooler": True}, r"text_cfg\.attn_pooler"),
    ],
)
def test_unsupported_open_clip_options_are_named(change, match):
    cfg = {**XLMR_BASE_B32, "text_cfg": {**XLMR_BASE_B32["text_cfg"], **change}}
    with pytest.raises(ConfigError, match=match):
        open_clip_hf_text.config_from(cfg)


def test_unsupported_hf_text_models_are_named(tmp_path):
    hf = json.loads((ASSETS / "xlmr_tiny.json").read_text())["hf_config"]
    for change, match in [
        ({"model_type": "mt5"}, "model_type 'mt5'"),
        ({"model_type": "m2m_100"}, r"\(m2m_100\) lacks d_model, encoder_attention_heads"),
        ({"hidden_act": "relu"}, "hidden_act='relu'"),
        ({"type_vocab_size": 2}, "type_vocab_size=2"),
    ]:
        (tmp_path / "config.json").write_text(json.dumps({**hf, **change}))
        cfg = {**XLMR_BASE_B32, "text_cfg": {**XLMR_BASE_B32["text_cfg"], "hf_model_name": str(tmp_path)}}
        with pytest.raises(ConfigError, match=match):
            open_clip_hf_text.config_from(cfg)


def test_weights_need_a_matching_architecture(tmp_path):
    weights = ASSETS / "xlmr_tiny.safetensors"
    with pytest.raises(ConvertError, match=r'without their open_clip_config.json: pass `model="NAME"`'):
        import_model(weights)
    with pytest.raises(ConvertError, match="has none"):
        import_model(weights, model="ViT-B-32")


def test_unused_transformers_pooler_weights_are_dropped(tmp_path):
    """open_clip's older checkpoints carry transformers' pooler even where a mean pooler reads none."""
    folder = open_clip_folder("xlmr_tiny", tmp_path / "oc")
    sd = load_file(folder / "open_clip_model.safetensors")
    sd["text.transformer.pooler.dense.weight"] = torch.randn(16, 16)
    sd["text.transformer.pooler.dense.bias"] = torch.randn(16)
    sd["text.transformer.embeddings.position_ids"] = torch.arange(20)[None]
    save_file(sd, folder / "open_clip_model.safetensors")
    expected = load_file(ASSETS / "xlmr_tiny.expected.safetensors")
    with torch.no_grad():
        text = import_model(folder).model.encode_text(expected["tokens"])
    assert float((text - expected["text_features"]).abs().max()) <= 1e-5


def test_convert_needs_the_vocabulary_and_the_checkpoint_loads(tmp_path):
    folder = open_clip_folder("xlmr_tiny", tmp_path / "oc")
    with pytest.raises(ConvertError, match='XLM-RoBERTa / NLLB text tower needs its SentencePiece vocabulary.*vocab="'):
        convert(folder, tmp_path / "no_vocab")
    path = convert(folder, tmp_path / "ck", vocab=XLMR_VOCAB)
    loaded = load(path, device="cpu", precision="fp32")
    assert loaded.model.config.text.kind == "roberta"
    expected = load_file(ASSETS / "xlmr_tiny.expected.safetensors")
    with torch.no_grad():
        text = loaded.model.encode_text(loaded.tokenizer(TEXTS, context_length=16))
    assert float((text - expected["text_features"]).abs().max()) <= 1e-5


def tiny_roberta(**changes) -> ModelConfig:
    text = dict(kind="roberta", context_length=12, vocab_size=50, width=16, layers=2, head_width=8,
                causal=False, pool="mean", pad_id=1, max_positions=14, proj="mlp")  # fmt: skip
    return ModelConfig(
        embed_dim=8, vision=VisionConfig(image_size=16, patch_size=8, width=16, layers=1, head_width=8),
        text=TextConfig(**{**text, **changes}),
    ).validate()  # fmt: skip


def test_encoder_tower_trains_with_checkpointing_and_positions_skip_padding():
    net = CLIP(tiny_roberta(pool="cls", proj="linear"))
    tokens = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    assert net.text.positions(tokens).tolist() == [[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]]
    plain = net.encode_text(tokens)
    net.set_grad_checkpointing(True)
    out = net(torch.randn(2, 3, 16, 16), tokens)
    assert torch.allclose(out.text_features, plain, atol=1e-6)
    (out.image_features @ out.text_features.T).sum().backward()
    assert net.text.transformer.blocks[0].attn.qkv.weight.grad is not None
    assert net.text.pooler.weight.grad is not None and net.text.pos_embed.grad[0].abs().sum() == 0


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(pool="eot"), "pools with 'mean', 'first', 'cls'"),
        (dict(causal=True), "bidirectional"),
        (dict(pad_id=None), "needs text.pad_id"),
        (dict(max_positions=12), "cannot number 12 tokens"),
        (dict(proj="none"), "text.proj='none' needs embed_dim == text.width"),
    ],
)
def test_encoder_tower_config_is_validated(changes, match):
    with pytest.raises(ConfigError, match=match):
        tiny_roberta(**changes)


def test_clip_towers_refuse_encoder_options():
    with pytest.raises(ConfigError, match="options of the encoder towers"):
        TextConfig(pad_id=1).validate()
    with pytest.raises(ConfigError, match="text.kind must be"):
        TextConfig(kind="t5").validate()  # type: ignore[arg-type]


def test_saved_checkpoint_keeps_the_encoder_tower(tmp_path):
    from clipforge.checkpoint import load_checkpoint, save_checkpoint

    net = CLIP(tiny_roberta(pool="first", proj="linear")).eval()
    model, _ = load_checkpoint(save_checkpoint(tmp_path / "x.safetensors", net))
    assert model.config == net.config
    tokens = torch.tensor([[0, 5, 6, 2, 1, 1]])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), net.encode_text(tokens))


def test_export_open_clip_and_refuse_hf(tmp_path, monkeypatch):
    model = import_model(open_clip_folder("xlmr_cls_tiny", tmp_path / "oc")).model
    with pytest.raises(ValueError, match="no XLM-RoBERTa / NLLB text tower; export it to open_clip"):
        export_hf(model, tmp_path / "hf")
    with pytest.raises(ValueError, match="matches none of xlm-roberta-base"):  # a tiny tower has no Hub name
        export_open_clip(model, tmp_path / "out")
    # give the tiny text model a name (as the published ones have): it exports, and the folder imports back
    hf = json.loads((ASSETS / "xlmr_cls_tiny.json").read_text())["hf_config"]
    monkeypatch.setitem(open_clip_hf_text.HF_TEXT_CONFIGS, "xlmr-cls-tiny-test", hf)
    out = export_open_clip(model, tmp_path / "out")
    written = load_file(out / "open_clip_model.safetensors")
    assert written.keys() == load_file(ASSETS / "xlmr_cls_tiny.safetensors").keys()
    saved = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert (saved["hf_model_name"], saved["hf_pooler_type"], saved["hf_proj_type"]) == (
        "xlmr-cls-tiny-test", "cls_pooler", "linear"
    )  # fmt: skip
    back = import_model(out).model
    assert back.config.replace(name="x") == model.config.replace(name="x")
    tokens = load_file(ASSETS / "xlmr_cls_tiny.expected.safetensors")["tokens"]
    with torch.no_grad():
        assert torch.equal(back.encode_text(tokens), model.encode_text(tokens))


def test_registry_entries_name_the_weights_and_the_tokenizer_repo():
    for name, repo, vocab in [
        ("xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
         "hf-hub:FacebookAI/xlm-roberta-base"),
        ("xlm-roberta-large-ViT-H-14/frozen_laion5b_s13b_b90k",
         "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", "hf-hub:FacebookAI/xlm-roberta-large"),
        ("nllb-clip-base/v1", "visheratin/nllb-clip-base-oc", "hf-hub:facebook/nllb-200-distilled-600M"),
    ]:  # fmt: skip
        entry = get_pretrained(name)
        assert (entry.hf_hub, entry.format, entry.act, entry.tokenizer) == (repo, "open_clip", "gelu", vocab)
        assert get_model_config(entry.architecture).text.kind in ("roberta", "m2m100")


@pytest.mark.usefixtures("isolated_caches")  # empty caches, Hub offline
@pytest.mark.full_suite
def test_pretrained_name_loads_weights_and_the_tokenizer_from_two_hub_repos(tmp_path, monkeypatch):
    """As for the published entries: an open_clip repo with only the weights, the vocabulary from the
    text model's own repo (only its tokenizer files are fetched)."""
    from hub_fixtures import hub_repo, registry_with

    from clipforge.models import factory

    configs = tmp_path / "model_configs"  # the built-in configs plus the tiny tower's
    shutil.copytree(factory._config_dir(), configs)
    tiny = import_model(open_clip_folder("xlmr_tiny", tmp_path / "oc")).model.config
    (configs / "xlmr-tiny.json").write_text(tiny.replace(name="xlmr-tiny").to_json())
    monkeypatch.setattr(factory, "_config_dir", lambda: configs)
    weights = tmp_path / "weights_repo"
    weights.mkdir()
    shutil.copy(ASSETS / "xlmr_tiny.safetensors", weights / "open_clip_model.safetensors")
    hub_repo(tmp_path / "hf-cache", "acme/xlmr-tiny-clip", weights)
    hub_repo(tmp_path / "hf-cache", "acme/xlmr-tiny", XLMR_VOCAB)
    entry = {"architecture": "xlmr-tiny", "act": "gelu", "format": "open_clip", "hf_hub": "acme/xlmr-tiny-clip",
             "tokenizer": "hf-hub:acme/xlmr-tiny"}  # fmt: skip
    registry_with(monkeypatch, **{"xlmr-tiny/acme": entry})
    loaded = load("xlmr-tiny/acme", device="cpu", precision="fp32")
    expected = load_file(ASSETS / "xlmr_tiny.expected.safetensors")
    tokens = loaded.tokenizer(TEXTS, context_length=16)
    assert torch.equal(tokens, expected["tokens"])
    with torch.no_grad():
        text = loaded.model.encode_text(tokens)
    assert float((text - expected["text_features"]).abs().max()) <= 1e-5
    with pytest.raises(ValueError, match="tokenizer must be"):
        registry_with(monkeypatch, **{"xlmr-tiny/bad": {**entry, "tokenizer": "acme/xlmr-tiny"}})


def test_open_clip_models_tokenize_with_open_clips_text_clean_up(tmp_path):
    """open_clip's HFTokenizer runs ftfy, html.unescape and whitespace collapsing before the XLM-R
    tokenizer (transformers' alone does not): the converted checkpoint's tokenizer does the same."""
    golden = json.loads((ASSETS / "xlmr_open_clip_tokens.json").read_text())
    texts, want = golden["texts"], torch.tensor(golden["ids"])
    plain = SentencePieceTokenizer.from_hf_dir(XLMR_VOCAB, context_length=16)  # transformers' rules (MetaCLIP 2)
    assert not torch.equal(plain(texts), want)  # curly quotes, "&amp;", mojibake and runs of spaces differ
    path = convert(open_clip_folder("xlmr_tiny", tmp_path / "oc"), tmp_path / "ck", vocab=XLMR_VOCAB)
    tok = load(path, device="cpu", precision="fp32").tokenizer
    assert tok.clean == "whitespace"
    assert torch.equal(tok(texts, context_length=16), want)
    assert torch.equal(plain.with_clean("whitespace")(texts), want)


# open_clip/model_configs/nllb-clip-base.json
NLLB_CLIP_BASE = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
    "text_cfg": {"hf_model_name": "facebook/nllb-200-distilled-600M",
                 "hf_tokenizer_name": "facebook/nllb-200-distilled-600M",
                 "hf_proj_type": "linear", "hf_pooler_type": "cls_pooler"},
}  # fmt: skip
NLLB_VOCAB = ASSETS / "nllb_vocab"


def test_nllb_clip_config_is_the_named_architecture():
    cfg = open_clip_hf_text.config_from(NLLB_CLIP_BASE, name="nllb-clip-base")
    assert cfg == get_model_config("nllb-clip-base")
    t = cfg.text
    assert (t.kind, t.vocab_size, t.width, t.layers, t.heads, t.mlp_ratio, t.pool, t.proj, t.max_positions) == (
        "m2m100", 256206, 1024, 12, 16, 4.0, "first", "linear", 1026
    )  # fmt: skip
    assert open_clip_hf_text.config_from(open_clip_hf_text.config_to(cfg), name=cfg.name) == cfg
    bad = {**NLLB_CLIP_BASE["text_cfg"], "hf_pooler_type": "max_pooler"}
    with pytest.raises(ConfigError, match="hf_pooler_type='max_pooler'"):
        open_clip_hf_text.config_from({**NLLB_CLIP_BASE, "text_cfg": bad})


def test_nllb_tokenizer_ids_are_transformers_and_open_clips(tmp_path):
    """NLLB's layout (<src_lang> text </s>, <pad> = 1) on a generated NLLB-layout vocabulary: transformers'
    NllbTokenizer ids (src_lang eng_Latn, and zho_Hans), and open_clip's HFTokenizer ids (clean-up first)
    through a converted NLLB-CLIP checkpoint."""
    golden = json.loads((ASSETS / "nllb_tokens.json").read_text())
    texts = golden["texts"]
    tok = SentencePieceTokenizer.from_hf_dir(NLLB_VOCAB, context_length=16)
    assert torch.equal(tok(texts), torch.tensor(golden["transformers"]))
    config = json.loads((NLLB_VOCAB / "tokenizer_config.json").read_text())
    zh = tmp_path / "zh"
    shutil.copytree(NLLB_VOCAB, zh)
    (zh / "tokenizer_config.json").write_text(json.dumps({**config, "src_lang": "zho_Hans"}))
    assert torch.equal(SentencePieceTokenizer.from_hf_dir(zh, context_length=16)(texts),
                       torch.tensor(golden["transformers_zho_Hans"]))  # fmt: skip
    # an NLLB-CLIP model converted from open_clip tokenizes as open_clip does (the vocabulary fits the tiny model)
    path = convert(open_clip_folder("nllb_tiny", tmp_path / "oc"), tmp_path / "ck", vocab=NLLB_VOCAB)
    loaded = load(path, device="cpu", precision="fp32")
    assert loaded.model.config.text.kind == "m2m100" and loaded.tokenizer.clean == "whitespace"
    assert torch.equal(loaded.tokenizer(texts, context_length=16), torch.tensor(golden["open_clip"]))
    # written back as an NllbTokenizer folder, it reads the same
    back = SentencePieceTokenizer.from_hf_dir(tok.save_hf(tmp_path / "saved")[0].parent, context_length=16)
    assert torch.equal(back(texts), tok(texts))
    legacy = tmp_path / "legacy"
    shutil.copytree(NLLB_VOCAB, legacy)
    (legacy / "tokenizer_config.json").write_text(json.dumps({**config, "legacy_behaviour": True}))
    with pytest.raises(TokenizerError, match="legacy layout"):
        SentencePieceTokenizer.from_hf_dir(legacy, context_length=16)


@pytest.mark.usefixtures("isolated_caches")  # empty caches, Hub offline
def test_hub_id_fetches_the_tokenizer_its_open_clip_config_names(tmp_path):
    """``hf-hub:`` ids of open_clip repos without tokenizer files: the repo named by the config's
    ``hf_tokenizer_name`` provides it (the laion xlm-roberta repos name ``xlm-roberta-base``)."""
    from hub_fixtures import hub_repo

    folder = open_clip_folder("xlmr_tiny", tmp_path / "oc")
    data = json.loads((folder / "open_clip_config.json").read_text())
    data["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = "acme/xlmr-tiny"
    (folder / "open_clip_config.json").write_text(json.dumps(data))
    hub_repo(tmp_path / "hf-cache", "acme/xlmr-tiny-clip", folder)
    hub_repo(tmp_path / "hf-cache", "acme/xlmr-tiny", XLMR_VOCAB)
    loaded = load("hf-hub:acme/xlmr-tiny-clip", device="cpu", precision="fp32")
    expected = load_file(ASSETS / "xlmr_tiny.expected.safetensors")
    tokens = loaded.tokenizer(TEXTS, context_length=16)
    assert torch.equal(tokens, expected["tokens"])
    with torch.no_grad():
        assert float((loaded.model.encode_text(tokens) - expected["text_features"]).abs().max()) <= 1e-5
    assert open_clip_hf_text.tokenizer_repo(XLMR_BASE_B32) == "FacebookAI/xlm-roberta-base"
    assert open_clip_hf_text.tokenizer_repo(NLLB_CLIP_BASE) == "facebook/nllb-200-distilled-600M"


@pytest.mark.parametrize("case", ["xlmr_tiny", "nllb_tiny"])
@pytest.mark.full_suite
def test_onnx_backend_gives_the_same_text_embeddings(case, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    vocab = XLMR_VOCAB if case == "xlmr_tiny" else ASSETS / "nllb_vocab"
    path = convert(open_clip_folder(case, tmp_path / "oc"), tmp_path / "ck", vocab=vocab)
    plain = load(path, device="cpu", precision="fp32")
    onnx = load(path, device="cpu", precision="fp32", backend="onnx")
    tokens = plain.tokenizer(TEXTS, context_length=16)
    with torch.no_grad():
        want = plain.model.encode_text(tokens)
        got = torch.as_tensor(onnx.model.encode_text(onnx.tokenizer(TEXTS, context_length=16)))
    assert float((got - want).abs().max()) <= 1e-5
