"""The calibrated relevance score: per-query backgrounds from a uniform sample of the store, one
cutoff that means the same for every query, and the flag / parameter that filters by it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from search_fixtures import make_folder, save_tiny_checkpoint

from clipforge.index import ImageIndex, IndexStore
from clipforge.index.relevance import (
    MIDPOINT_Z,
    ScoreCalibration,
    relevance_of_z,
    sample_embeddings,
)
from clipforge.index.store import NewRow

DIM = 32


def fill(path, vectors: np.ndarray, *, store=None) -> IndexStore:
    """``vectors`` in a new store: an SQLite file at ``path``, or the empty ``store`` given."""
    store = store if store is not None else IndexStore(path, create=True)
    store.bind(model_id="m1", embed_dim=vectors.shape[1], root=path.parent)
    with store.transaction() as c:
        store.insert(c, [NewRow(f"f{i}.png", 1, 1, f"h{i}", v) for i, v in enumerate(vectors)])
    return store


def two_query_collection(n: int = 3000, *, share: float = 0.02, seed: int = 0):
    """Unit vectors whose cosines with two orthogonal queries are set by construction: the
    background scores about 0.20 with ``q1`` and 0.50 with ``q2``; a ``share`` of the rows match
    ``q1`` (cosine about 0.45) and another share match ``q2`` (about 0.75). ``q1``'s matches
    score below ``q2``'s background, so no single cosine cutoff can serve both queries.
    Returns (vectors (N, DIM), q1, q2, matches of q1 (N,) bool, matches of q2 (N,) bool)."""
    rng = np.random.default_rng(seed)
    q1, q2 = np.eye(DIM, dtype=np.float32)[0], np.eye(DIM, dtype=np.float32)[1]
    c1 = rng.normal(0.20, 0.03, n)
    c2 = rng.normal(0.50, 0.03, n)
    kind = rng.choice(3, size=n, p=[1 - 2 * share, share, share])  # 0 background, 1 matches q1, 2 q2
    c1[kind == 1] = rng.normal(0.45, 0.02, int(np.sum(kind == 1)))
    c2[kind == 2] = rng.normal(0.75, 0.02, int(np.sum(kind == 2)))
    rest = rng.standard_normal((n, DIM - 2))
    rest *= (np.sqrt(1.0 - c1**2 - c2**2) / np.linalg.norm(rest, axis=1))[:, None]
    vectors = np.concatenate([c1[:, None], c2[:, None], rest], axis=1).astype(np.float32)  # (N, DIM)
    return vectors, q1, q2, kind == 1, kind == 2


def best_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best F1 of any single cutoff on ``scores`` (pooled over queries) for ``labels``."""
    order = np.argsort(-scores)
    tp = np.cumsum(labels[order])
    precision, recall = tp / np.arange(1, len(order) + 1), tp / labels.sum()
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12)))


def test_relevance_is_the_standard_score_on_one_scale():
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((4000, DIM)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    calibration = ScoreCalibration(sample)
    q = sample[0]
    bg = calibration.background(q)
    scores = sample @ q
    assert bg.centre == pytest.approx(float(np.mean(scores)), abs=1e-6)
    assert bg.spread == pytest.approx(float(np.std(scores)), rel=1e-5)
    at = bg.centre + np.array([-2.0, 0.0, MIDPOINT_Z - 1, MIDPOINT_Z, MIDPOINT_Z + 1, 8.0]) * bg.spread
    rel = calibration.relevance(q, at)
    assert rel[3] == pytest.approx(0.5) and np.all(np.diff(rel) > 0) and 0.0 <= rel.min() and rel.max() <= 1.0
    assert rel[0] < 0.01 and rel[1] < 0.05 and rel[2] < 0.15 and rel[4] > 0.85 and rel[5] > 0.99
    np.testing.assert_allclose(relevance_of_z(np.array([MIDPOINT_Z])), [0.5])
    assert ScoreCalibration(np.empty((0, DIM), np.float32)).relevance(q, at) is None


def test_sample_is_uniform_distinct_live_rows_and_deterministic(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5000, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = fill(tmp_path / "s.cfidx", vectors)
    with store.transaction() as c:  # holes in the ids: every other row of the first 4000 removed
        store.delete(c, [f"f{i}.png" for i in range(0, 4000, 2)])
    live = np.concatenate([vectors[1:4000:2], vectors[4000:]])  # 3000 rows
    sample = sample_embeddings(store, size=1000)
    assert sample.shape == (1000, DIM) and sample.dtype == np.float32
    position = np.argmax(sample @ live.T, axis=1)  # each sampled row is one live row
    np.testing.assert_allclose(np.sum(sample * live[position], axis=1), 1.0, atol=1e-5)
    assert len(set(position.tolist())) == 1000
    # uniform over the live rows: 2000 of the 3000 are in the sparse first part
    assert np.mean(position < 2000) == pytest.approx(2 / 3, abs=0.05)
    np.testing.assert_array_equal(sample, sample_embeddings(store, size=1000))
    assert sample_embeddings(store, size=5000).shape == (3000, DIM)  # fewer rows than asked: all
    with pytest.raises(ValueError, match="size"):
        sample_embeddings(store, size=0)
    store.close()


def test_one_relevance_cutoff_serves_queries_no_cosine_cutoff_can(tmp_path):
    vectors, q1, q2, match1, match2 = two_query_collection()
    store = fill(tmp_path / "r.cfidx", vectors)
    index = ImageIndex(store, calibration_sample=1000)  # a sample of 1000 of the 3000 rows
    cosines, relevances, labels = [], [], []
    for q, match in ((q1, match1), (q2, match2)):
        hits = index.search_vector(q, k=len(vectors))
        assert all(0.0 <= h.relevance <= 1.0 for h in hits)
        assert [h.relevance for h in hits] == sorted((h.relevance for h in hits), reverse=True)
        row = np.array([int(h.path[1:-4]) for h in hits])
        cosines.append([h.score for h in hits])
        relevances.append([h.relevance for h in hits])
        labels.append(match[row])
        # 0.5 is 1.5 standard deviations (of all scores, matches included): every match, and the
        # background's upper 1 % or so
        kept = {int(h.path[1:-4]) for h in index.search_vector(q, k=len(vectors), min_relevance=0.5)}
        assert kept >= set(np.flatnonzero(match).tolist()) and len(kept) - match.sum() <= 60
        kept = {int(h.path[1:-4]) for h in index.search_vector(q, k=len(vectors), min_relevance=0.98)}
        assert kept == set(np.flatnonzero(match).tolist())
    cosine_f1 = best_f1(np.concatenate(cosines), np.concatenate(labels))
    relevance_f1 = best_f1(np.concatenate(relevances), np.concatenate(labels))
    assert relevance_f1 == 1.0 and cosine_f1 < 0.8
    store.close()


def test_min_relevance_pages_and_checks(tmp_path, make_store):
    vectors, q1, _, match1, _ = two_query_collection(1200, share=0.05, seed=2)
    store = fill(tmp_path / "p.cfidx", vectors, store=make_store("p"))
    index = ImageIndex(store)
    above = index.search_vector(q1, k=200, min_relevance=0.5)
    assert len(above) == int(match1.sum()) and min(h.relevance for h in above) >= 0.5
    paged = index.search_vector(q1, k=10, min_relevance=0.5) + index.search_vector(
        q1, k=200, offset=10, min_relevance=0.5
    )
    assert [h.id for h in paged] == [h.id for h in above]
    both = index.search_vector(q1, k=200, min_relevance=0.5, min_score=above[5].score)
    assert [h.id for h in both] == [h.id for h in above[:6]]
    assert index.search_vector(q1, k=5)[0].to_dict()["relevance"] == pytest.approx(above[0].relevance, abs=1e-4)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="min_relevance"):
            index.search_vector(q1, k=5, min_relevance=bad)
    store.close()


def test_relevance_follows_the_collection(tmp_path, make_store):
    vectors, q1, _, _, _ = two_query_collection(600, seed=3)
    store = fill(tmp_path / "f.cfidx", vectors[:300], store=make_store("f"))
    index = ImageIndex(store, refresh_seconds=0.0)
    assert len(index._calibration) == 300
    with store.transaction() as c:
        store.insert(c, [NewRow(f"g{i}.png", 1, 1, f"g{i}", v) for i, v in enumerate(vectors[300:])])
    assert index.refresh() and len(index._calibration) == 600
    assert index.search_vector(q1, k=1)[0].relevance is not None
    store.close()


def test_cli_min_relevance(tmp_path, capsys):
    from clipforge.cli.main import main

    root, db = tmp_path / "photos", tmp_path / "c.cfidx"
    make_folder(root, 6)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert main(["index", str(root), "--model", str(ckpt), "--db", str(db), "--no-progress", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["search", "a photo", "--db", str(db), "-k", "6", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 6 and all(0.0 <= h["relevance"] <= 1.0 for h in hits)
    cut = hits[2]["relevance"] - 1e-4  # the JSON rounds relevance to 4 decimals
    assert main(["search", "a photo", "--db", str(db), "-k", "6", "--json", "--min-relevance", str(cut)]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in kept] == [h["id"] for h in hits if h["relevance"] >= cut]
    assert main(["search", "a photo", "--db", str(db), "--min-relevance", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "relev." in out and "no results (with these filters)" in out
    assert main(["search", "a photo", "--db", str(db), "--min-relevance", "2"]) != 0
    err = capsys.readouterr().err
    assert "--min-relevance 2" in err and "Traceback" not in err
