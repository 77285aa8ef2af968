"""Exact and approximate (faiss IVF) search agree; the persisted ANN index follows the database."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipforge.index import ExactIndex, ImageIndex, IndexStore, IvfIndex, open_vector_index
from clipforge.index.ann import ann_paths, ivf_nlist, recall_at_k
from clipforge.index.store import NewRow

pytest.importorskip("faiss", reason="faiss-cpu not installed (pip install 'clipforge[index]')")


def clustered(
    n: int,
    dim: int,
    *,
    clusters: int = 50,
    spread: float = 0.5,
    seed: int = 0,
    sample_seed: int | None = None,
) -> np.ndarray:
    """Unit vectors around random centres (drawn from ``seed``): (N, dim) float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    if sample_seed is not None:
        rng = np.random.default_rng(sample_seed)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_index_topk_and_edge_cases():
    vectors = clustered(100, 8)
    ids = np.arange(1000, 1100)
    index = ExactIndex(ids, vectors)
    scores, found = index.search(vectors[:3], 5)
    assert found[:, 0].tolist() == [1000, 1001, 1002]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    brute = np.argsort(-(vectors[:3] @ vectors.T), axis=1)[:, :5] + 1000
    assert (found == brute).all()
    scores, found = index.search(vectors[:1], 150)  # k > N: padded with -1
    assert (found[0, :100] >= 0).all() and (found[0, 100:] == -1).all()
    empty = ExactIndex(np.zeros(0, np.int64), np.zeros((0, 8), np.float32))
    assert (empty.search(vectors[:1], 3)[1] == -1).all()


def test_nlist_rule():
    assert ivf_nlist(10) == 1
    assert ivf_nlist(10_000) == 256  # 4 * sqrt(1e4) = 400 -> 512, trimmed to 256 by 39 * nlist <= n
    assert ivf_nlist(1_000_000) == 4096


@pytest.mark.parametrize("queries_from", ["same clusters", "other clusters"])
def test_ivf_agrees_with_exact(queries_from):
    vectors = clustered(6000, 32, clusters=60)
    ids = np.arange(6000) * 3 + 7  # ids need not be positions
    # queries like the data, and queries from elsewhere (as text queries are, relative to images)
    queries = clustered(100, 32, clusters=60, seed=0 if queries_from == "same clusters" else 1, sample_seed=1)
    exact = ExactIndex(ids, vectors)
    ivf = IvfIndex.build(ids, vectors, recall_target=0.97)
    assert 1 <= ivf.nprobe < ivf.nlist
    exact_scores, truth = exact.search(queries, 10)
    scores, found = ivf.search(queries, 10)
    assert recall_at_k(found, truth) >= 0.95
    assert (found[:, 0] == truth[:, 0]).mean() >= 0.95
    # where both return the same neighbour, they give it the same score
    for q in range(len(queries)):
        known = dict(zip(truth[q].tolist(), exact_scores[q].tolist(), strict=True))
        for i, s in zip(found[q].tolist(), scores[q].tolist(), strict=True):
            if i in known:
                assert s == pytest.approx(known[i], abs=1e-5)
    # probing every list is exact
    _, full = ivf.search(queries, 10, nprobe=ivf.nlist)
    assert recall_at_k(full, truth) == 1.0


def fill_store(path, vectors, *, start=0, model_id="m1"):
    store = IndexStore(path, create=True)
    store.bind(model_id=model_id, embed_dim=vectors.shape[1], root=path.parent)
    with store.transaction() as c:
        rows = [NewRow(f"f{start + i}.png", 1, 1, f"h{start + i}", v) for i, v in enumerate(vectors)]
        store.insert(c, rows)
    return store


@pytest.mark.full_suite
def test_persisted_ann_is_reused_updated_or_rebuilt(tmp_path, monkeypatch):
    db = tmp_path / "i.cfidx"
    vectors = clustered(3000, 16)
    store = fill_store(db, vectors)
    paths = ann_paths(db)
    index_path, meta_path = paths.index, paths.meta

    small, _ = open_vector_index(store, threshold=5000)
    assert small.kind == "exact" and not index_path.exists()

    ivf, fp = open_vector_index(store, threshold=1000)
    assert ivf.kind == "ivf" and len(ivf) == 3000 and index_path.is_file()
    assert json.loads(meta_path.read_text())["fingerprint"] == fp.to_dict()

    built = []
    real_build = IvfIndex.trained.__func__  # every build, in memory or streamed, trains a new index
    counting = classmethod(lambda cls, *a, **k: built.append(1) or real_build(cls, *a, **k))
    monkeypatch.setattr(IvfIndex, "trained", counting)
    again, _ = open_vector_index(store, threshold=1000)
    assert again.kind == "ivf" and built == []  # loaded from disk

    new_vec = clustered(1, 16, seed=9)[0]
    with store.transaction() as c:  # a new row, and a deleted one: same count, other fingerprint
        store.delete(c, ["f5.png"])
        store.insert(c, [NewRow("late.png", 1, 1, "late", new_vec)])
    late_id = store.files()["late.png"].id
    assert store.fingerprint().count == 3000 and store.fingerprint() != fp
    updated, fp2 = open_vector_index(store, threshold=1000)
    assert built == [] and len(updated) == 3000 and fp2 == store.fingerprint()  # updated, not rebuilt
    _, found = updated.search(new_vec[None], 1, nprobe=updated.nlist)
    assert found[0, 0] == late_id
    _, found = updated.search(vectors[5][None], 3, nprobe=updated.nlist)
    assert 6 not in found[0]  # f5.png had id 6
    assert json.loads(meta_path.read_text())["fingerprint"] == fp2.to_dict()  # and saved
    reloaded, _ = open_vector_index(store, threshold=1000)
    assert built == [] and len(reloaded) == 3000

    store.bind(model_id="m2", embed_dim=16, root=db.parent, rebuild=True)  # another model: rebuilt
    with store.transaction() as c:
        store.insert(c, [NewRow(f"g{i}.png", 1, 1, f"g{i}", v) for i, v in enumerate(vectors[:1500])])
    open_vector_index(store, threshold=1000)
    assert built == [1]

    with store.transaction() as c:  # grown more than max_growth times since training: rebuilt
        store.insert(c, [NewRow(f"h{i}.png", 1, 1, f"h{i}", v) for i, v in enumerate(clustered(1600, 16))])
    open_vector_index(store, threshold=1000, max_growth=2.0)
    assert built == [1, 1]

    meta_path.write_text("{ not json")  # damaged sidecar: rebuilt, not a crash
    open_vector_index(store, threshold=1000)
    assert built == [1, 1, 1]
    index_path.write_bytes(index_path.read_bytes())  # a file the sidecar does not describe: rebuilt
    open_vector_index(store, threshold=1000)
    assert built == [1, 1, 1, 1]
    store.close()


def test_in_memory_indexes_follow_the_database(tmp_path):
    db = tmp_path / "i.cfidx"
    vectors = clustered(1500, 16)
    store = fill_store(db, vectors)
    for threshold in (10_000, 1000):  # exact, then IVF
        prev = open_vector_index(store, threshold=threshold)
        assert open_vector_index(store, threshold=threshold, previous=prev) is prev  # unchanged
        extra = clustered(10, 16, seed=threshold)
        with store.transaction() as c:
            store.delete(c, [f"f{i}.png" for i in range(10)])
            store.insert(
                c,
                [NewRow(f"x{threshold}-{i}.png", 1, 1, f"x{threshold}-{i}", v) for i, v in enumerate(extra)],
            )
        index, fp = open_vector_index(store, threshold=threshold, previous=prev)
        assert fp == store.fingerprint() and len(index) == len(prev[0])
        ids, vecs, _ = store.load_embeddings()
        exact = ExactIndex(ids, vecs)
        q = np.concatenate([extra, vectors[:10]])
        kw = {"nprobe": index.nlist} if index.kind == "ivf" else {}
        assert (index.search(q, 5, **kw)[1] == exact.search(q, 5)[1]).all()
        store.bind(model_id="m1", embed_dim=16, root=db.parent, rebuild=True)  # start over, same model
        with store.transaction() as c:
            store.insert(c, [NewRow(f"f{i}.png", 1, 1, f"h{i}", v) for i, v in enumerate(vectors)])
    store.close()


def test_searches_during_in_place_updates(tmp_path):
    import threading

    db = tmp_path / "i.cfidx"
    vectors = clustered(2000, 16)
    store = fill_store(db, vectors)
    index, fp = open_vector_index(store, threshold=1000)
    errors, stop = [], threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                scores, found = index.search(vectors[:4], 5)
                assert found.shape == (4, 5)
            except Exception as e:  # noqa: BLE001 (collected for the assertion below)
                errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for step in range(10):
            with store.transaction() as c:
                store.delete(c, [f"f{step}.png"])
                store.insert(c, [NewRow(f"n{step}.png", 1, 1, f"n{step}", vectors[step])])
            index, fp = open_vector_index(store, threshold=1000, previous=(index, fp))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and len(index) == 2000
    store.close()


def test_image_index_uses_ann_above_threshold(tmp_path):
    db = tmp_path / "i.cfidx"
    vectors = clustered(2000, 16)
    fill_store(db, vectors).close()
    index = ImageIndex.open(db, threshold=1000)
    assert index.kind == "ivf"
    hits = index.search_vector(vectors[42], k=5)
    assert hits[0].path == "f42.png" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="without a model"):
        index.search(text="a dog")
