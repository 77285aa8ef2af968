"""SigLIP / SigLIP 2 through the model resolver: registry entries, a transformers-format repo in
huggingface_hub's cache (offline) by Hub id and by pretrained name, with its own tokenizer."""

import pytest
import torch
from hub_fixtures import hub_repo, registry_with

import clipforge
from clipforge.pretrained import get_pretrained, list_pretrained, resolve_model

transformers = pytest.importorskip("transformers", reason="transformers writes the reference folder")
pytest.importorskip("sentencepiece", reason="SigLIP's spiece.model needs sentencepiece")
pytestmark = [pytest.mark.reference, pytest.mark.usefixtures("isolated_caches")]  # empty caches, no network


def test_registry_has_the_siglip_families():
    for name, repo in [("ViT-B-16-SigLIP/webli", "google/siglip-base-patch16-224"),
                       ("ViT-SO400M-14-SigLIP-384/webli", "google/siglip-so400m-patch14-384"),
                       ("ViT-B-16-SigLIP2/webli", "google/siglip2-base-patch16-224")]:
        entry = get_pretrained(name)
        assert (entry.hf_hub, entry.format, entry.act) == (repo, "hf", "gelu_tanh")
    assert len([n for n in list_pretrained() if "SigLIP2" in n]) >= 8


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_repo_by_hub_id_and_by_name_equals_the_folder(tmp_path, monkeypatch, kind):
    from test_convert_siglip import TEXTS, hf_folder

    folder = tmp_path / "repo"
    hf_folder(folder, kind)
    hub_repo(tmp_path / "hf-cache", f"acme/{kind}-tiny", folder)
    registry_with(monkeypatch, **{"siglip-tiny/acme": {
        "architecture": "siglip-tiny", "act": "gelu_tanh", "format": "hf", "hf_hub": f"acme/{kind}-tiny",
        "tokenizer": "checkpoint"}})  # fmt: skip
    direct = clipforge.load(folder, precision="fp32")
    images = torch.randn(2, 3, direct.model.config.vision.image_size, direct.model.config.vision.image_size)
    for ref in (f"acme/{kind}-tiny", f"hf-hub:acme/{kind}-tiny", "siglip-tiny/acme"):
        loaded = clipforge.load(ref, precision="fp32")
        assert resolve_model(ref).is_checkpoint
        tokens = loaded.tokenizer(TEXTS)
        assert torch.equal(tokens, direct.tokenizer(TEXTS))
        with torch.no_grad():
            assert (loaded.model.encode_image(images) - direct.model.encode_image(images)).abs().max() <= 1e-6
            assert (loaded.model.encode_text(tokens) - direct.model.encode_text(tokens)).abs().max() <= 1e-6
        assert loaded.model.config.objective == "sigmoid" and loaded.model.config.act == "gelu_tanh"
