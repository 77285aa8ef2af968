"""Measuring an approximate index against exact search, and choosing ``nprobe`` (and how many
IVF-PQ candidates to re-rank) from it.

Exact top-k is computed in chunks (of a matrix) or over a stream of ``(ids, vectors)`` batches
(of a store), so ground truth never needs every vector in memory at once. :func:`calibrate_nprobe`
picks the smallest number of probed lists that reaches a recall target on queries that stand in
for text queries (stored vectors heavily perturbed, see :func:`perturbed_queries`);
:func:`calibrate_search` then the smallest number of re-ranked candidates that keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

import numpy as np

DEFAULT_RECALL_TARGET = 0.97
PLATEAU = 0.005  # recall given up, at most, to probe fewer lists when the target is out of reach
SCORE_CELLS = 1 << 16  # query x vector scores computed at a time (bounded temporaries)


class ProbedIndex(Protocol):
    nlist: int
    candidates: int | None  # IVF-PQ candidates re-ranked per query (k <= 10)

    def search(
        self, queries: np.ndarray, k: int, *, nprobe: int | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (Q, k) ids that appears in the same row of ``found``."""
    k = truth.shape[1]
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


def perturbed_queries(vectors: np.ndarray, n: int, *, noise: float = 3.0, seed: int = 0) -> np.ndarray:
    """(min(n, N), E) unit queries: rows of ``vectors`` plus Gaussian noise of ``noise`` times their
    norm, re-normalised. With the default 3.0 a query has cosine ≈ 0.3 with its source vector,
    about what a CLIP text query has with its best-matching images. Such queries sit between
    clusters, the hard case for IVF, so an ``nprobe`` calibrated on them holds for real text
    queries, not only for near-duplicates."""
    rng = np.random.default_rng(seed + 1)
    m, dim = vectors.shape
    pick = rng.choice(m, size=min(n, m), replace=False)
    q = vectors[pick] + rng.standard_normal((len(pick), dim)).astype(np.float32) * (noise / math.sqrt(dim))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)  # (Q, E)


def exact_topk_stream(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], queries: np.ndarray, k: int
) -> np.ndarray:
    """(Q, k) ids of the exact top-k inner products over a stream of ``(ids (B,), vectors (B, E))``
    batches, holding one batch, the running (Q, 2k) best and (Q, ``SCORE_CELLS`` / Q) scores at a
    time (-1 where fewer than k)."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    cols = max(1, SCORE_CELLS // max(1, len(queries)))
    for batch_ids, batch in batches:
        for start in range(0, len(batch_ids), cols):
            ids = np.asarray(batch_ids[start : start + cols], dtype=np.int64)
            s = queries @ np.asarray(batch[start : start + cols], dtype=np.float32).T  # (Q, C)
            kk = min(k, s.shape[1])
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]  # (Q, kk)
            best_s = np.concatenate([best_s, np.take_along_axis(s, top, axis=1)], axis=1)
            best_i = np.concatenate([best_i, ids[top]], axis=1)
            keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
    if best_i.shape[1] < k:
        best_i = np.concatenate([best_i, np.full((len(queries), k - best_i.shape[1]), -1, np.int64)], axis=1)
    return best_i


def _exact_topk_ids(vectors: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 262144) -> np.ndarray:
    """Row positions of the exact top-k, scanning ``vectors`` in chunks (bounded memory)."""
    chunks = (
        (np.arange(start, min(start + chunk, len(vectors))), vectors[start : start + chunk])
        for start in range(0, len(vectors), chunk)
    )
    return exact_topk_stream(chunks, queries, k)


def nprobe_for_recall(
    index: ProbedIndex,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    recall_target: float = DEFAULT_RECALL_TARGET,
) -> tuple[int, dict]:
    """Smallest power-of-two ``nprobe`` whose recall@k against ``truth`` (Q, k) ids reaches
    ``recall_target``, and the recall at each one tried. When none does (a compressed index has a
    ceiling below the target), the smallest within ``PLATEAU`` of the best recall seen: probing
    more lists would cost time for no recall."""
    k = truth.shape[1]
    tried = {}
    nprobe = 1
    while True:
        _, found = index.search(queries, k, nprobe=nprobe)
        recall = recall_at_k(found, truth)
        tried[nprobe] = round(recall, 4)
        if recall >= recall_target or nprobe >= index.nlist:
            break
        nprobe = min(nprobe * 2, index.nlist)
    if recall < recall_target:
        best = max(tried.values())
        nprobe = min(n for n, r in tried.items() if r >= best - PLATEAU)
    return nprobe, {"recall_target": recall_target, "recall_at_nprobe": tried, "queries": len(queries)}


def calibrate_search(
    index: ProbedIndex,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    recall_target: float = DEFAULT_RECALL_TARGET,
    candidate_ladder: list[int] | tuple[int, ...] = (),
) -> tuple[int, int | None, dict]:
    """``(nprobe, candidates, details)``: :func:`nprobe_for_recall` with the most candidates of
    ``candidate_ladder`` re-ranked (an IVF-PQ index's recall is capped by its candidate list,
    not only by the lists it probes), then the fewest candidates that reach ``recall_target`` at
    that ``nprobe`` (or come within ``PLATEAU`` of the best). Without a ladder (no re-ranking),
    candidates is None. ``index.candidates`` is left at the choice."""
    ladder = sorted(candidate_ladder)
    if not ladder:
        nprobe, details = nprobe_for_recall(index, queries, truth, recall_target=recall_target)
        return nprobe, None, details
    index.candidates = ladder[-1]
    nprobe, details = nprobe_for_recall(index, queries, truth, recall_target=recall_target)
    tried = {}
    for candidates in ladder:
        index.candidates = candidates
        _, found = index.search(queries, truth.shape[1], nprobe=nprobe)
        tried[candidates] = round(recall_at_k(found, truth), 4)
        if tried[candidates] >= recall_target:
            break
    best = max(tried.values())
    if best < recall_target:
        index.candidates = min(c for c, r in tried.items() if r >= best - PLATEAU)
    return nprobe, int(index.candidates), {**details, "recall_at_candidates": tried}


def calibrate_nprobe(
    index: ProbedIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    recall_target: float = DEFAULT_RECALL_TARGET,
    n_queries: int = 200,
    k: int = 10,
    noise: float = 3.0,
    seed: int = 0,
) -> tuple[int, dict]:
    """Smallest power-of-two ``nprobe`` with recall@k ≥ ``recall_target`` against exact search over
    ``(ids, vectors)`` (all in memory), on :func:`perturbed_queries` of the vectors."""
    q = perturbed_queries(vectors, n_queries, noise=noise, seed=seed)
    exact = ids[_exact_topk_ids(vectors, q, k)]  # (Q, k) stored ids
    return nprobe_for_recall(index, q, exact, recall_target=recall_target)
