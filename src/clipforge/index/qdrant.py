"""The embedding store in a Qdrant collection: embedded (a local folder, tests) or a cluster.

The same :class:`~clipforge.index.protocol.Store` as the SQLite file, so ``index_folder``, shard
merging, search and the server run unchanged on it; what differs is that Qdrant searches and
filters itself (:class:`QdrantVectors`), so a server holds no vectors and several servers can share
one collection.

Layout, for a collection named ``C``:

* ``C``: one point per indexed file, its id the row id (from 1, never reused), its vector the
  embedding (dot product on unit vectors: the cosine; float16 storage for ``dtype="float16"``) and
  its payload the row: ``path``, ``size``, ``mtime_ns``, ``sha256``, the photo fields of
  :class:`~clipforge.index.records.PhotoFields`, ``folder``, ``folders`` (the folder and every
  folder above it, so "this folder and below" is one keyword match) and ``taken_ts`` (the local
  date taken as seconds, for date ranges). ``PAYLOAD_INDEXES`` lists the payload indexes made for
  the filters and the incremental sync; an embedded collection ignores them (Qdrant says so).
  Made when the store is first bound to a model; dropped and made again by a rebuild.
* ``C__meta``: points with a placeholder vector: one holding the meta values (model, root, dtype,
  precision, backend, the next row id) and one per skipped file.

Writes are batched per ``transaction()`` and sent when the block ends, in order: row ids are
reserved before the points that use them are written, a replaced row's new point is written before
the old one is deleted. Qdrant has no transactions across requests: a process killed in the middle
of a batch can leave both versions of a replaced file; :meth:`QdrantStore.files` (the start of
every ``clipforge index`` run) removes the older one. A rebuild unbinds the store before dropping
its rows, so one killed half-way leaves an empty store, never rows under another model's name. One
writer at a time, as with SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..optional import require
from .binding import IndexDatabaseError, ModelBinding
from .qdrant_payload import (
    PAYLOAD_INDEXES,
    all_of,
    info_payload,
    location_payload,
    match_value,
    photo_filter,
    qdrant_models,
    row_payload,
)
from .records import FileRow, Fingerprint, NewRow, PhotoFields, PhotoFilter, SkipRow, Snapshot
from .schema import INFO_COLUMNS

SCHEMA = "clipforge.qdrant/1"
DEFAULT_PORT = 6333
DEFAULT_COLLECTION = "clipforge"
DEFAULT_TIMEOUT_S = 10.0
PAGE = 1024  # points per scroll or retrieve request
ROW_KEYS = ("path", "size", "mtime_ns", "sha256")
_META_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "clipforge:meta"))
_NO_VECTOR = [0.0]  # the meta collection's points carry no embedding
log = logging.getLogger(__name__)


class QdrantStoreError(IndexDatabaseError):
    """The Qdrant server cannot be reached, refused a request, or holds something else."""


class QdrantTarget(NamedTuple):
    """Where a Qdrant store lives: a server ``url`` or an embedded ``path`` (``":memory:"``: in
    this process only), and the collection name. ``shards`` and ``replicas``: how a cluster splits
    and copies the collection when clipforge makes it (None: the cluster's defaults)."""

    url: str | None
    path: str | None
    collection: str = DEFAULT_COLLECTION
    shards: int | None = None
    replicas: int | None = None

    def describe(self) -> str:
        if self.url is not None:
            return f"{self.url.replace('http', 'qdrant', 1)}/{self.collection}"
        return f"qdrant+local:{self.path}" + ("" if self.collection == DEFAULT_COLLECTION else f"#{self.collection}")


def _cause(error: BaseException) -> str:
    """One line saying why a client call failed (the client wraps connection errors)."""
    inner = error.__cause__ or getattr(error, "source", None) or error
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0][:300]}" if text else type(inner).__name__


@dataclass
class QdrantBatch:
    """The writes of one ``transaction()``, sent in order when it ends."""

    ops: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, items: list) -> None:
        if not items:
            return
        if self.ops and self.ops[-1][0] == kind and kind in ("payload", "put_skips", "forget_skips"):
            self.ops[-1][1].extend(items)  # consecutive updates of one kind: one request
        else:
            self.ops.append((kind, list(items)))


class QdrantStore(ModelBinding):
    """An index in a Qdrant collection (see the module docstring). ``create=False`` refuses a
    collection that holds no index yet; one that holds something else is always refused."""

    def __init__(
        self,
        target: QdrantTarget,
        *,
        create: bool = False,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        qdrant = require("qdrant_client", extra="qdrant", purpose="a Qdrant store", package="qdrant-client")
        self.target = target
        self.path = target.describe()
        self.collection = target.collection
        self.meta_collection = target.collection + "__meta"
        self._bound = False
        # The embedded engine is plain Python objects: one call at a time. A server takes many.
        local = target.url is None
        self._guard: contextlib.AbstractContextManager = threading.RLock() if local else contextlib.nullcontext()
        if local and target.path != ":memory:" and not create and not Path(target.path).is_dir():
            raise QdrantStoreError(self._no_index_yet())  # (opening it would make the folder)
        try:
            if target.url is not None:
                self._client = qdrant.QdrantClient(
                    url=target.url, api_key=api_key, timeout=max(1, round(timeout)), check_compatibility=False
                )
            elif target.path == ":memory:":
                self._client = qdrant.QdrantClient(location=":memory:")
            else:
                self._client = qdrant.QdrantClient(path=target.path)
        except Exception as e:  # e.g. the folder is held by another process's embedded engine
            raise QdrantStoreError(f"{self.path}: cannot open the Qdrant store ({_cause(e)})") from e
        try:
            self._open(create=create)
        except BaseException:
            self.close()
            raise

    def _open(self, *, create: bool) -> None:
        try:
            has_meta = self._client.collection_exists(self.meta_collection)
        except Exception as e:
            where = self.target.url or self.target.path
            raise QdrantStoreError(
                f"{self.path}: cannot reach the Qdrant server at {where} ({_cause(e)}); check that it runs "
                "and that host, port, TLS (qdrants://) and API key are right"
            ) from e
        if has_meta:
            meta = self._meta_payload()
            if meta.get("schema") != SCHEMA:
                raise QdrantStoreError(f"{self.path}: collection {self.meta_collection} is not a clipforge index")
            return
        if self._call("collection_exists", self.collection):
            raise QdrantStoreError(
                f"{self.path}: collection {self.collection} exists but is not a clipforge index (left untouched)"
            )
        if not create:
            raise QdrantStoreError(self._no_index_yet())
        m = qdrant_models()
        # A one-number placeholder vector: every Qdrant version takes it (not all take none at all).
        meta_vectors = m.VectorParams(size=1, distance=m.Distance.DOT)
        self._call("create_collection", self.meta_collection, vectors_config=meta_vectors)
        meta = {"kind": "meta", "schema": SCHEMA, "next_id": "1"}
        point = m.PointStruct(id=_META_ID, vector=_NO_VECTOR, payload=meta)
        self._call("upsert", self.meta_collection, [point], wait=True)

    # -- plumbing ------------------------------------------------------------------------------
    def _no_index_yet(self) -> str:
        return f"{self.path}: no index there yet (run `clipforge index FOLDER --store {self.path}`)"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One client call; a failure becomes a :class:`QdrantStoreError` naming the store."""
        try:
            with self._guard:
                return getattr(self._client, method)(*args, **kwargs)
        except Exception as e:
            raise QdrantStoreError(f"{self.path}: Qdrant {method} failed ({_cause(e)})") from e

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _scroll(
        self, *, where: Any = None, payload: Any = False, vectors: bool = False, collection: str | None = None,
        page: int = PAGE, limit: int | None = None,
    ) -> Iterator[Any]:  # fmt: skip
        """Every point passing the filter ``where``, in id order, fetched ``page`` at a time."""
        offset, seen = None, 0
        while True:
            size = page if limit is None else min(page, limit - seen)
            points, offset = self._call(
                "scroll", collection or self.collection, scroll_filter=where, limit=size, offset=offset,
                with_payload=payload, with_vectors=vectors,
            )  # fmt: skip
            yield from points
            seen += len(points)
            if offset is None or (limit is not None and seen >= limit):
                return

    def _has_rows_collection(self) -> bool:
        """Whether the rows' collection exists (made when the store is first bound to a model)."""
        if not self._bound:  # once bound, a store stays bound (a rebuild makes the collection again at once)
            self._bound = self.get_meta("model_id") is not None
        return self._bound

    # -- meta ----------------------------------------------------------------------------------
    def _meta_payload(self) -> dict:
        found = self._call("retrieve", self.meta_collection, [_META_ID], with_payload=True)
        return dict(found[0].payload or {}) if found else {}

    def get_meta(self, key: str) -> str | None:
        value = self._meta_payload().get(key)
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        self._call("set_payload", self.meta_collection, {key: str(value)}, points=[_META_ID], wait=True)

    def _rebind(self, values: dict[str, str], *, clear_rows: bool, drop_keys: tuple[str, ...]) -> None:
        m = qdrant_models()
        exists = self._call("collection_exists", self.collection)
        if "embed_dim" in values and (clear_rows or not exists or self.get_meta("model_id") is None):
            # Unbound first: killed from here on, the store reads as empty and the next run starts it
            # afresh; never as rows of one model under another's name.
            self._call("delete_payload", self.meta_collection, ["model_id"], points=[_META_ID], wait=True)
            self._bound = False
            if exists:
                self._call("delete_collection", self.collection)
            if clear_rows:
                self._call("delete", self.meta_collection, m.Filter(must=[match_value("kind", "skip")]), wait=True)
            self._create_rows_collection(int(values["embed_dim"]), values.get("dtype", "float32"))
        if drop_keys:
            self._call("delete_payload", self.meta_collection, list(drop_keys), points=[_META_ID], wait=True)
        self._call("set_payload", self.meta_collection, values, points=[_META_ID], wait=True)

    def _create_rows_collection(self, dim: int, dtype: str) -> None:
        m = qdrant_models()
        datatype = m.Datatype.FLOAT16 if dtype == "float16" else None
        params = m.VectorParams(size=dim, distance=m.Distance.DOT, datatype=datatype)
        self._call(
            "create_collection", self.collection, vectors_config=params,
            shard_number=self.target.shards, replication_factor=self.target.replicas,
        )  # fmt: skip
        kinds = {
            "keyword": m.PayloadSchemaType.KEYWORD,
            "integer-range": m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, lookup=False, range=True),
        }
        with warnings.catch_warnings():  # the embedded engine warns that it has no payload indexes
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for key, kind in PAYLOAD_INDEXES.items():
                self._call("create_payload_index", self.collection, key, kinds[kind], wait=True)

    def vector_search(self) -> QdrantVectors:
        return QdrantVectors(self)

    # -- reads ---------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRow]:
        """Every row by path. Two rows of one path (a batch cut short between writing a file's new
        point and deleting its old one) are repaired here: the newer one stays."""
        if not self._has_rows_collection():
            return {}
        out: dict[str, FileRow] = {}
        stale: list[int] = []
        for p in self._scroll(payload=list(ROW_KEYS)):
            row = FileRow(int(p.id), *(p.payload[k] for k in ROW_KEYS))
            old = out.get(row.path)
            if old is not None:
                stale.append(min(old.id, row.id))
                row = max(old, row)  # ids only grow: the larger is the newer
            out[row.path] = row
        if stale:
            log.warning("%s: removing %d rows left by an interrupted write", self.path, len(stale))
            self._call("delete", self.collection, stale, wait=True)
        return out

    def skipped(self) -> dict[str, SkipRow]:
        points = self._scroll(where=all_of(match_value("kind", "skip")), payload=True, collection=self.meta_collection)
        rows = [SkipRow(*(p.payload[k] for k in SkipRow._fields)) for p in points]
        return {r.path: r for r in sorted(rows)}

    def count(self) -> int:
        if not self._has_rows_collection():
            return 0
        return int(self._call("count", self.collection, exact=True).count)

    def fingerprint(self) -> Fingerprint:
        meta = self._meta_payload()
        count = self.count() if meta.get("model_id") is not None else 0
        return Fingerprint(count, int(meta.get("next_id", 1)) - 1, meta.get("model_id") or "")

    def _points(self, ids: Iterable[int], *, payload: Any = False, vectors: bool = False) -> list[Any]:
        ids = [int(i) for i in ids if 0 < int(i) < 2**63]  # row ids: 1 up, signed 64-bit like SQLite's
        if not ids or not self._has_rows_collection():
            return []
        out = []
        for start in range(0, len(ids), PAGE):
            out += self._call(
                "retrieve", self.collection, ids[start : start + PAGE], with_payload=payload, with_vectors=vectors
            )
        return out

    def path_of(self, image_id: int) -> str | None:
        found = self._points([image_id], payload=["path"])
        return found[0].payload["path"] if found else None

    def details_of(self, ids: Iterable[int]) -> dict[int, dict]:
        cols = ("path", *INFO_COLUMNS)
        return {int(p.id): {c: p.payload.get(c) for c in cols} for p in self._points(ids, payload=list(cols))}

    def ids_matching(self, where: PhotoFilter) -> np.ndarray:
        if not self._has_rows_collection():
            return np.empty(0, dtype=np.int64)
        ids = (int(p.id) for p in self._scroll(where=photo_filter(where)))
        return np.fromiter(ids, dtype=np.int64)

    def facets(self) -> dict:
        if not self._has_rows_collection():
            return {"folders": [], "types": [], "taken_at": [None, None]}
        m = qdrant_models()

        def values(key: str) -> list[str]:
            hits = self._call("facet", self.collection, key=key, limit=100_000, exact=True).hits
            return sorted(str(h.value) for h in hits)

        def end(direction: str) -> str | None:
            order = m.OrderBy(key="taken_ts", direction=direction)
            points, _ = self._call("scroll", self.collection, limit=1, order_by=order, with_payload=["taken_at"])
            return points[0].payload.get("taken_at") if points else None

        return {"folders": values("folder"), "types": values("type"), "taken_at": [end("asc"), end("desc")]}

    def rows_without_info(self) -> list[FileRow]:
        if not self._has_rows_collection():
            return []
        m = qdrant_models()
        where = m.Filter(must=[m.IsEmptyCondition(is_empty=m.PayloadField(key="type"))])
        points = self._scroll(where=where, payload=list(ROW_KEYS))
        return [FileRow(int(p.id), *(p.payload[k] for k in ROW_KEYS)) for p in points]

    def embedding_of_hash(self, sha256: str) -> np.ndarray | None:
        if not self._has_rows_collection():
            return None
        found = list(self._scroll(where=all_of(match_value("sha256", sha256)), vectors=True, limit=1))
        return _vector(found[0]) if found else None

    def embedding_of(self, image_id: int) -> np.ndarray | None:
        found = self._points([image_id], vectors=True)
        return _vector(found[0]) if found else None

    def embeddings_of(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        return {int(p.id): _vector(p) for p in self._points(ids, vectors=True)}

    def embedding_batches(self, *, batch_rows: int) -> Iterator[tuple[Fingerprint, np.ndarray, np.ndarray]]:
        """Every row as ``(fingerprint, ids (B,), vectors (B, E))`` batches in id order. Not one
        snapshot: rows written meanwhile may or may not be included."""
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        fp = self.fingerprint()
        if fp.count == 0:
            return
        batch: list[Any] = []
        for p in self._scroll(vectors=True, page=min(batch_rows, PAGE)):
            batch.append(p)
            if len(batch) == batch_rows:
                yield fp, *_matrix(batch)
                batch = []
        if batch:
            yield fp, *_matrix(batch)

    def load_embeddings(self) -> tuple[np.ndarray, np.ndarray, Fingerprint]:
        fp = self.fingerprint()
        parts = [(ids, vectors) for _, ids, vectors in self.embedding_batches(batch_rows=PAGE)]
        dim = self.embed_dim or 0
        ids = np.concatenate([i for i, _ in parts]) if parts else np.empty(0, np.int64)
        vectors = np.concatenate([v for _, v in parts]) if parts else np.empty((0, dim), np.float32)  # (N, E)
        return ids, vectors, fp._replace(count=len(ids))

    def snapshot(self, *, after_id: int) -> Snapshot:
        ids, vectors, fp = self.load_embeddings()
        new = ids > after_id
        return Snapshot(ids, ids[new], vectors[new], fp)

    # -- writes --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[QdrantBatch]:
        """Collect writes; send them in order when the block ends (nothing is sent if it raises)."""
        batch = QdrantBatch()
        yield batch
        for kind, items in batch.ops:
            getattr(self, f"_send_{kind}")(items)

    def insert(self, c: QdrantBatch, rows: Iterable[NewRow]) -> None:
        """Insert rows, replacing any row at the same path (a changed file gets a new id)."""
        rows = list(rows)
        for r in rows:
            if np.shape(r.embedding) != (self.embed_dim,):
                raise ValueError(f"embedding of shape {np.shape(r.embedding)}, the index stores ({self.embed_dim},)")
        c.add("insert", rows)
        c.add("forget_skips", [r.path for r in rows])

    def set_info(self, c: QdrantBatch, image_id: int, info: PhotoFields) -> None:
        c.add("payload", [(image_id, info_payload(info))])

    def move(self, c: QdrantBatch, image_id: int, *, path: str, size: int, mtime_ns: int) -> None:
        c.add("forget_skips", [path])
        c.add("payload", [(image_id, {"path": path, "size": size, "mtime_ns": mtime_ns, **location_payload(path)})])

    def delete(self, c: QdrantBatch, paths: Iterable[str]) -> None:
        c.add("delete", list(paths))

    def record_skips(self, c: QdrantBatch, skips: Iterable[SkipRow]) -> None:
        c.add("put_skips", list(skips))

    def forget_skips(self, c: QdrantBatch, paths: Iterable[str]) -> None:
        c.add("forget_skips", list(paths))

    def _ids_at(self, paths: list[str]) -> list[int]:
        ids: list[int] = []
        m = qdrant_models()
        for start in range(0, len(paths), PAGE):
            where = m.Filter(must=[m.FieldCondition(key="path", match=m.MatchAny(any=paths[start : start + PAGE]))])
            ids += [int(p.id) for p in self._scroll(where=where)]
        return ids

    def _send_insert(self, rows: list[NewRow]) -> None:
        m = qdrant_models()
        old = self._ids_at([r.path for r in rows])
        first = int(self.get_meta("next_id") or 1)
        self.set_meta("next_id", str(first + len(rows)))  # reserved before use: ids are never reused
        points = [
            m.PointStruct(
                id=first + n,
                vector=np.asarray(r.embedding, dtype=np.float32).tolist(),
                payload=row_payload(r.path, r.size, r.mtime_ns, r.sha256, r.info),
            )
            for n, r in enumerate(rows)
        ]
        for start in range(0, len(points), PAGE):
            self._call("upsert", self.collection, points[start : start + PAGE], wait=True)
        if old:
            self._call("delete", self.collection, old, wait=True)

    def _send_delete(self, paths: list[str]) -> None:
        old = self._ids_at(paths)
        if old:
            self._call("delete", self.collection, old, wait=True)

    def _send_payload(self, updates: list[tuple[int, dict]]) -> None:
        m = qdrant_models()
        ops = [m.SetPayloadOperation(set_payload=m.SetPayload(payload=p, points=[int(i)])) for i, p in updates]
        for start in range(0, len(ops), PAGE):
            self._call("batch_update_points", self.collection, ops[start : start + PAGE], wait=True)

    def _send_put_skips(self, skips: list[SkipRow]) -> None:
        m = qdrant_models()
        points = [
            m.PointStruct(id=_skip_id(s.path), vector=_NO_VECTOR, payload={"kind": "skip", **s._asdict()})
            for s in skips
        ]
        for start in range(0, len(points), PAGE):
            self._call("upsert", self.meta_collection, points[start : start + PAGE], wait=True)

    def _send_forget_skips(self, paths: list[str]) -> None:
        ids = [_skip_id(p) for p in paths]
        for start in range(0, len(ids), PAGE):
            self._call("delete", self.meta_collection, ids[start : start + PAGE], wait=True)


class QdrantVectors:
    """Search done by Qdrant itself; filters become payload filters (see :func:`photo_filter`)."""

    kind = "qdrant"

    def __init__(self, store: QdrantStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return self.store.count()

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, E) float32 → (scores (Q, k), ids (Q, k)), id -1 where there are fewer than ``k``;
        ``allowed``: only these ids."""
        m = qdrant_models()
        where = None if allowed is None else m.Filter(must=[m.HasIdCondition(has_id=[int(i) for i in allowed])])
        return self._search(queries, k, where)

    def search_where(self, queries: np.ndarray, k: int, *, where: PhotoFilter) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` among the rows that pass ``where``, filtered by the engine."""
        return self._search(queries, k, photo_filter(where))

    def _search(self, queries: np.ndarray, k: int, where: Any) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))  # (Q, E)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if k <= 0 or not self.store._has_rows_collection():
            return scores, ids
        for n, q in enumerate(queries):
            found = self.store._call(
                "query_points", self.store.collection, query=q.tolist(), limit=k, query_filter=where,
                with_payload=False, with_vectors=False,
            ).points  # fmt: skip
            scores[n, : len(found)] = [p.score for p in found]
            ids[n, : len(found)] = [int(p.id) for p in found]
        return scores, ids


def _skip_id(path: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "clipforge:skip:" + path))


def _vector(point: Any) -> np.ndarray:
    return np.asarray(point.vector, dtype=np.float32)  # (E,)


def _matrix(points: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Points → (ids (B,) int64, vectors (B, E) float32)."""
    ids = np.fromiter((int(p.id) for p in points), dtype=np.int64, count=len(points))
    return ids, np.stack([_vector(p) for p in points]).astype(np.float32, copy=False)

