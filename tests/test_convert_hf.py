"""Hugging Face CLIPModel folders -> clipforge: embeddings equal transformers' own forward (random init)."""

import json
import time

import pytest
import torch
from convert_utils import CTX, VOCAB, example_tokens, max_diff, normalized, perturb, small_tokenizer

from clipforge.api import load
from clipforge.checkpoint import load_checkpoint, read_checkpoint_info
from clipforge.convert import ConvertError, convert, import_model

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
pytestmark = pytest.mark.reference

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def hf_folder(path, *, act: str, patch: int, image: int, tokenizer=True):
    """A saved random-weight CLIPModel with tokenizer files and a (non-default) image processor config."""
    cfg = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CTX,
            vocab_size=VOCAB,
            hidden_act=act,
            bos_token_id=VOCAB - 2,
            eos_token_id=VOCAB - 1,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image,
            patch_size=patch,
            hidden_act=act,
        ),
        projection_dim=24,
    )
    model = perturb(transformers.CLIPModel(cfg).eval(), 0.02)
    model.save_pretrained(path)
    if tokenizer:
        small_tokenizer().save_hf(path)
    processor = {
        "crop_size": {"height": image, "width": image},
        "size": {"shortest_edge": image},
        "do_center_crop": True,
        "image_mean": MEAN,
        "image_std": STD,
        "resample": 2,
        "image_processor_type": "CLIPImageProcessor",
    }
    (path / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


def reference(model, images, tokens):
    with torch.no_grad():
        return (
            normalized(model.get_image_features(pixel_values=images)),
            normalized(model.get_text_features(input_ids=tokens)),
        )


@pytest.mark.parametrize(
    "act,patch",
    [("gelu", 32), ("quick_gelu", 32), ("gelu", 16), ("quick_gelu", 16)],
    ids=["B32-gelu", "B32-quickgelu", "B16-gelu", "B16-quickgelu"],
)
@pytest.mark.full_suite
def test_hf_folder_converts_with_equal_embeddings(tmp_path, act, patch):
    ref = hf_folder(tmp_path / "hf", act=act, patch=patch, image=2 * patch)
    images, tokens = torch.randn(2, 3, 2 * patch, 2 * patch), example_tokens()
    want_image, want_text = reference(ref, images, tokens)

    path = convert(tmp_path / "hf", tmp_path / "out")
    loaded = load(path, precision="fp32")
    cfg = loaded.model.config
    assert (cfg.act, cfg.vision.patch_size, cfg.vision.heads, cfg.text.heads) == (act, patch, 2, 2)
    assert cfg.preprocess.mean == tuple(MEAN) and cfg.preprocess.std == tuple(STD)
    assert cfg.preprocess.interpolation == "bilinear"
    with torch.no_grad():
        assert max_diff(loaded.model.encode_image(images), want_image) <= 1e-5
        assert max_diff(loaded.model.encode_text(tokens), want_text) <= 1e-5
    assert loaded.tokenizer.merges == small_tokenizer().merges  # the folder's own vocabulary travels along
    info = read_checkpoint_info(path)
    assert info.provenance["format"] == "hf" and "model.safetensors" in info.provenance["sha256"]


def test_load_reads_hf_folder_directly(tmp_path):
    ref = hf_folder(tmp_path, act="quick_gelu", patch=16, image=32)
    images, tokens = torch.randn(1, 3, 32, 32), example_tokens(2, lengths=[5, 16])
    loaded = load(tmp_path, precision="fp32")
    want_image, want_text = reference(ref, images, tokens)
    with torch.no_grad():
        assert max_diff(loaded.model.encode_image(images), want_image) <= 1e-5
        assert max_diff(loaded.model.encode_text(tokens), want_text) <= 1e-5


def test_sharded_and_pickled_hf_weights(tmp_path):
    ref = hf_folder(tmp_path / "a", act="gelu", patch=16, image=32)
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    (tmp_path / "sharded" / "preprocessor_config.json").write_text(
        (tmp_path / "a" / "preprocessor_config.json").read_text()
    )
    torch.save(ref.state_dict(), tmp_path / "a" / "pytorch_model.bin")
    (tmp_path / "a" / "model.safetensors").unlink()
    tokens = example_tokens()
    _, want = reference(ref, torch.randn(1, 3, 32, 32), tokens)
    for folder in ("sharded", "a"):
        model = import_model(tmp_path / folder).model
        with torch.no_grad():
            assert max_diff(model.encode_text(tokens), want) <= 1e-5, folder


def test_hf_config_we_cannot_map_is_an_error(tmp_path):
    hf_folder(tmp_path, act="gelu", patch=16, image=32)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"]["hidden_act"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConvertError, match="unsupported activation"):
        import_model(tmp_path)
    cfg["text_config"]["hidden_act"] = "gelu"
    cfg["model_type"] = "align"  # a model family clipforge does not map (SigLIP's now are: test_convert_siglip)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConvertError, match="align"):
        import_model(tmp_path)


def test_hf_folder_without_vocabulary_needs_vocab(tmp_path, monkeypatch):
    hf_folder(tmp_path / "hf", act="gelu", patch=16, image=32, tokenizer=False)
    monkeypatch.setenv("CLIPFORGE_VOCAB", str(tmp_path / "missing.txt.gz"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConvertError, match=r'no usable vocabulary: pass vocab="PATH"'):
        convert(tmp_path / "hf", tmp_path / "out")
    vocab = tmp_path / "vocab"
    small_tokenizer().save_hf(vocab)
    assert convert(tmp_path / "hf", tmp_path / "out", vocab=vocab).is_file()


@pytest.mark.slow
def test_full_size_vit_b32_converts_in_seconds(tmp_path):
    """A real-size ViT-B-32 (151M parameters) HF folder: conversion is a matter of seconds."""
    torch.manual_seed(0)
    ref = transformers.CLIPModel(transformers.CLIPConfig()).eval()
    ref.save_pretrained(tmp_path / "hf")
    small_tokenizer(77).save_hf(tmp_path / "hf")
    start = time.perf_counter()
    path = convert(tmp_path / "hf", tmp_path / "out")
    seconds = time.perf_counter() - start
    assert seconds < 60, f"conversion took {seconds:.1f}s"
    images, tokens = torch.randn(1, 3, 224, 224), example_tokens(2, 77, 49408, lengths=[7, 77])
    want_image, want_text = reference(ref, images, tokens)
    model, _ = load_checkpoint(path)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), want_image) <= 1e-5
        assert max_diff(model.encode_text(tokens), want_text) <= 1e-5


def test_imported_preprocessing_matches_hf_processor(tmp_path):
    import numpy as np
    from PIL import Image

    hf_folder(tmp_path, act="gelu", patch=16, image=32)  # bilinear, non-default mean/std
    processor = transformers.CLIPImageProcessor.from_pretrained(tmp_path)
    loaded = load(tmp_path, precision="fp32")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (57, 43, 3), dtype=np.uint8))
    want = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert max_diff(loaded.transform(image), want) <= 1e-5
