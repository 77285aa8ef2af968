"""Pretrained weights by name and Hub id: the registry, verified resumable downloads from a local
server, Hub repos laid out in huggingface_hub's cache (offline), and the converted-checkpoint cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hub_fixtures import FileServer, hub_repo, open_clip_folder, openai_pt, registry_with, transformers_folder

import clipforge
from clipforge.checkpoint import read_checkpoint_info
from clipforge.models import get_model_config, list_models
from clipforge.pretrained import (
    DownloadError,
    UnknownModelError,
    get_pretrained,
    list_pretrained,
    resolve_checkpoint,
    resolve_model,
)

OPENAI_NINE = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336")


pytestmark = pytest.mark.usefixtures("isolated_caches")  # every test: empty caches, no network


def _embeddings(model, tokens=None):
    torch.manual_seed(0)
    size = model.config.vision.image_size
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(tokens) if tokens is not None else None
    return img, txt


# ---- the registry ----------------------------------------------------------------------------


def test_registry_entries_are_complete_and_point_at_real_architectures():
    names = list_pretrained()
    for arch in OPENAI_NINE:
        entry = get_pretrained(f"{arch}/openai")
        assert entry.act == "quick_gelu" and entry.url.endswith(".pt") and len(entry.sha256) == 64
        assert entry.sha256 in entry.url  # OpenAI's URLs carry the file's digest
    for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14"):
        tags = {n.split("/", 1)[1] for n in list_pretrained(architecture=arch)}
        assert {"datacomp_xl_s13b_b90k", "metaclip_400m"} <= tags
        assert any(t.startswith("laion2b") for t in tags)
    for name in names:
        entry = get_pretrained(name)
        assert entry.architecture in list_models()
        get_model_config(entry.architecture)
        entry.preprocess_config()
    assert get_pretrained("vit-b-32/OPENAI").name == "ViT-B-32/openai"  # case-insensitive


def test_unknown_names_list_the_closest():
    with pytest.raises(UnknownModelError, match="ViT-B-32/openai"):
        resolve_model("ViT-B-32/opnai")
    with pytest.raises(UnknownModelError, match="an architecture, not weights.*ViT-B-32/"):
        resolve_model("ViT-B-32")
    with pytest.raises(UnknownModelError, match="no such file or folder, pretrained name or Hub id"):
        resolve_model("no-such-model.safetensors")
    with pytest.raises(ValueError, match="empty"):
        resolve_model("")
    with pytest.raises(ValueError, match="empty"):
        clipforge.load("  ")


def test_registry_rejects_malformed_entries():
    from clipforge.pretrained.registry import _entry

    good = {"architecture": "ViT-B-32", "act": "gelu", "format": "open_clip", "hf_hub": "a/b"}
    _entry("ViT-B-32/x", good)
    with pytest.raises(ValueError, match="unknown key"):
        _entry("ViT-B-32/x", {**good, "sha": "1"})
    with pytest.raises(ValueError, match="exactly one of url"):
        _entry("ViT-B-32/x", {**good, "url": "http://x/y.pt", "sha256": "0" * 64})
    with pytest.raises(ValueError, match="sha256"):
        _entry("ViT-B-32/x", {**{k: v for k, v in good.items() if k != "hf_hub"}, "url": "http://x/y.pt"})
    with pytest.raises(ValueError, match="architecture"):
        _entry("ViT-B-16/x", good)



def test_every_registry_source_has_its_check_in_docs():
    """docs/registry_check.json records the evidence that each source exists under exactly its name
    (issue 22: the ids were written without network access); a new or renamed entry needs a row."""
    check = json.loads((Path(__file__).resolve().parents[1] / "docs" / "registry_check.json").read_text("utf-8"))
    rows = check["entries"]
    assert sorted(rows) == list_pretrained()
    for name, row in rows.items():
        entry = get_pretrained(name)
        assert row["source"] == (entry.url or entry.hf_hub), name
        assert row["verdict"] in ("confirmed", "confirmed (indirect)", "corrected") and row["evidence"], name
        if entry.tokenizer.startswith("hf-hub:"):
            assert row["tokenizer"]["source"] == entry.tokenizer.removeprefix("hf-hub:"), name


# ---- Hub ids from huggingface_hub's cache ---------------------------------------------------------


def test_transformers_repo_by_hub_id_equals_the_folder(tmp_path):
    pytest.importorskip("transformers", reason="transformers writes the reference folder")
    folder = tmp_path / "clip-tiny"
    transformers_folder(folder)
    hub_repo(tmp_path / "hf-cache", "acme/clip-tiny", folder)
    direct, tok_direct, _ = clipforge.load(folder, precision="fp32")
    by_id, tok_id, _ = clipforge.load("acme/clip-tiny", precision="fp32")
    tokens = tok_direct(["a cat and the dog", "the cat"])
    assert torch.equal(tokens, tok_id(["a cat and the dog", "the cat"]))
    (a_img, a_txt), (b_img, b_txt) = _embeddings(direct, tokens), _embeddings(by_id, tokens)
    assert (a_img - b_img).abs().max() <= 1e-5 and (a_txt - b_txt).abs().max() <= 1e-5
    resolved = resolve_model("acme/clip-tiny")
    assert resolved.kind == "hub" and resolved.is_checkpoint
    info = read_checkpoint_info(resolved.path)
    assert info.provenance["source"] == "hf-hub:acme/clip-tiny@" + "0" * 39 + "1"
    assert resolve_model("hf-hub:acme/clip-tiny").path == resolved.path  # either spelling


@pytest.mark.full_suite
def test_open_clip_repo_by_hub_id_equals_the_folder(tmp_path):
    folder = tmp_path / "oc"
    open_clip_folder(folder)
    hub_repo(tmp_path / "hf-cache", "acme/oc-tiny", folder)
    direct, tok, _ = clipforge.load(folder, precision="fp32")
    by_id, tok_id, _ = clipforge.load("hf-hub:acme/oc-tiny", precision="fp32")
    tokens = tok(["a photo of a cat"])
    assert torch.equal(tokens, tok_id(["a photo of a cat"]))  # OpenAI's packaged vocabulary
    (a_img, a_txt), (b_img, b_txt) = _embeddings(direct, tokens), _embeddings(by_id, tokens)
    assert (a_img - b_img).abs().max() <= 1e-5 and (a_txt - b_txt).abs().max() <= 1e-5


def test_registry_entry_on_the_hub_applies_its_activation_and_preprocessing(tmp_path, monkeypatch):
    folder = tmp_path / "oc"
    open_clip_folder(folder)
    (folder / "open_clip_config.json").unlink()  # weights only: the registry says what they are
    hub_repo(tmp_path / "hf-cache", "acme/oc-tiny", folder)
    (tmp_path / "arch.json").write_text(json.dumps({**json.loads(_tiny_arch_json()), "name": "tiny-arch"}))
    import clipforge.models.factory as factory

    real = factory.get_model_config
    monkeypatch.setattr(
        "clipforge.convert.sources.get_model_config",
        lambda name: real(tmp_path / "arch.json") if name == "tiny-arch" else real(name),
    )
    registry_with(
        monkeypatch,
        **{
            "tiny-arch/quick": {
                "architecture": "tiny-arch", "act": "quick_gelu", "format": "open_clip", "hf_hub": "acme/oc-tiny",
                "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            }
        },
    )  # fmt: skip
    model, _, transform = clipforge.load("tiny-arch/quick", precision="fp32")
    assert model.config.act == "quick_gelu" and model.config.name == "tiny-arch/quick"
    assert model.config.preprocess.mean == (0.5, 0.5, 0.5)


def _tiny_arch_json() -> str:
    from hub_fixtures import openai_config

    return openai_config(act="gelu").to_json()


def test_offline_with_nothing_cached_says_what_to_download(tmp_path):
    with pytest.raises(DownloadError, match=r"not in the Hugging Face cache .*HF_HUB_OFFLINE.*clipforge download"):
        resolve_model("acme/missing")
    with pytest.raises(DownloadError, match=r"downloads are off.*openaipublic.*put it at"):
        resolve_model("ViT-B-32/openai")
    assert not any((tmp_path / "cf-cache").rglob("*.safetensors"))


# ---- plain URLs: verified, resumable, cached ---------------------------------------------------------


@pytest.fixture
def served_openai(tmp_path, monkeypatch):
    """A tiny OpenAI-layout .pt served on 127.0.0.1 and registered as 'tiny-openai/test'."""
    pt = tmp_path / "src" / "tiny.pt"
    model = openai_pt(pt)
    payload = pt.read_bytes()
    server = FileServer(payload, name="tiny.pt")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    arch = tmp_path / "tiny-openai.json"
    arch.write_text(model.config.to_json())
    import clipforge.models.factory as factory

    real = factory.get_model_config
    monkeypatch.setattr(
        "clipforge.convert.sources.get_model_config",
        lambda name: real(arch) if name == "tiny-openai" else real(name),
    )
    with server.running():
        registry_with(
            monkeypatch,
            **{
                "tiny-openai/test": {
                    "architecture": "tiny-openai", "act": "quick_gelu", "format": "openai",
                    "url": server.url, "sha256": hashlib.sha256(payload).hexdigest(),
                }
            },
        )  # fmt: skip
        yield server, model, pt


@pytest.mark.full_suite
def test_url_source_downloads_verifies_converts_and_caches(served_openai, tmp_path):
    server, model, pt = served_openai
    loaded, tok, _ = clipforge.load("tiny-openai/test", precision="fp32")
    direct, _, _ = clipforge.load(pt, precision="fp32")
    tokens = tok(["a cat"])
    (a_img, a_txt), (b_img, b_txt) = _embeddings(direct, tokens), _embeddings(loaded, tokens)
    assert (a_img - b_img).abs().max() <= 1e-5 and (a_txt - b_txt).abs().max() <= 1e-5
    assert len(server.requests) == 1
    again = resolve_model("tiny-openai/test")  # converted checkpoint cached: no request, no conversion
    assert again.is_checkpoint and len(server.requests) == 1
    info = read_checkpoint_info(again.path)
    assert info.config.act == "quick_gelu" and info.provenance["pretrained"] == "tiny-openai/test"
    assert not list((tmp_path / "cf-cache").rglob("*.partial"))


@pytest.mark.full_suite
def test_wrong_digest_caches_nothing(served_openai, tmp_path):
    server, _, _ = served_openai
    server.corrupt = True
    expected = hashlib.sha256(server.payload).hexdigest()
    with pytest.raises(DownloadError, match=rf"SHA-256 mismatch \(expected {expected}, got [0-9a-f]{{64}}\)"):
        resolve_model("tiny-openai/test")
    cache = tmp_path / "cf-cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no partial, no final, no conversion


@pytest.mark.full_suite
def test_registry_digest_that_does_not_match_caches_nothing(served_openai, tmp_path, monkeypatch):
    server, _, _ = served_openai
    entry = {"architecture": "tiny-openai", "act": "quick_gelu", "format": "openai", "url": server.url}
    registry_with(monkeypatch, **{"tiny-openai/wrong": {**entry, "sha256": "ab" * 32}})
    with pytest.raises(DownloadError, match="expected " + "ab" * 32):
        resolve_model("tiny-openai/wrong")
    assert [p for p in (tmp_path / "cf-cache").rglob("*") if p.is_file()] == []
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):  # and again: nothing stale was kept
        resolve_model("tiny-openai/wrong")
    assert len(server.requests) == 2


@pytest.mark.full_suite
def test_interrupted_download_resumes_from_where_it_stopped(served_openai, tmp_path):
    server, _, _ = served_openai
    half = len(server.payload) // 2
    server.drop_after = half
    with pytest.raises(DownloadError, match="interrupted|stopped after .* run the same command again to resume"):
        resolve_model("tiny-openai/test")
    files = [p for p in (tmp_path / "cf-cache").rglob("*") if p.is_file()]
    assert [p.suffix for p in files] == [".partial"] and files[0].stat().st_size == half  # nothing final
    resolved = resolve_model("tiny-openai/test")
    assert resolved.is_checkpoint
    assert server.requests[-1].get("Range") == f"bytes={half}-"  # resumed, not restarted


@pytest.mark.full_suite
def test_resolve_checkpoint_converts_local_sources_once(tmp_path):
    pt = tmp_path / "m.pt"
    openai_pt(pt)
    first = resolve_checkpoint(pt)
    assert read_checkpoint_info(first).config.act == "quick_gelu"
    mtime = first.stat().st_mtime_ns
    assert resolve_checkpoint(pt) == first and first.stat().st_mtime_ns == mtime  # not converted again


def test_load_of_a_corrupt_or_wrong_file_says_so(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=str(bad.name)):
        clipforge.load(bad)
