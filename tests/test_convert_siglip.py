"""Hugging Face SiglipModel / Siglip2Model folders -> clipforge checkpoint (tokenizer inside) -> equal
embeddings to transformers' own forward from text; export back -> transformers reloads it equal."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_siglip_parity import IMAGE, PATCH, _towers, patchify, perturbed, pooled

from clipforge.api import load
from clipforge.checkpoint import read_checkpoint_info
from clipforge.convert import ConvertError, convert, export_hf
from clipforge.tokenizer import SentencePieceTokenizer

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
pytest.importorskip("sentencepiece", reason="SigLIP's spiece.model needs sentencepiece")
pytestmark = pytest.mark.reference

TOKENIZERS = Path(__file__).parent / "assets" / "sentencepiece"
VOCAB = {"siglip": 1500, "siglip2": 1800}  # the asset vocabularies' sizes
CTX = 16
TEXTS = ["a photo of a cat", "A DOG, running on the beach!", "two " * 30, ""]
PROCESSOR = {"image_processor_type": "SiglipImageProcessor", "do_resize": True, "resample": 2,
             "size": {"height": IMAGE, "width": IMAGE}, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.4]}


def hf_folder(path: Path, kind: str):
    text, vision = _towers()
    pad = {"siglip": dict(pad_token_id=1, eos_token_id=1), "siglip2": dict(pad_token_id=0, eos_token_id=1)}[kind]
    text = {**text, **pad, "vocab_size": VOCAB[kind], "max_position_embeddings": CTX}
    if kind == "siglip":
        cfg = transformers.SiglipConfig(text_config=text, vision_config={**vision, "image_size": IMAGE})
        model = perturbed(transformers.SiglipModel(cfg))
    else:
        vision = {**vision, "num_patches": (IMAGE // PATCH) ** 2}
        cfg = transformers.Siglip2Config(text_config=text, vision_config=vision)
        model = perturbed(transformers.Siglip2Model(cfg))
    model.save_pretrained(path)
    for f in (TOKENIZERS / kind).iterdir():
        shutil.copy(f, path / f.name)
    (path / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return model, transformers.AutoTokenizer.from_pretrained(path)


def big_vision_ids(tok, texts) -> torch.Tensor:
    """SigLIP 2's text recipe for the released weights (big_vision: ``lower`` (A-Z only)|``tok(bos="no",
    eos="sticky")``, right-padded), with the reference tokenizer for the pieces; transformers' own
    call would left-pad with no end token and no lower-casing (docs/interop.md)."""
    lower = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    out = torch.full((len(texts), CTX), tok.pad_token_id, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = tok(text.translate(lower), add_special_tokens=False)["input_ids"][: CTX - 1] + [tok.eos_token_id]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def reference(model, tok, images, kind):
    if kind == "siglip":
        ids = tok(TEXTS, padding="max_length", truncation=True, max_length=CTX, return_tensors="pt")["input_ids"]
    else:
        ids = big_vision_ids(tok, TEXTS)
    if kind == "siglip":
        kw = dict(pixel_values=images)
    else:
        grid = IMAGE // PATCH
        kw = dict(pixel_values=patchify(images), spatial_shapes=torch.tensor([[grid, grid]] * len(images)),
                  pixel_attention_mask=torch.ones(len(images), grid * grid, dtype=torch.long))
    with torch.no_grad():
        out = model(input_ids=ids, **kw)
        image = torch.nn.functional.normalize(pooled(model.get_image_features(**kw)), dim=-1)
        text = torch.nn.functional.normalize(pooled(model.get_text_features(input_ids=ids)), dim=-1)
    return ids, image, text, out.logits_per_image


def ours(loaded, images):
    with torch.no_grad():
        tokens = loaded.tokenizer(TEXTS)
        image, text = loaded.model.encode_image(images), loaded.model.encode_text(tokens)
        return tokens, image, text, loaded.model.logits(image, text)


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_folder_converts_with_its_tokenizer_and_equal_outputs(tmp_path, kind):
    ref, tok = hf_folder(tmp_path / "hf", kind)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    want = reference(ref, tok, images, kind)
    path = convert(tmp_path / "hf", tmp_path / "ck")
    info = read_checkpoint_info(path)
    assert info.tokenizer["kind"] == "sentencepiece" and info.config.objective == "sigmoid"
    assert info.config.preprocess.resize_mode == "squash" and info.config.preprocess.interpolation == "bilinear"
    assert list(info.config.preprocess.mean) == PROCESSOR["image_mean"]
    for loaded in (load(path, device="cpu", precision="fp32"), load(tmp_path / "hf", device="cpu", precision="fp32")):
        tok = loaded.tokenizer.get() if hasattr(loaded.tokenizer, "get") else loaded.tokenizer  # lazy or not
        assert isinstance(tok, SentencePieceTokenizer)
        got = ours(loaded, images)
        assert torch.equal(got[0], want[0])  # the tokenizer travelled inside the checkpoint
        assert (got[1] - want[1]).abs().max() <= 1e-5
        assert (got[2] - want[2]).abs().max() <= 1e-5
        assert (got[3] - want[3]).abs().max() <= 1e-4


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_export_reloads_in_transformers_with_equal_outputs(tmp_path, kind):
    hf_folder(tmp_path / "hf", kind)
    loaded = load(convert(tmp_path / "hf", tmp_path / "ck"), device="cpu", precision="fp32")
    out = export_hf(loaded.model, tmp_path / "export", tokenizer=loaded.tokenizer)
    assert json.loads((out / "config.json").read_text())["model_type"] == "siglip"
    ref = transformers.SiglipModel.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    want = reference(ref, tok, images, "siglip")
    if kind == "siglip2":  # the same ids (big_vision's recipe) into transformers' model
        want = reference_with_ids(ref, big_vision_ids(tok, TEXTS), images)
    got = ours(loaded, images)
    assert torch.equal(got[0], want[0])
    assert (got[1] - want[1]).abs().max() <= 1e-5 and (got[2] - want[2]).abs().max() <= 1e-5
    assert (got[3] - want[3]).abs().max() <= 1e-4
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == PROCESSOR["image_mean"] and processor.size["height"] == IMAGE
    # and back again: the exported folder converts to the same checkpoint
    again = load(out, device="cpu", precision="fp32")
    assert torch.equal(again.tokenizer(TEXTS), got[0])
    assert (ours(again, images)[2] - got[2]).abs().max() == 0


def reference_with_ids(model, ids, images):
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=images)
        image = torch.nn.functional.normalize(pooled(model.get_image_features(pixel_values=images)), dim=-1)
        text = torch.nn.functional.normalize(pooled(model.get_text_features(input_ids=ids)), dim=-1)
    return ids, image, text, out.logits_per_image


def test_errors_name_the_folder(tmp_path):
    hf_folder(tmp_path / "hf", "siglip")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["vision_config"]["vision_use_head"] = False
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConvertError, match=r"hf: cannot map the Hugging Face config: .*vision_use_head"):
        convert(tmp_path / "hf", tmp_path / "ck")
