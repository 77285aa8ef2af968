"""Scale-out: ranks embed disjoint slices into shard parts; merging them equals indexing directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from search_fixtures import make_folder, tiny_encoder
from test_index import assert_same_index, run_index

from clipforge.index import IndexStore
from clipforge.index.shards import embed_shards, merge_shards


def test_shards_merge_to_the_same_index(tmp_path, make_store):
    root, out = tmp_path / "photos", tmp_path / "emb"
    make_folder(root, 11)
    (root / "broken.png").write_bytes(b"nope")
    enc = tiny_encoder()
    parts = []
    for rank in range(3):
        parts += embed_shards(
            root,
            enc,
            out,
            rank=rank,
            world_size=3,
            part_size=2,
            dtype="float32",
            num_workers=0,
            progress=False,
        )
    assert len(parts) == 3 * 2  # 12 files over 3 ranks: 4 each, in parts of 2
    rows = [r[0] for p in parts for r in json.loads(p.read_text())["rows"]]
    assert len(rows) == len(set(rows)) == 11  # disjoint, complete, the broken file skipped

    with make_store("merged") as store:
        report = merge_shards(store, out)
    assert report.added == 11 and [s.path for s in report.skipped] == ["broken.png"]
    run_index(root, lambda: make_store("direct"), enc)
    assert_same_index(make_store("merged"), make_store("direct"))

    # merging again adds nothing; a later incremental run finds nothing to do
    with make_store("merged") as store:
        assert merge_shards(store, out).added == 0
        assert store.skipped()["broken.png"].reason
        assert store.encoding() == (enc.precision, enc.backend)  # how the shards were encoded, kept
    assert run_index(root, lambda: make_store("merged"), enc).added == 0


def test_embed_resumes_finished_parts_and_checks_models(tmp_path):
    root, out = tmp_path / "photos", tmp_path / "emb"
    make_folder(root, 6)
    enc = tiny_encoder()
    parts = embed_shards(root, enc, out, part_size=2, num_workers=0, progress=False)
    first = parts[0].with_suffix(".npy").stat().st_mtime_ns
    parts[-1].unlink()  # as if killed before the last part was finished
    parts = embed_shards(root, enc, out, part_size=2, num_workers=0, progress=False)
    assert len(parts) == 3 and parts[0].with_suffix(".npy").stat().st_mtime_ns == first
    stored = np.load(parts[0].with_suffix(".npy"))
    assert stored.dtype == np.float16 and stored.shape == (2, enc.embed_dim)

    with IndexStore(tmp_path / "a.cfidx", create=True) as store:
        with pytest.raises(ValueError, match="embedded with model"):
            merge_shards(store, out, model_id="sha256:another")
    with IndexStore(tmp_path / "b.cfidx", create=True) as store, pytest.raises(FileNotFoundError):
        merge_shards(store, tmp_path)
    with pytest.raises(ValueError, match="rank"):
        embed_shards(root, enc, out, rank=2, world_size=2)
