"""IVF-PQ candidates ordered by finer codes held in memory (``clipforge.index.refine``): the plan
gives them where they fit the budget, they order candidates as their decoded vectors do, their
file is tied to its build, updates append to it, and a file from another build is rebuilt."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_index_ann import clustered, fill_store

from clipforge.index import open_vector_index
from clipforge.index.ann import ann_paths, recall_at_k
from clipforge.index.plan import plan_index, refine_bytes
from clipforge.index.recall import _exact_topk_ids, perturbed_queries
from clipforge.index.refine import RefineCodes, RefineFileError
from clipforge.index.store import NewRow

pytest.importorskip("faiss", reason="faiss-cpu not installed (pip install 'clipforge[index]')")

GiB = 2**30
BUDGET = 400_000  # 4,000 x 64-D: IVF-PQ (the float32 lists need 1 MB) with 32 bytes of finer codes


def test_the_plan_gives_finer_codes_where_they_fit_beside_the_lists():
    pq = plan_index(10_000_000, 512, memory_budget=4 * GiB)  # 0.7 GiB of lists, 2.4 GiB of finer codes
    assert (pq.pq_m, pq.refine_m) == (64, 256)
    assert pq.list_bytes + pq.count * pq.refine_m <= 4 * GiB * 7 / 8
    assert plan_index(10_000_000, 512, memory_budget=2 * GiB).refine_m == 0  # 128 bytes: too coarse
    assert plan_index(1_000_000, 512, memory_budget=GiB).refine_m == 256
    assert refine_bytes(768, 300, 96) == 0 and refine_bytes(768, 400, 96) == 384
    assert refine_bytes(32, 1000, 4) == 16  # never finer than 2-D sub-vectors


def test_shortlist_orders_candidates_as_their_decoded_vectors_do():
    vectors = clustered(3000, 32, seed=1)
    refine = RefineCodes.train(vectors, 16)
    ids = np.arange(5, 3005)  # rows by id: the table grows to the largest one
    refine.set(ids[:1000], vectors[:1000])
    refine.set(ids[1000:], vectors[1000:])
    assert refine.codes.shape == (3005, 16) and not refine.codes[:5].any()
    decoded = refine._quantizer().decode(refine.codes[ids])  # (N, E)
    queries = perturbed_queries(vectors, 8, seed=2)
    candidates = np.stack([np.random.default_rng(i).choice(ids, 300, replace=False) for i in range(8)])
    got = refine.shortlist(queries, candidates, 20)  # (Q, 20)
    for q, cand, short in zip(queries, candidates, got, strict=True):
        scores = decoded[cand - 5] @ q
        np.testing.assert_array_equal(short, cand[np.argsort(-scores, kind="stable")[:20]])
    few = refine.shortlist(queries[:1], np.array([[7, -1, 99_999]]), 5)  # unknown ids are not candidates
    assert few.tolist() == [[7, -1, -1, -1, -1]]


def test_the_file_round_trips_and_refuses_another_build(tmp_path):
    vectors = clustered(2000, 32, seed=3)
    refine = RefineCodes.train(vectors, 8)
    path = tmp_path / "x.refine"
    refine.create_file(path)
    ids = np.concatenate([np.arange(1, 1001), np.arange(1200, 2200)])  # a hole: 1001-1199 deleted
    order = np.random.default_rng(0).permutation(len(ids))  # written in any order
    refine.write_rows(path, ids[order][:700], refine.encode(vectors[order][:700]))
    refine.write_rows(path, ids[order][700:], refine.encode(vectors[order][700:]))
    loaded = RefineCodes.load(path, token=refine.token, rows=2200)
    np.testing.assert_array_equal(loaded.codes[ids], refine.encode(vectors))
    np.testing.assert_array_equal(loaded.centroids, refine.centroids)
    with pytest.raises(RefineFileError, match="another index build"):
        RefineCodes.load(path, token="0" * 16, rows=2200)
    with pytest.raises(RefineFileError, match="holds 2200 rows"):
        RefineCodes.load(path, token=refine.token, rows=2300)
    (tmp_path / "junk").write_bytes(b"\0" * 200)
    with pytest.raises(RefineFileError, match="not a clipforge refinement file"):
        RefineCodes.load(tmp_path / "junk", token=refine.token, rows=1)


@pytest.mark.full_suite
def test_a_refined_index_finds_what_exact_search_finds_and_keeps_its_file_up_to_date(tmp_path, caplog):
    vectors = clustered(4000, 64, seed=3)
    store = fill_store(tmp_path / "r.cfidx", vectors)
    paths = ann_paths(store.path)
    ivf, _ = open_vector_index(store, threshold=1000, memory_budget=BUDGET)
    assert ivf.variant == "pq" and ivf.refine is not None and ivf.refine.m == 32
    meta = json.loads(paths.meta.read_text())
    assert meta["refine"] == {"m": 32, "token": ivf.refine.token} and meta["candidates"] == 500
    assert "recall_at_candidates" in meta["calibration"]
    queries = perturbed_queries(vectors, 100, seed=7)
    truth = np.arange(1, 4001)[_exact_topk_ids(vectors, queries, 10)]
    scores, found = ivf.search(queries, 10)
    assert recall_at_k(found, truth) >= 0.95
    np.testing.assert_allclose(scores[:, 0], np.sum(vectors[found[:, 0] - 1] * queries, axis=1), atol=1e-5)
    # another process's update (no index in memory): the new rows' codes are appended to the file
    new = clustered(30, 64, seed=11)
    with store.transaction() as c:
        store.insert(c, [NewRow(f"n{i}.png", 1, 1, f"n{i}", v) for i, v in enumerate(new)])
    updated, fp = open_vector_index(store, threshold=1000, memory_budget=BUDGET)
    new_ids = np.arange(4001, 4031)
    on_disk = RefineCodes.load(paths.refine, token=ivf.refine.token, rows=fp.max_id + 1)
    np.testing.assert_array_equal(on_disk.codes[new_ids], ivf.refine.encode(new))
    assert updated.search(new[:1], 1)[1][0, 0] == 4001
    # a refinement file of another build (a crash between its rename and the sidecar's): rebuilt
    other = RefineCodes.train(vectors, 32)
    other.create_file(paths.refine)
    with caplog.at_level("WARNING", logger="clipforge.index.ann"):
        rebuilt, _ = open_vector_index(store, threshold=1000, memory_budget=BUDGET)
    assert "written by another index build" in caplog.text and "rebuilding" in caplog.text
    assert rebuilt.refine.token != ivf.refine.token and len(rebuilt) == 4030
    assert recall_at_k(rebuilt.search(queries, 10)[1], truth) >= 0.95
    store.close()
