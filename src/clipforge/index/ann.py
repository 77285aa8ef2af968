"""Choosing, building, persisting and refreshing the nearest-neighbour index of a store.

:func:`open_vector_index` returns the right structure of :mod:`clipforge.index.neighbours` for a
store, as :func:`clipforge.index.plan.plan_index` chooses it from the collection size and a memory
budget: an :class:`ExactIndex` below a size threshold, a faiss :class:`IvfIndex` above (IVF-Flat
while the full vectors fit the budget, IVF-PQ re-ranked with the stored vectors beyond, its lists
memory-mapped from the file, its candidates first ordered by finer codes held in memory where the
plan has room for them: :mod:`clipforge.index.refine`). An IVF index is built by streaming:
centroids (and PQ codebooks) trained on a uniform sample of the store, then rows added batch by
batch from one read transaction (the finer codes written to their file as they go), and
``nprobe`` (and the number of PQ candidates re-ranked) calibrated against exact search computed in
a second streamed pass; so a build holds the sample, one batch and the index, never the whole
collection. The faiss index is persisted next to the database (``<db>.faiss``, ``<db>.faiss.refine``
for the finer codes, and ``<db>.faiss.json`` holding the store
:class:`~clipforge.index.records.Fingerprint` they reflect). When that fingerprint disagrees with
the database it is fixed automatically: brought up to date in place (rows are immutable and ids
never reused, so "ids no longer live" and "ids above the old maximum" are exactly the changes) or,
after another model or too much growth since the centroids were trained, rebuilt. Both files are
replaced atomically. A server keeps its index in memory and applies the same updates while a
``clipforge index`` run adds rows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..fileio import atomic_write, sweep_temporaries
from ..progress import progress_bar
from .neighbours import (  # the structures are re-exported: tests and benchmarks import them from here
    RERANK_MAX,
    RERANK_MIN,
    ExactIndex,
    IvfIndex,
    StaleMapping,
    VectorIndex,
    _faiss,
)
from .plan import DEFAULT_THRESHOLD, IndexPlan, default_memory_budget, ivf_nlist, parse_memory, plan_index
from .protocol import Store
from .recall import (
    DEFAULT_RECALL_TARGET,
    _exact_topk_ids,
    calibrate_nprobe,
    calibrate_search,
    exact_topk_stream,
    perturbed_queries,
    recall_at_k,
)
from .records import Fingerprint
from .refine import RefineCodes
from .relevance import sample_embeddings
from .store import IndexStore

__all__ = [
    "DEFAULT_RECALL_TARGET",
    "DEFAULT_THRESHOLD",
    "AnnPaths",
    "ExactIndex",
    "IvfIndex",
    "Sidecar",
    "VectorIndex",
    "_exact_topk_ids",
    "_faiss",
    "ann_paths",
    "calibrate_nprobe",
    "ivf_nlist",
    "open_vector_index",
    "store_plan",
    "recall_at_k",
    "sweep_ann_temporaries",
]

log = logging.getLogger(__name__)


# -- choosing, persisting and refreshing ---------------------------------------------------------
class AnnPaths(NamedTuple):
    """Where a store's faiss index is persisted, beside the database."""

    index: Path  # <db>.faiss
    meta: Path  # <db>.faiss.json: the sidecar
    refine: Path  # <db>.faiss.refine: the finer codes of an IVF-PQ index (when it has them)


def ann_paths(db_path: str | Path) -> AnnPaths:
    db_path = Path(db_path)
    return AnnPaths(*(db_path.with_name(db_path.name + end) for end in (".faiss", ".faiss.json", ".faiss.refine")))


REFINE_TRAIN_ROWS = 65_536  # the finer code books' sample (k-means of 256 words in 2-D sub-spaces)
CANDIDATE_SHARE = 20  # calibration tries re-ranking at most 1/20 of the collection per query


def candidate_ladder(count: int) -> list[int]:
    """The PQ candidate counts calibration tries for a collection of ``count`` vectors."""
    top = min(RERANK_MAX, max(RERANK_MIN, count // CANDIDATE_SHARE))
    return [RERANK_MIN * 2**i for i in range(8) if RERANK_MIN * 2**i <= top]


STALE_TMP_S = 60.0  # a temporary untouched this long belongs to a killed process, not a live writer


def sweep_ann_temporaries(db_path: str | Path, *, older_than_s: float = STALE_TMP_S) -> list[Path]:
    """Remove what a process killed while saving ``<db>.faiss`` / ``<db>.faiss.json`` /
    ``<db>.faiss.refine`` left beside the database (only those names: the folder may be shared
    with anything)."""
    paths = ann_paths(db_path)
    return sweep_temporaries(paths.index.parent, older_than_s=older_than_s, names=[p.name for p in paths])


@dataclass(frozen=True)
class Sidecar:
    """What ``<db>.faiss.json`` says about the index file beside it."""

    meta: dict  # build and calibration details, "nprobe", "trained_count", "file"
    fingerprint: Fingerprint  # the store state the file reflects

    @classmethod
    def read(cls, paths: AnnPaths) -> Sidecar:
        """The sidecar, if it describes the index file as it is now (else ``ValueError``)."""
        meta = json.loads(paths.meta.read_text())
        saved = Fingerprint(**meta["fingerprint"])
        st = paths.index.stat()
        if meta.get("file") != [st.st_size, st.st_mtime_ns]:
            raise ValueError("the sidecar describes another version of the index file")
        return cls(meta, saved)

    def serves(self, fp: Fingerprint, *, max_growth: float) -> bool:
        """Whether the file can stand for a store at ``fp``: as it is, or brought up to date
        (same model, grown less than ``max_growth`` times since its centroids were trained)."""
        saved = self.fingerprint
        return saved == fp or (
            saved.model_id == fp.model_id
            and fp.count <= max_growth * int(self.meta.get("trained_count", saved.count))
        )


def open_vector_index(
    store: Store,
    *,
    threshold: int | None = None,
    nprobe: int | None = None,
    rebuild: bool = False,
    previous: tuple[VectorIndex, Fingerprint] | None = None,
    max_growth: float = 4.0,
    memory_budget: int | None = None,
    progress: bool = False,
) -> tuple[VectorIndex, Fingerprint]:
    """The search structure for ``store`` and the fingerprint it reflects.

    Below ``threshold`` rows (default: the store's ``ann_threshold`` setting, else
    ``DEFAULT_THRESHOLD``): an :class:`ExactIndex` over the stored vectors. Otherwise an IVF index
    of the kind :func:`store_plan` chooses within ``memory_budget`` bytes (default: the store's
    ``memory_budget`` setting, else half the machine's memory):
    the persisted one if its fingerprint matches the database; else the persisted one brought up to
    date (removed rows dropped, new rows added) if the model is the same and the index has grown
    less than ``max_growth`` times since its centroids were trained; else a new one. Either way the
    result is saved. ``previous`` (an index and fingerprint already in memory) is updated the same
    way instead of being reloaded. ``nprobe`` overrides the calibrated value. A store with a search of its own
    (``store.vector_search()``: the Qdrant store) gets that, whatever the other arguments.
    """
    own = store.vector_search()
    if own is not None:  # a store that searches itself (Qdrant): nothing to build or keep in memory
        return own, store.fingerprint()
    if previous is None:
        for p in sweep_ann_temporaries(store.path):
            log.info("removed %s, left by an interrupted save", p)
    fp = store.fingerprint()
    plan = store_plan(store, fp.count, threshold=threshold, memory_budget=memory_budget)
    want_ivf = plan.kind != "exact"
    if previous is not None and not rebuild:
        followed = _follow_in_memory(store, previous, fp, want_ivf=want_ivf, max_growth=max_growth)
        if followed is not None:
            return followed
    if not want_ivf:
        ids, vectors, fp = store.load_embeddings()
        return ExactIndex(ids, vectors), fp
    paths = ann_paths(store.path)
    loaded = None if rebuild else _load_saved_ivf(store, fp, paths, plan=plan, max_growth=max_growth)
    ivf, fp = loaded if loaded is not None else _build_ivf(store, paths, plan=plan, progress=progress)
    if nprobe:
        ivf.nprobe = nprobe
    return ivf, fp


def store_plan(
    store: IndexStore, count: int, *, threshold: int | None = None, memory_budget: int | None = None
) -> IndexPlan:
    """The index plan for ``count`` rows of ``store``, with the store's remembered ``ann_threshold``
    and ``memory_budget`` settings where the arguments leave them out."""
    if threshold is None:
        threshold = int(store.get_meta("ann_threshold") or DEFAULT_THRESHOLD)
    if memory_budget is None:
        saved = store.get_meta("memory_budget")
        memory_budget = parse_memory(saved) if saved else default_memory_budget()
    return plan_index(count, store.embed_dim or 0, threshold=threshold, memory_budget=memory_budget)


def _follow_in_memory(
    store: IndexStore,
    previous: tuple[VectorIndex, Fingerprint],
    fp: Fingerprint,
    *,
    want_ivf: bool,
    max_growth: float,
) -> tuple[VectorIndex, Fingerprint] | None:
    """``previous`` brought up to ``fp`` without reloading it; None when it cannot be (another
    model, the other kind of index wanted, or too much growth): the caller rebuilds."""
    index, old = previous
    if old == fp:
        return previous
    if old.model_id == fp.model_id:
        if index.kind == "exact" and not want_ivf:
            snap = store.snapshot(after_id=old.max_id)
            return index.updated(snap), snap.fingerprint
        if index.kind == "ivf" and want_ivf and fp.count <= max_growth * index.trained_count:
            snap = store.snapshot(after_id=old.max_id)
            try:
                index.apply(snap)
            except StaleMapping:  # its memory-mapped file was replaced: reload what is saved
                return None
            return index, snap.fingerprint
    return None


def _load_saved_ivf(
    store: IndexStore, fp: Fingerprint, paths: AnnPaths, *, plan: IndexPlan, max_growth: float
) -> tuple[IvfIndex, Fingerprint] | None:
    """The persisted IVF index, brought up to date with the store (and saved) if it is behind;
    None when there is none, it does not serve ``fp`` or it cannot be read: the caller rebuilds."""
    if not (paths.index.is_file() and paths.meta.is_file()):
        return None
    try:
        sidecar = Sidecar.read(paths)
        saved = sidecar.fingerprint
        if not sidecar.serves(fp, max_growth=max_growth):
            log.info(
                "ANN index %s was built for %s, the database is %s: rebuilding",
                paths.index,
                saved.to_dict(),
                fp.to_dict(),
            )
            return None
        variant = sidecar.meta.get("variant", "flat")
        if f"ivf-{variant}" != plan.kind:
            log.info("ANN index %s is IVF-%s, the memory budget now asks for %s: rebuilding",
                     paths.index, variant.upper(), plan.kind)  # fmt: skip
            return None
        refined = sidecar.meta.get("refine") or {}
        if int(refined.get("m", 0)) != plan.refine_m:
            log.info("ANN index %s has %d bytes of refinement codes a vector, the memory budget now asks for %d: "
                     "rebuilding", paths.index, int(refined.get("m", 0)), plan.refine_m)  # fmt: skip
            return None
        refine = RefineCodes.load(paths.refine, token=refined["token"], rows=saved.max_id + 1) if refined else None
        ivf = IvfIndex.load(
            paths.index, nprobe=sidecar.meta["nprobe"], info=sidecar.meta, fetch=store.embeddings_of,
            mmap=variant == "pq", refine=refine,
        )  # fmt: skip
        if len(ivf) != saved.count:
            raise ValueError(f"{len(ivf)} vectors in the file, {saved.count} in its fingerprint")
        if saved != fp:
            log.info(
                "ANN index %s is behind the database (%s vs %s): updating",
                paths.index,
                saved.to_dict(),
                fp.to_dict(),
            )
            snap = store.snapshot(after_id=saved.max_id)
            ivf.apply(snap)
            if refine is not None and len(snap.ids):  # durable before an index that names these ids
                refine.write_rows(paths.refine, snap.ids, refine.codes[snap.ids])
            fp = snap.fingerprint
            _save_ivf(ivf, fp, paths)
        return ivf, fp
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        log.warning("ANN index %s unreadable (%s): rebuilding", paths.index, e)
        return None


def _build_ivf(
    store: IndexStore,
    paths: AnnPaths,
    *,
    plan: IndexPlan,
    recall_target: float = DEFAULT_RECALL_TARGET,
    seed: int = 0,
    progress: bool = False,
) -> tuple[IvfIndex, Fingerprint]:
    """A new IVF index over every stored vector, built by streaming (see the module docstring) and
    saved beside the database; PQ lists are then reopened memory-mapped, before the finer codes
    are read into memory and the search calibrated."""
    t0 = time.perf_counter()
    sample = sample_embeddings(store, size=plan.train_rows, seed=seed)  # (S, E)
    ivf = IvfIndex.trained(sample, nlist=plan.nlist, pq_m=plan.pq_m, seed=seed)
    refine = RefineCodes.train(sample[:REFINE_TRAIN_ROWS], plan.refine_m, seed=seed) if plan.refine_m else None
    ivf.fetch = store.embeddings_of
    queries = perturbed_queries(sample, 200, seed=seed)  # (Q, E): stand-ins for text queries
    del sample
    t_train = time.perf_counter() - t0
    fp = None

    def add_all(refine_file: str | None) -> None:
        nonlocal fp
        if refine is not None:
            refine.create_file(refine_file)
        batches = store.embedding_batches(batch_rows=plan.batch_rows)
        for batch_fp, ids, vectors in progress_bar(batches, desc="ann add", unit="batch", enabled=progress):
            ivf.add(ids, vectors)
            if refine is not None:  # (B, m) codes to their rows; the file is synced once, at the end
                refine.write_rows(refine_file, ids, refine.encode(vectors), sync=False)
            fp = batch_fp

    if refine is not None:
        atomic_write(paths.refine, add_all)  # a new token: the old sidecar no longer matches it
    else:
        add_all(None)
    t_add = time.perf_counter() - t0 - t_train
    if fp is None:  # emptied since the plan was made
        fp = store.fingerprint()
    truth = exact_topk_stream(
        ((ids, vectors) for _, ids, vectors in store.embedding_batches(batch_rows=plan.batch_rows)), queries, 10
    )  # (Q, 10) ids: the same snapshot unless rows changed meanwhile (then it is only a little off)
    if ivf.variant == "pq":  # the lists leave the heap (memory-mapped instead) before the finer codes enter it
        ivf.save(paths.index)
        ivf = None  # freed now, not once the reopened index replaces it (the budget holds one of them)
        _return_freed_memory()
        codes = RefineCodes.load(paths.refine, token=refine.token, rows=fp.max_id + 1) if refine else None
        ivf = IvfIndex.load(paths.index, nprobe=1, fetch=store.embeddings_of, mmap=True, refine=codes)
    ladder = candidate_ladder(fp.count) if ivf.variant == "pq" else []
    ivf.nprobe, ivf.candidates, calibration = calibrate_search(
        ivf, queries, truth, recall_target=recall_target, candidate_ladder=ladder
    )
    ivf.info = {
        "variant": ivf.variant,
        "plan": plan.to_dict(),
        "nlist": plan.nlist,
        "nprobe": ivf.nprobe,
        "candidates": ivf.candidates,
        "refine": {"m": refine.m, "token": refine.token} if refine is not None else None,
        "trained_count": fp.count,
        "train_seconds": round(t_train, 3),
        "add_seconds": round(t_add, 3),
        "calibration": calibration,
    }
    log.info(
        "built IVF-%s index: %d vectors, nlist=%d, nprobe=%d, %s candidates (train %.1f s, add %.1f s)",
        ivf.variant.upper(), fp.count, plan.nlist, ivf.nprobe, ivf.candidates or "no", t_train, t_add,
    )  # fmt: skip
    _save_ivf(ivf, fp, paths, write_index=ivf.variant != "pq")
    return ivf, fp


def _return_freed_memory() -> None:
    """Hand the memory freed so far back to the operating system (glibc's ``malloc_trim``). Freed
    blocks otherwise stay in the process, resident: at 10M x 512, 1.2 GiB of a build's batches,
    sample and in-memory lists, beside the finer codes read in next (sized to the memory budget).
    Nothing happens where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _save_ivf(ivf: IvfIndex, fp: Fingerprint, paths: AnnPaths, *, write_index: bool = True) -> None:
    """The index (unless ``write_index`` is False: saved already), then its sidecar naming the
    file's size and mtime and the refinement file's token: a crash between the two leaves a
    sidecar that does not describe the files, which are then rebuilt, never misread."""
    if write_index:
        ivf.save(paths.index)
    st = paths.index.stat()
    meta = {
        **ivf.info,
        "fingerprint": fp.to_dict(),
        "nprobe": ivf.info.get("nprobe", ivf.nprobe),
        "file": [st.st_size, st.st_mtime_ns],
    }
    atomic_write(paths.meta, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
