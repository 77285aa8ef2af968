"""Nearest-neighbour structures over stored embeddings: exact search, and faiss IVF with a
calibrated ``nprobe``.

* :class:`ExactIndex`: one matrix product and a partial sort. Below ``threshold`` vectors (50k by
  default) it is a few milliseconds per query and needs no training.
* :class:`IvfIndex`: faiss ``IndexIVFFlat`` or ``IndexIVFPQ`` with inner product on unit vectors
  (cosine). ``nlist`` is about ``4 * sqrt(N)`` (a power of two, see :mod:`clipforge.index.plan`);
  centroids are trained by spherical k-means on a sample. IVF-PQ keeps ``pq_m`` bytes of codes a
  vector and re-ranks its candidates (``candidates``, calibrated, or ``RERANK_FACTOR`` per result)
  with the full vectors (fetched by id), so its recall is that of the candidate list, not of the
  codes. With finer codes in memory (:class:`~clipforge.index.refine.RefineCodes`) the candidates
  are first ordered by those, and only the best ``EXACT_FACTOR`` per result fetched. ``nprobe`` and
  the candidate count are calibrated at build time (:mod:`clipforge.index.recall`). A saved index
  can be opened with its inverted lists memory-mapped from the file (read-only; the first update
  loads an in-memory copy).

Both know nothing of the database: :mod:`clipforge.index.ann` chooses one for a store, builds it
by streaming, persists the IVF index beside it and keeps it up to date.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..fileio import atomic_write
from ..optional import require
from ..progress import progress_bar
from .plan import ivf_nlist
from .recall import DEFAULT_RECALL_TARGET, calibrate_nprobe
from .records import Snapshot

if TYPE_CHECKING:
    from .refine import RefineCodes

log = logging.getLogger(__name__)

Fetch = Callable[[np.ndarray], dict[int, np.ndarray]]  # ids → {id: (E,) float32 full vector}
RERANK_FACTOR = 50  # IVF-PQ: re-rank this many candidates per result asked for,
RERANK_MIN = 500  # at least this many,
RERANK_MAX = 5000  # at most this many
EXACT_FACTOR = 4  # with refinement codes: the best this many per result are scored exactly
RERANK_BYTES = 2**20  # full vectors a re-ranking search holds at once


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


class StaleMapping(RuntimeError):
    """A memory-mapped index cannot be updated: its file has been replaced since it was mapped."""


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class IvfIndex:
    """A faiss inverted-file index (inner product) with a calibrated ``nprobe``: ``IndexIVFFlat``
    (full vectors in the lists), or ``IndexIVFPQ`` (``pq_m`` bytes of product-quantisation codes a
    vector) whose candidates are re-ranked with the full vectors that ``fetch`` returns by id
    (after ``refine``'s finer codes, when there are, have kept the best few)."""

    kind = "ivf"

    def __init__(
        self,
        index,
        *,
        nprobe: int,
        info: dict | None = None,
        fetch: Fetch | None = None,
        path: Path | None = None,
        refine: RefineCodes | None = None,
    ) -> None:
        self.index = index
        self.nprobe = int(nprobe)
        self.info = dict(info or {})
        self.candidates = self.info.get("candidates")  # PQ candidates re-ranked for k <= 10 (calibrated)
        self.fetch = fetch  # ids → {id: (E,) float32} for re-ranking PQ candidates
        self.refine = refine  # finer codes that order the candidates before the exact step
        self.path = path  # the file the lists are memory-mapped from (read-only), None when in memory
        self._mapped = _file_identity(path) if path is not None else None
        self._rw = _ReadWriteLock()  # searches share it; in-place updates take it alone

    @property
    def trained_count(self) -> int:
        return int(self.info.get("trained_count", len(self)))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    @property
    def variant(self) -> str:
        """"flat" or "pq"."""
        return "pq" if hasattr(self.index, "pq") else "flat"

    def search(
        self, queries: np.ndarray, k: int, *, nprobe: int | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, E)
        params = faiss.SearchParametersIVF(nprobe=int(nprobe or self.nprobe))  # per call: thread-safe
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params.sel = selector  # params holds a borrowed pointer: ``selector`` lives until the return
        rerank = self.fetch is not None and self.variant == "pq"
        candidates = self.rerank_count(int(k)) if rerank else int(k)
        with self._rw.read():
            scores, ids = self.index.search(queries, max(candidates, int(k)), params=params)  # (Q, C)
            if rerank and self.refine is not None:  # (Q, C) → (Q, S): the best by the finer codes
                ids = self.refine.shortlist(queries, ids, min(ids.shape[1], EXACT_FACTOR * int(k)))
        if rerank:  # a few queries at a time: at most RERANK_BYTES of full vectors fetched at once
            step = max(1, RERANK_BYTES // (ids.shape[1] * 4 * queries.shape[1]))
            parts = [self._rerank(queries[i : i + step], ids[i : i + step], int(k)) for i in range(0, len(ids), step)]
            scores, ids = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return scores, ids

    def rerank_count(self, k: int) -> int:
        """How many IVF-PQ candidates a search for ``k`` results re-ranks."""
        return min(max(RERANK_FACTOR * k, int(self.candidates or RERANK_MIN)), RERANK_MAX)

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's (C,) candidate ids with their full vectors: (Q, k) each.
        A candidate whose vector is gone (deleted since) is dropped."""
        found = self.fetch(np.unique(candidates[candidates >= 0]))  # {id: (E,)}
        scores_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids_out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (q, cand) in enumerate(zip(queries, candidates, strict=True)):
            cand = np.array([i for i in cand.tolist() if i >= 0 and i in found], dtype=np.int64)  # (C',)
            if len(cand) == 0:
                continue
            exact = np.stack([found[i] for i in cand.tolist()]) @ q  # (C',)
            order = np.argsort(-exact, kind="stable")[:k]
            scores_out[row, : len(order)] = exact[order]
            ids_out[row, : len(order)] = cand[order]
        return scores_out, ids_out

    def _writable(self) -> None:
        """Swap memory-mapped (read-only) lists for an in-memory copy that updates can change:
        the file read again, unless it has been replaced since it was mapped (:class:`StaleMapping`:
        the caller reloads from the database instead of updating a copy of another state)."""
        if self.path is not None:
            if _file_identity(self.path) != self._mapped:
                raise StaleMapping(f"{self.path} was replaced since it was mapped")
            self.index = _faiss().read_index(str(self.path))
            self.path = self._mapped = None

    def apply(self, snap: Snapshot) -> None:
        """Update in place: remove ids that are no longer live, add the snapshot's new rows
        (assigned to the existing centroids)."""
        faiss = _faiss()
        live = faiss.IDSelectorBatch(np.ascontiguousarray(snap.all_ids, dtype=np.int64))
        with self._rw.write():
            self._writable()
            self.index.remove_ids(faiss.IDSelectorNot(live))
            if len(snap.ids):
                if self.refine is not None:  # codes first: a search never meets an id without them
                    self.refine.set(snap.ids, snap.vectors)
                self.index.add_with_ids(np.ascontiguousarray(snap.vectors, dtype=np.float32), snap.ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append (B,) ids with their (B, E) vectors (assigned to the existing centroids)."""
        with self._rw.write():
            self._writable()
            if self.refine is not None:
                self.refine.set(ids, vectors)
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
            )

    @classmethod
    def trained(
        cls, sample: np.ndarray, *, nlist: int, pq_m: int = 0, niter: int = 10, seed: int = 0
    ) -> IvfIndex:
        """An empty index whose centroids (spherical k-means) and, for IVF-PQ (``pq_m`` > 0 bytes a
        vector), codebooks are trained on ``sample`` (S, E)."""
        faiss = _faiss()
        sample = np.ascontiguousarray(sample, dtype=np.float32)  # (S, E)
        dim = sample.shape[1]
        quantizer = faiss.IndexFlatIP(dim)
        if pq_m:
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
            index.pq.cp.niter = niter  # the codebooks' k-means (faiss's default, 25, buys little)
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # unit-norm centroids suit cosine similarity
        index.cp.niter = niter
        index.cp.seed = seed
        index.train(sample)
        return cls(index, nprobe=1)

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
        """Train, fill and (unless ``nprobe`` is given) calibrate an IVF-Flat index over vectors in
        memory (a store's index is built by streaming instead: :mod:`clipforge.index.ann`)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, E)
        n = len(vectors)
        nlist = nlist or ivf_nlist(n)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        sample = np.sort(rng.choice(n, size=min(n, train_per_list * nlist), replace=False))
        built = cls.trained(vectors[sample], nlist=nlist, niter=niter, seed=seed)
        t_train = time.perf_counter() - t0
        step = 65536
        for start in progress_bar(range(0, n, step), desc="ann add", unit="chunk", enabled=progress):
            built.add(np.asarray(ids[start : start + step], dtype=np.int64), vectors[start : start + step])
        t_add = time.perf_counter() - t0 - t_train
        built.nprobe = nprobe or 1
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
        with self._rw.read():
            atomic_write(Path(path), lambda tmp: faiss.write_index(self.index, tmp))

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        nprobe: int,
        info: dict | None = None,
        fetch: Fetch | None = None,
        mmap: bool = False,
        refine: RefineCodes | None = None,
    ) -> IvfIndex:
        """The index saved at ``path``; ``mmap``: its inverted lists memory-mapped from the file
        (read-only: the first update loads an in-memory copy)."""
        faiss = _faiss()
        if mmap:
            return cls(faiss.read_index(str(path), faiss.IO_FLAG_MMAP), nprobe=nprobe, info=info, fetch=fetch,
                       path=Path(path), refine=refine)  # fmt: skip
        return cls(faiss.read_index(str(path)), nprobe=nprobe, info=info, fetch=fetch, refine=refine)
