"""One precision policy: embeddings are unit float32 whatever the towers ran in, an index records
how its images were encoded and queries follow it, and ``auto`` means the same on every command.
The index tests run under both outcomes of the CPU probe (the ``cpu_probe`` fixture)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from search_fixtures import make_folder, save_tiny_checkpoint

from clipforge.cli.main import main
from clipforge.device import CPU_BF16_ENV, default_precision, parse_precision, precision_name
from clipforge.index import ImageIndex, IndexStore
from clipforge.serve import SearchService


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture
def indexed(tmp_path, ckpt, cpu_probe, capsys):
    """A folder indexed by the CLI at its default precision: (root, db, precision auto meant)."""
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 6)
    assert main(["index", str(root), "--model", str(ckpt), "--db", str(db), "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    return root, db, "bf16" if cpu_probe else "fp32"


def test_the_probe_switch(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert default_precision(cpu) == torch.bfloat16 == parse_precision("auto", cpu)
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert default_precision(cpu) == torch.float32 == parse_precision("auto", cpu)
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match=CPU_BF16_ENV):
        default_precision(cpu)
    assert [precision_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_embeddings_are_unit_float32_at_every_precision(tiny_model, dtype):
    model = tiny_model("ViT-B-32", seed=0).to(dtype)
    images = torch.randn(4, 3, model.config.vision.image_size, model.config.vision.image_size)
    tokens = torch.randint(1, model.config.text.vocab_size, (4, model.config.text.context_length))
    with torch.no_grad():
        for emb in (model.encode_image(images), model.encode_text(tokens)):
            assert emb.dtype == torch.float32
            # normalised in bf16, norms are off by up to ~4e-3 and self-"cosines" exceed 1
            assert torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-6)


def test_index_records_how_it_was_encoded_and_queries_follow(indexed, ckpt, capsys, caplog):
    root, db, auto = indexed
    with IndexStore(db) as store:
        assert store.encoding() == (auto, "torch")
    query = root / "d2" / "img0005.tiff"
    with caplog.at_level(logging.WARNING):
        assert main(["search", "--db", str(db), "--image", str(query), "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == "d2/img0005.tiff"
    # encoded the same way as when indexed: the image finds itself at cosine 1 (never above)
    assert 1.0 - 1e-5 <= hits[0]["score"] <= 1.0
    assert "queries are encoded at" not in caplog.text

    index = ImageIndex.load(db)
    assert (index.encoder.precision, index.encoder.backend) == (auto, "torch")
    index.store.close()
    service = SearchService.from_paths(ckpt, db)  # what `clipforge serve` does
    assert service.encoder.precision == auto
    service.index.store.close()


def test_a_forced_mismatch_is_allowed_and_logged(indexed, capsys, caplog):
    root, db, auto = indexed
    other = "fp32" if auto == "bf16" else "bf16"
    query = root / "d2" / "img0005.tiff"
    with caplog.at_level(logging.WARNING):
        code = main(["search", "--db", str(db), "--image", str(query), "-k", "1", "--json", "--precision", other])
    assert code == 0
    assert f"images were encoded at precision {auto} with backend torch; queries are encoded at {other}" in caplog.text
    score = json.loads(capsys.readouterr().out)[0]["score"]
    assert score <= 1.0 and score == pytest.approx(1.0, abs=2e-2)


def test_an_index_without_the_record_falls_back_to_auto(indexed):
    _, db, auto = indexed
    with IndexStore(db) as store, store.transaction() as c:  # as an older clipforge left it
        c.execute("DELETE FROM meta WHERE key IN ('precision', 'backend')")
    index = ImageIndex.load(db)
    assert index.store.encoding() == (None, None)
    assert (index.encoder.precision, index.encoder.backend) == (auto, "torch")
    index.store.close()


def test_embed_shards_carry_the_encoding_into_the_merged_index(tmp_path, ckpt, cpu_probe, capsys):
    root, shards, db = tmp_path / "photos", tmp_path / "shards", tmp_path / "m.cfidx"
    make_folder(root, 4)
    embed = ["embed", str(root), "--model", str(ckpt), "--out", str(shards), "--no-progress", "--workers", "0"]
    assert main(embed) == 0
    assert main(["index", "--from-embeddings", str(shards), "--db", str(db), "--no-progress"]) == 0
    capsys.readouterr()
    with IndexStore(db) as store:
        assert store.encoding() == ("bf16" if cpu_probe else "fp32", "torch")
