"""Export: Hugging Face and open_clip folders (round trips give identical tensors), ONNX (onnxruntime)."""

import json

import pytest
import torch
from convert_utils import VOCAB, example_tokens, max_diff, normalized, perturb, small_tokenizer
from factories import distinct_architectures, tiny_model

from clipforge.checkpoint import save_checkpoint
from clipforge.cli.main import main
from clipforge.convert import export_hf, export_open_clip, import_model
from clipforge.models import CLIP


def tiny(name: str, **changes) -> CLIP:
    """The factory's tiny ``name`` with the small tokenizer's vocabulary, every weight made non-trivial."""
    return perturb(tiny_model(name, vocab_size=VOCAB, **changes))


# Architectures by export target (each shape of tiny model once: the SigLIP size variants shrink alike).
# open_clip builds SigLIP towers from timm's named sizes only, so shrunk SigLIPs cannot go there.
# So are EVA-02 / PE-Core towers (timm's Eva models; tests/test_families_eva.py), which transformers lacks.
# XLM-R text towers go to open_clip by their Hub model's name only (tests/test_families_xlmr.py).
# MobileCLIP S FastViT towers likewise (timm's MCi models; tests/test_families_mobileclip.py).
OPEN_CLIP_ARCHS = distinct_architectures(
    lambda cfg: cfg.text.kind == "clip"
    and (
        cfg.vision.kind == "resnet"
        or (cfg.vision.kind == "vit" and cfg.vision.pool == "cls" and not cfg.vision.uses_family_options)
    )
)
HF_ARCHS = distinct_architectures(  # transformers has no ResNet tower, and no XLM-R text tower in its CLIP classes
    lambda cfg: cfg.vision.kind == "vit" and not cfg.vision.uses_family_options and cfg.text.kind == "clip"
)


def assert_same_tensors(a: CLIP, b: CLIP) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("name", OPEN_CLIP_ARCHS)
def test_open_clip_round_trip_is_identical(tmp_path, name):
    ours = tiny(name, act="quick_gelu")
    out = export_open_clip(ours, tmp_path / "oc", tokenizer=small_tokenizer())
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["quick_gelu"] is True and cfg["preprocess_cfg"]["size"] == ours.config.image_size
    back = import_model(out)  # the folder carries its config: no --model needed
    assert back.format == "open_clip"
    assert back.model.config.vision == ours.config.vision and back.model.config.text == ours.config.text
    assert back.model.config.act == "quick_gelu"
    assert_same_tensors(ours, back.model)
    assert back.vocab_dir == out


@pytest.mark.parametrize("name", HF_ARCHS)
def test_hf_round_trip_is_identical(tmp_path, name):
    ours = tiny(name)
    # MetaCLIP 2 reads its text at eos_id (2), which the small CLIP tokenizer does not end with
    tok = None if ours.config.text.pool == "eos" else small_tokenizer()
    back = import_model(export_hf(ours, tmp_path / "hf", tokenizer=tok))
    assert back.format == "hf" and back.model.config.preprocess == ours.config.preprocess
    assert back.model.config.act == ours.config.act
    assert_same_tensors(ours, back.model)


def test_hf_export_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
    ours = tiny("ViT-B-32", act="quick_gelu")
    tok = small_tokenizer()
    out = export_hf(ours, tmp_path / "hf", tokenizer=tok)
    ref = transformers.CLIPModel.from_pretrained(out).eval()
    images = torch.randn(2, 3, 64, 64)
    tokens = example_tokens()
    with torch.no_grad():
        assert (
            max_diff(normalized(ref.get_image_features(pixel_values=images)), ours.encode_image(images))
            <= 1e-5
        )
        assert max_diff(normalized(ref.get_text_features(input_ids=tokens)), ours.encode_text(tokens)) <= 1e-5

    processor = transformers.CLIPProcessor.from_pretrained(out)
    captions = ["the cat and the hat!!", "A Cat on the mat"]
    ours_ids = [row[: int(row.argmax()) + 1].tolist() for row in tok(captions)]  # without our zero padding
    for hf_tok in (
        processor.tokenizer,
        transformers.CLIPTokenizer.from_pretrained(out),
        transformers.CLIPTokenizerFast.from_pretrained(out),
    ):
        assert hf_tok(captions)["input_ids"] == ours_ids
    image_processor = processor.image_processor
    assert list(image_processor.image_mean) == list(ours.config.preprocess.mean)
    assert image_processor.crop_size["height"] == 64
    # the processor reproduces our preprocessing (resize shortest side, centre crop, mean/std)
    import numpy as np
    from PIL import Image

    from clipforge.api import image_transform

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (75, 101, 3), dtype=np.uint8))
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    assert max_diff(pixels[0], image_transform(ours)(image)) <= 1e-5


def test_export_refuses_what_the_target_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="no ResNet image tower"):
        export_hf(tiny("RN50"), tmp_path / "a")
    with pytest.raises(ValueError, match="logit_bias"):
        export_hf(tiny("ViT-B-32", init_logit_bias=-10.0), tmp_path / "b")


def test_siglip_to_open_clip_needs_a_timm_tower(tmp_path):
    with pytest.raises(ValueError, match="timm's named sizes"):
        export_open_clip(tiny("siglip-tiny"), tmp_path / "oc")  # open_clip can only name timm's sizes


def test_sigmoid_bias_survives_open_clip_round_trip(tmp_path):
    ours = tiny("ViT-B-32", init_logit_bias=-10.0)
    back = import_model(export_open_clip(ours, tmp_path / "oc"))
    assert back.model.logit_bias is not None
    assert_same_tensors(ours, back.model)


@pytest.mark.parametrize("name", distinct_architectures(by="structure"))  # each export ~2 s: once per kind
@pytest.mark.full_suite
def test_onnx_export_matches_within_1e4(tmp_path, name):
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    ort = pytest.importorskip("onnxruntime", reason="checking ONNX needs onnxruntime")
    from clipforge.convert.onnx import export_onnx

    ours = tiny(name)
    result = export_onnx(ours, tmp_path / "onnx", tokenizer=small_tokenizer())
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert getattr(ours.text, "skip_padding", True) is True  # the caller's model is left as it was (CLIP towers)
    # dynamic batch and text length, beyond what the exporter itself checked
    size = ours.config.image_size
    images = torch.randn(5, 3, size, size)
    tokens = example_tokens(4, lengths=[2, 3, 7, 7])[:, :7]
    image_sess = ort.InferenceSession(str(result.image_path), providers=["CPUExecutionProvider"])
    text_sess = ort.InferenceSession(str(result.text_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        got = torch.from_numpy(image_sess.run(None, {"images": images.numpy()})[0])
        assert max_diff(got, ours.encode_image(images)) <= 1e-4
        got = torch.from_numpy(text_sess.run(None, {"tokens": tokens.numpy()})[0])
        assert max_diff(got, ours.encode_text(tokens)) <= 1e-4
    meta = json.loads((tmp_path / "onnx" / "clipforge_onnx.json").read_text())
    assert meta["config"]["vision"]["kind"] == ours.config.vision.kind


@pytest.mark.full_suite
def test_cli_export(tmp_path, capsys):
    ours = tiny("ViT-B-32")
    ckpt = save_checkpoint(tmp_path / "m.safetensors", ours, tokenizer=small_tokenizer())
    assert main(["export", str(ckpt), str(tmp_path / "oc"), "--to", "open_clip"]) == 0
    assert_same_tensors(ours, import_model(tmp_path / "oc").model)
    assert main(["export", str(ckpt), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert_same_tensors(ours, import_model(tmp_path / "hf").model)
    assert (tmp_path / "hf" / "vocab.json").is_file() and (
        tmp_path / "hf" / "tokenizer_config.json"
    ).is_file()
    rn = save_checkpoint(tmp_path / "rn.safetensors", tiny("RN50"), tokenizer=small_tokenizer())
    assert main(["export", str(rn), str(tmp_path / "x"), "--to", "hf"]) == 1
    assert "no ResNet image tower" in capsys.readouterr().err
    bare = save_checkpoint(tmp_path / "bare.safetensors", ours)  # no tokenizer: weights still export
    assert main(["export", str(bare), str(tmp_path / "onnx"), "--to", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "no tokenizer" in out and "onnxruntime matches PyTorch" in out
    assert not (tmp_path / "onnx" / "vocab.json").exists()
