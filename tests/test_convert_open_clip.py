"""Live parity against open_clip itself (reference environment only; skips when open_clip is missing).

PYTHONPATH=src /work/venv-oc/bin/python -m pytest -q tests/test_convert_open_clip.py
"""

import json

import pytest
import torch
from convert_utils import CTX, VOCAB, example_tokens, max_diff, perturb
from safetensors.torch import save_file

from clipforge.convert import export_open_clip, import_model

open_clip = pytest.importorskip("open_clip", reason="open_clip is the reference implementation")
pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

TEXT = dict(context_length=CTX, vocab_size=VOCAB, width=32, heads=2, layers=2)
TEXT64 = dict(context_length=CTX, vocab_size=VOCAB, width=64, heads=1, layers=2)  # OpenAI's 64-wide heads
CONFIGS = {
    "ViT-B-32": dict(
        embed_dim=24,
        vision_cfg=dict(image_size=64, layers=2, width=32, patch_size=32, head_width=16),
        text_cfg=TEXT,
    ),
    "ViT-B-32-quickgelu": dict(
        embed_dim=24,
        quick_gelu=True,
        text_cfg=TEXT,
        vision_cfg=dict(image_size=64, layers=2, width=32, patch_size=32, head_width=16),
    ),
    "ViT-B-16": dict(
        embed_dim=24,
        vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=16, head_width=16),
        text_cfg=TEXT,
    ),
    "RN50": dict(
        embed_dim=24,
        vision_cfg=dict(image_size=64, layers=[3, 4, 6, 3], width=8, head_width=32),
        text_cfg=TEXT,
    ),
}
OPENAI_STYLE = {  # widths that follow OpenAI's head rule, so the architecture is inferred from shapes alone
    "vit": dict(
        embed_dim=24,
        quick_gelu=True,
        text_cfg=TEXT64,
        vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=16, head_width=64),
    ),
    "rn": dict(
        embed_dim=24,
        quick_gelu=True,
        text_cfg=TEXT64,
        vision_cfg=dict(image_size=64, layers=[1, 2, 1, 1], width=4, head_width=64),
    ),
}


def reference(cfg: dict) -> torch.nn.Module:
    return perturb(open_clip.CLIP(**cfg).eval())


def assert_parity(ours, ref, image_size: int) -> None:
    images, tokens = torch.randn(2, 3, image_size, image_size), example_tokens()
    with torch.no_grad():
        assert max_diff(ours.encode_image(images), ref.encode_image(images, normalize=True)) <= 1e-5
        assert max_diff(ours.encode_text(tokens), ref.encode_text(tokens, normalize=True)) <= 1e-5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_open_clip_checkpoint_parity(tmp_path, name):
    cfg = CONFIGS[name]
    ref = reference(cfg)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(ref.state_dict(), str(tmp_path / "m.safetensors"))
    ours = import_model(tmp_path / "m.safetensors", model=tmp_path / "cfg.json").model
    assert ours.config.act == ("quick_gelu" if cfg.get("quick_gelu") else "gelu")
    assert_parity(ours, ref, cfg["vision_cfg"]["image_size"])


@pytest.mark.parametrize("kind", list(OPENAI_STYLE))
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archive_parity(tmp_path, kind, how):
    cfg = OPENAI_STYLE[kind]
    ref = reference(cfg)
    size = cfg["vision_cfg"]["image_size"]
    if how == "script":
        archive = torch.jit.script(ref)
    else:
        archive = torch.jit.trace_module(
            ref,
            {"encode_image": (torch.randn(1, 3, size, size),), "encode_text": (example_tokens(1),)},
            check_trace=False,
        )
    archive.save(str(tmp_path / "model.pt"))
    imported = import_model(tmp_path / "model.pt")
    assert imported.format == "openai" and imported.model.config.act == "quick_gelu"
    assert_parity(imported.model, ref, size)


def test_float16_openai_state_dict_parity(tmp_path):
    ref = reference(OPENAI_STYLE["vit"])
    open_clip.model.convert_weights_to_lp(ref, torch.float16)  # OpenAI's partially-fp16 layout
    torch.save({**ref.state_dict(), "input_resolution": torch.tensor(32)}, tmp_path / "sd.pt")
    ours = import_model(tmp_path / "sd.pt").model
    assert_parity(ours, ref.float(), 32)


@pytest.mark.parametrize("name", ["ViT-B-32-quickgelu", "RN50"])
def test_export_loads_in_open_clip(tmp_path, name):
    cfg = CONFIGS[name]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(reference(cfg).state_dict(), str(tmp_path / "m.safetensors"))
    ours = import_model(tmp_path / "m.safetensors", model=tmp_path / "cfg.json").model
    out = export_open_clip(ours, tmp_path / "oc")
    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    assert_parity(ours, ref.eval(), cfg["vision_cfg"]["image_size"])
    normalize = [t for t in preprocess.transforms if type(t).__name__ == "Normalize"][0]
    assert tuple(normalize.mean) == ours.config.preprocess.mean
    # and back: open_clip's own state dict of that model imports to identical tensors
    save_file(ref.state_dict(), str(tmp_path / "back.safetensors"))
    back = import_model(tmp_path / "back.safetensors", model=out / "open_clip_config.json").model
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-32-quickgelu", "RN50"])
def test_full_size_named_models(tmp_path, name):
    ref = open_clip.create_model(name).eval()
    save_file(ref.state_dict(), str(tmp_path / "m.safetensors"))
    ours = import_model(tmp_path / "m.safetensors", model=name).model
    images, tokens = torch.randn(1, 3, 224, 224), example_tokens(2, 77, 49408, lengths=[5, 77])
    with torch.no_grad():
        assert max_diff(ours.encode_image(images), ref.encode_image(images, normalize=True)) <= 1e-5
        assert max_diff(ours.encode_text(tokens), ref.encode_text(tokens, normalize=True)) <= 1e-5
