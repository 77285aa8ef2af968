"""Nearest-neighbour structures over stored embeddings: exact search, and faiss IVF with a
calibrated ``nprobe``.

* :class:`ExactIndex`: one matrix product and a partial sort. Below ``threshold`` vectors (50k by
  default) it is a few milliseconds per query and needs no training.
* :class:`IvfIndex`: faiss ``IndexIVFFlat`` with inner product on unit vectors (cosine). ``nlist``
  is about ``4 * sqrt(N)`` (a power of two); centroids are trained by spherical k-means on a
  sample of ``64 * nlist`` vectors. ``nprobe`` is calibrated at build time: the smallest number of
  probed lists whose recall@10 against exact search reaches ``recall_target`` on heavily perturbed
  stored vectors (a stand-in for text queries, see :func:`calibrate_nprobe`).

Both are in memory only and know nothing of the database: :mod:`clipforge.index.ann` chooses one
for a store, persists the IVF index beside it and keeps it up to date.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from ..fileio import atomic_write
from ..optional import require
from ..progress import progress_bar
from .records import Snapshot

log = logging.getLogger(__name__)

DEFAULT_RECALL_TARGET = 0.97


class VectorIndex(Protocol):
    kind: str

    def __len__(self) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, E) float32 → (scores (Q, k), ids (Q, k)); missing neighbours have id -1. ``allowed``:
        only these ids are candidates (a filter), None for all."""
        ...


def _faiss() -> ModuleType:
    loader_log = logging.getLogger("faiss.loader")  # reports each CPU-specific build it tries at INFO
    if loader_log.level == logging.NOTSET:  # ("Could not load library with AVX2 support"): not news
        loader_log.setLevel(logging.WARNING)
    return require("faiss", extra="index", purpose="approximate search", package="faiss-cpu")


class ExactIndex:
    """Brute-force inner-product search over a (N, E) float32 matrix."""

    kind = "exact"

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def updated(self, snap: Snapshot) -> ExactIndex:
        """A new index: rows no longer live dropped, the snapshot's new rows appended."""
        keep = np.isin(self.ids, snap.all_ids)
        return ExactIndex(
            np.concatenate([self.ids[keep], snap.ids]), np.concatenate([self.vectors[keep], snap.vectors])
        )

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))  # (Q, E)
        ids, vectors = self.ids, self.vectors
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, vectors = ids[keep], vectors[keep]
        q, n = len(queries), len(ids)
        scores_out = np.full((q, k), -np.inf, dtype=np.float32)
        ids_out = np.full((q, k), -1, dtype=np.int64)
        if n == 0 or k <= 0:
            return scores_out, ids_out
        kk = min(k, n)
        scores = queries @ vectors.T  # (Q, N)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (q, 1))
        top_scores = np.take_along_axis(scores, top, axis=1)  # (Q, kk)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        scores_out[:, :kk] = np.take_along_axis(top_scores, order, axis=1)
        ids_out[:, :kk] = ids[top]
        return scores_out, ids_out


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self):
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def ivf_nlist(n: int) -> int:
    """Number of inverted lists for ``n`` vectors: the power of two nearest ``4 * sqrt(n)``, with at
    least 39 training points per list (faiss's own minimum)."""
    if n < 39:
        return 1
    target = 4.0 * math.sqrt(n)
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return max(1, min(nlist, 65536))


class IvfIndex:
    """faiss ``IndexIVFFlat`` (inner product) with a calibrated ``nprobe``."""

    kind = "ivf"

    def __init__(self, index, *, nprobe: int, info: dict | None = None) -> None:
        self.index = index
        self.nprobe = int(nprobe)
        self.info = dict(info or {})
        self._rw = _ReadWriteLock()  # searches share it; in-place updates take it alone

    @property
    def trained_count(self) -> int:
        return int(self.info.get("trained_count", len(self)))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    def search(
        self, queries: np.ndarray, k: int, *, nprobe: int | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, E)
        params = faiss.SearchParametersIVF(nprobe=int(nprobe or self.nprobe))  # per call: thread-safe
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params.sel = selector  # params holds a borrowed pointer: ``selector`` lives until the return
        with self._rw.read():
            scores, ids = self.index.search(queries, int(k), params=params)
        return scores, ids

    def apply(self, snap: Snapshot) -> None:
        """Update in place: remove ids that are no longer live, add the snapshot's new rows
        (assigned to the existing centroids)."""
        faiss = _faiss()
        live = faiss.IDSelectorBatch(np.ascontiguousarray(snap.all_ids, dtype=np.int64))
        with self._rw.write():
            self.index.remove_ids(faiss.IDSelectorNot(live))
            if len(snap.ids):
                self.index.add_with_ids(np.ascontiguousarray(snap.vectors, dtype=np.float32), snap.ids)

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        recall_target: float = DEFAULT_RECALL_TARGET,
        train_per_list: int = 64,
        niter: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> IvfIndex:
        """Train, fill and (unless ``nprobe`` is given) calibrate an IVF index."""
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, E)
        n, dim = vectors.shape
        nlist = nlist or ivf_nlist(n)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # unit-norm centroids suit cosine similarity
        index.cp.niter = niter
        index.cp.seed = seed
        sample = np.sort(rng.choice(n, size=min(n, train_per_list * nlist), replace=False))
        index.train(vectors[sample])
        t_train = time.perf_counter() - t0
        step = 65536
        for start in progress_bar(range(0, n, step), desc="ann add", unit="chunk", enabled=progress):
            chunk_ids = np.asarray(ids[start : start + step], dtype=np.int64)
            index.add_with_ids(vectors[start : start + step], chunk_ids)
        t_add = time.perf_counter() - t0 - t_train
        built = cls(index, nprobe=nprobe or 1)
        calibration = None
        if nprobe is None:
            built.nprobe, calibration = calibrate_nprobe(
                built, ids, vectors, recall_target=recall_target, seed=seed
            )
        built.info = {
            "nlist": nlist,
            "nprobe": built.nprobe,
            "trained_count": n,
            "train_seconds": round(t_train, 3),
            "add_seconds": round(t_add, 3),
            "calibration": calibration,
        }
        log.info(
            "built IVF index: %d vectors, nlist=%d, nprobe=%d (train %.1f s, add %.1f s)",
            n,
            nlist,
            built.nprobe,
            t_train,
            t_add,
        )
        return built

    def save(self, path: str | Path) -> None:
        faiss = _faiss()
        atomic_write(Path(path), lambda tmp: faiss.write_index(self.index, tmp))

    @classmethod
    def load(cls, path: str | Path, *, nprobe: int, info: dict | None = None) -> IvfIndex:
        faiss = _faiss()
        return cls(faiss.read_index(str(path)), nprobe=nprobe, info=info)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (Q, k) ids that appears in the same row of ``found``."""
    k = truth.shape[1]
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


def calibrate_nprobe(
    index: IvfIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    recall_target: float = DEFAULT_RECALL_TARGET,
    n_queries: int = 200,
    k: int = 10,
    noise: float = 3.0,
    seed: int = 0,
) -> tuple[int, dict]:
    """Smallest power-of-two ``nprobe`` with recall@k ≥ ``recall_target`` against exact search.

    Queries are stored vectors plus Gaussian noise of ``noise`` times their norm, re-normalised:
    with the default 3.0 a query has cosine ≈ 0.3 with its source vector, about what a CLIP text
    query has with its best-matching images. Such queries sit between clusters, the hard case for
    IVF, so the calibrated ``nprobe`` holds for real text queries, not only for near-duplicates.
    """
    rng = np.random.default_rng(seed + 1)
    n, dim = vectors.shape
    pick = rng.choice(n, size=min(n_queries, n), replace=False)
    q = vectors[pick] + rng.standard_normal((len(pick), dim)).astype(np.float32) * (noise / math.sqrt(dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = ids[_exact_topk_ids(vectors, q, k)]  # (Q, k) stored ids
    tried = {}
    nprobe = 1
    while True:
        _, found = index.search(q, k, nprobe=nprobe)
        recall = recall_at_k(found, exact)
        tried[nprobe] = round(recall, 4)
        if recall >= recall_target or nprobe >= index.nlist:
            return nprobe, {"recall_target": recall_target, "recall_at_nprobe": tried, "queries": len(pick)}
        nprobe = min(nprobe * 2, index.nlist)


def _exact_topk_ids(vectors: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 262144) -> np.ndarray:
    """Row positions of the exact top-k, scanning ``vectors`` in chunks (bounded memory)."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        s = queries @ vectors[start : start + chunk].T  # (Q, chunk)
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, axis=1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
    return best_i
