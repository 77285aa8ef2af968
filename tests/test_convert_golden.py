"""Conversion parity against open_clip's recorded outputs (tests/assets/convert, made by make_golden.py).

Runs without open_clip: the assets hold small random-weight open_clip checkpoints (ViT-B-32 and RN50
structure, and an OpenAI-style traced TorchScript archive plus plain state dict, float16, QuickGELU)
with open_clip's own normalised embeddings on fixed inputs.
"""

import hashlib
import json

import pytest
import torch
from convert_utils import ASSETS, max_diff, small_tokenizer
from safetensors.torch import load_file

from clipforge.api import load
from clipforge.checkpoint import load_checkpoint, read_checkpoint_info
from clipforge.cli.main import main
from clipforge.convert import ConvertError, convert, import_model, openai

pytestmark = pytest.mark.reference

CASES = {  # case -> (checkpoint file, import options)
    "vit_b32": ("vit_b32.safetensors", {"model": ASSETS / "vit_b32.json"}),
    "rn50": ("rn50.safetensors", {"model": ASSETS / "rn50.json"}),
    "openai_jit": ("openai_vit.jit.pt", {}),
    "openai_state_dict": ("openai_vit.pt", {}),
}


def expected(case: str) -> dict[str, torch.Tensor]:
    return load_file(
        str(ASSETS / f"{case.replace('_jit', '_vit').replace('_state_dict', '_vit')}.expected.safetensors")
    )


def assert_matches(model, ref: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        image = model.encode_image(ref["images"].float())
        text = model.encode_text(ref["tokens"])
    assert max_diff(image, ref["image_features"]) <= 1e-5
    assert max_diff(text, ref["text_features"]) <= 1e-5


@pytest.mark.parametrize("case", list(CASES))
def test_import_matches_open_clip(case):
    file, options = CASES[case]
    imported = import_model(ASSETS / file, **options)
    assert imported.model.training is False
    assert_matches(imported.model, expected(case))


def test_openai_sources_get_quickgelu_and_inferred_architecture():
    for file in ("openai_vit.jit.pt", "openai_vit.pt"):
        imported = import_model(ASSETS / file)
        cfg = imported.model.config
        assert imported.format == "openai"
        assert cfg.act == "quick_gelu"
        assert (cfg.vision.kind, cfg.vision.patch_size, cfg.vision.image_size, cfg.vision.width) == (
            "vit",
            16,
            32,
            64,
        )
        assert (cfg.vision.layers, cfg.vision.heads, cfg.embed_dim) == (1, 1, 32)
        assert (cfg.text.context_length, cfg.text.vocab_size, cfg.text.width, cfg.text.layers) == (
            16,
            520,
            64,
            1,
        )


def test_openai_archive_stays_quickgelu_with_a_config(tmp_path):
    """A config given for an OpenAI file fixes the heads, never the activation (open_clip #771/#983)."""
    cfg = json.loads((ASSETS / "openai_vit.json").read_text())
    del cfg["quick_gelu"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    imported = import_model(ASSETS / "openai_vit.jit.pt", model=tmp_path / "cfg.json")
    assert imported.format == "openai" and imported.model.config.act == "quick_gelu"
    assert_matches(imported.model, expected("openai_jit"))


def test_resnet_architecture_inferred_from_shapes():
    sd = load_file(str(ASSETS / "rn50.safetensors"))
    cfg = openai.infer_config(sd, act="gelu", exact_heads=False)
    v = cfg.vision
    assert (v.kind, v.layers, v.width, v.image_size, cfg.embed_dim) == ("resnet", (3, 4, 6, 3), 4, 64, 32)
    # The 32-wide text tower breaks OpenAI's 64-wide-head rule, so without a config it is an error.
    with pytest.raises(ConvertError, match="cannot infer the attention heads of a 32-wide tower"):
        import_model(ASSETS / "rn50.safetensors", act="gelu")


def test_activation_override_changes_outputs():
    ref = expected("openai_jit")
    gelu = import_model(ASSETS / "openai_vit.jit.pt", act="gelu").model
    with torch.no_grad():
        assert max_diff(gelu.encode_text(ref["tokens"]), ref["text_features"]) > 1e-4


def test_convert_writes_self_describing_checkpoint(tmp_path):
    source = ASSETS / "openai_vit.jit.pt"
    path = convert(source, tmp_path / "out", vocab=small_tokenizer())
    assert path == tmp_path / "out" / "model.safetensors"
    info = read_checkpoint_info(path)
    assert info.config.act == "quick_gelu"
    assert info.provenance["format"] == "openai"
    assert info.provenance["sha256"] == {source.name: hashlib.sha256(source.read_bytes()).hexdigest()}
    assert info.tokenizer is not None and info.tokenizer["vocab_size"] == 520
    loaded = load(tmp_path / "out", precision="fp32")  # the folder works as well as the file
    assert_matches(loaded.model, expected("openai_jit"))
    assert loaded.tokenizer.encode("the cat") == small_tokenizer().encode("the cat")


def test_cli_convert(tmp_path, capsys):
    vocab = tmp_path / "vocab"
    small_tokenizer().save_hf(vocab)
    out = tmp_path / "rn50.safetensors"
    args = [
        "convert",
        str(ASSETS / "rn50.safetensors"),
        str(out),
        "--model-config",
        str(ASSETS / "rn50.json"),
        "--vocab",
        str(vocab),
    ]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    model, _ = load_checkpoint(out)
    assert_matches(model, expected("rn50"))


def test_cli_convert_reports_errors_in_one_line(tmp_path, capsys):
    assert main(["convert", str(ASSETS / "openai_vit.pt"), str(tmp_path), "--format", "hf"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Hugging Face" in err and "Traceback" not in err


def test_plain_state_dict_without_markers_needs_to_be_told(tmp_path):
    sd = torch.load(ASSETS / "openai_vit.pt", weights_only=True)
    for key in ("input_resolution", "context_length", "vocab_size"):
        del sd[key]
    torch.save(sd, tmp_path / "plain.pt")
    with pytest.raises(ConvertError, match=r'does not record its activation\. Say what it is: `format="openai"`'):
        import_model(tmp_path / "plain.pt")
    assert_matches(import_model(tmp_path / "plain.pt", format="openai").model, expected("openai_jit"))
    assert import_model(tmp_path / "plain.pt", act="quick_gelu").format == "open_clip"


def test_ddp_prefix_and_state_dict_wrapper(tmp_path):
    sd = load_file(str(ASSETS / "vit_b32.safetensors"))
    torch.save(
        {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}},
        tmp_path / "epoch_3.pt",
    )
    imported = import_model(tmp_path / "epoch_3.pt", model=ASSETS / "vit_b32.json")
    assert_matches(imported.model, expected("vit_b32"))


def test_custom_text_layout(tmp_path):
    """open_clip's CustomTextCLIP keeps the same text tower under ``text.``."""
    from safetensors.torch import save_file

    sd = load_file(str(ASSETS / "vit_b32.safetensors"))
    text = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection")
    save_file(
        {f"text.{k}" if k.startswith(text) else k: v for k, v in sd.items()}, str(tmp_path / "ct.safetensors")
    )
    imported = import_model(tmp_path / "ct.safetensors", model=ASSETS / "vit_b32.json")
    assert_matches(imported.model, expected("vit_b32"))


def test_named_model_config_must_match_shapes():
    with pytest.raises(ConvertError, match="patch_size: config says 16, checkpoint has 32"):
        import_model(ASSETS / "vit_b32.safetensors", model="ViT-B-16")


def test_legacy_non_zip_torch_save(tmp_path):
    sd = torch.load(ASSETS / "openai_vit.pt", weights_only=True)
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert_matches(import_model(tmp_path / "legacy.pt").model, expected("openai_state_dict"))
