"""MetaCLIP 2: transformers ``MetaClip2Model`` folders (CLIP towers, text read at the first end token,
an XLM-R-layout multilingual SentencePiece vocabulary) import with transformers' own token ids and
embeddings, and export back to a folder transformers loads."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from convert_utils import perturb

from clipforge.api import load
from clipforge.config import ConfigError, TextConfig
from clipforge.convert import ConvertError, convert, export_hf, hf
from clipforge.models import get_model_config

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
pytestmark = pytest.mark.reference

XLMR = Path(__file__).parent / "assets" / "sentencepiece" / "xlmr"  # XLM-R layout: <s>=0 <pad>=1 </s>=2
VOCAB, CTX, IMAGE = 4002, 16, 32
TEXTS = [
    "a photo of a cat", "一只猫的照片", "صورة قطة على الشاطئ", "एक बिल्ली की तस्वीर", "Фото кошки 😀",
    "고양이 사진", "", "two " * 30,
]  # fmt: skip


def metaclip2_folder(path: Path, act: str):
    torch.manual_seed(0)
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=CTX, hidden_act=act, bos_token_id=0, pad_token_id=1, eos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE, patch_size=16, hidden_act=act)  # fmt: skip
    cfg = transformers.MetaClip2Config(text_config=text, vision_config=vision, projection_dim=24)
    model = perturb(transformers.MetaClip2Model(cfg)).eval()
    model.save_pretrained(path)
    for f in XLMR.iterdir():
        shutil.copy(f, path / f.name)
    return model, transformers.AutoTokenizer.from_pretrained(path)


def reference(model, tok, images):
    ids = tok(TEXTS, padding="max_length", truncation=True, max_length=CTX, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        image = model.get_image_features(pixel_values=images)
        text = model.get_text_features(input_ids=ids)
    image = image if isinstance(image, torch.Tensor) else image.pooler_output
    text = text if isinstance(text, torch.Tensor) else text.pooler_output
    return ids, torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.full_suite
def test_metaclip2_folder_loads_with_transformers_ids_and_embeddings(tmp_path, act):
    ref, tok = metaclip2_folder(tmp_path / "hf", act)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    want = reference(ref, tok, images)
    assert (want[0] == 2).any(dim=1).all() and (want[0].argmax(dim=1) != (want[0] == 2).int().argmax(dim=1)).any()
    loaded = load(convert(tmp_path / "hf", tmp_path / "ck"), device="cpu", precision="fp32")
    cfg = loaded.model.config
    assert (cfg.text.pool, cfg.text.eos_id, cfg.act) == ("eos", 2, act)
    tokens = loaded.tokenizer(TEXTS)
    assert torch.equal(tokens, want[0])  # the XLM-R vocabulary travelled inside the checkpoint
    with torch.no_grad():
        image, text = loaded.model.encode_image(images), loaded.model.encode_text(tokens)
    assert (image - want[1]).abs().max() <= 1e-5 and (text - want[2]).abs().max() <= 1e-5

    out = export_hf(loaded.model, tmp_path / "export", tokenizer=loaded.tokenizer)
    assert json.loads((out / "config.json").read_text())["model_type"] == "metaclip_2"
    again_ref = transformers.MetaClip2Model.from_pretrained(out).eval()
    again = reference(again_ref, transformers.AutoTokenizer.from_pretrained(out), images)
    assert torch.equal(again[0], want[0])
    assert (again[1] - want[1]).abs().max() <= 1e-5 and (again[2] - want[2]).abs().max() <= 1e-5


def test_configs_and_errors():
    cfg = hf.config_from({"model_type": "metaclip_2", "text_config": {"eos_token_id": 2, "vocab_size": 901629}})
    assert (cfg.text.pool, cfg.text.eos_id) == ("eos", 2)
    assert hf.config_from(hf.config_to(cfg)).text == cfg.text
    assert get_model_config("ViT-H-14-worldwide").text.eos_id == 2
    with pytest.raises(ValueError, match="eos_token_id"):
        hf.config_from({"model_type": "metaclip_2", "text_config": {"eos_token_id": [2, 3]}})
    with pytest.raises(ConfigError, match="eos_id"):
        TextConfig(pool="eos").validate()
    with pytest.raises(ConfigError, match="eos_id"):
        TextConfig(eos_id=2).validate()
    with pytest.raises(ValueError, match="model_type 'align'"):
        hf.config_from({"model_type": "align"})


def test_a_folder_without_its_vocabulary_is_refused(tmp_path):
    metaclip2_folder(tmp_path / "hf", "gelu")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).unlink()
    with pytest.raises(ConvertError, match=r'needs its own multilingual vocabulary.*vocab="FOLDER"'):
        convert(tmp_path / "hf", tmp_path / "ck")  # not OpenAI's English BPE in its place
    assert not (tmp_path / "ck").exists()
