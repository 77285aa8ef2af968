"""The embedding store: one SQLite database (WAL mode) per indexed folder.

Each indexed file is one row: its path relative to the folder root, size, mtime, SHA-256 of its
bytes and its embedding (a float32 or float16 blob), plus what a photo library is filtered by: the
date taken, camera, displayed width x height, file type and folder (see
:mod:`clipforge.data.photos`). An index of the first schema is upgraded in place when opened (the
new columns start empty and ``clipforge index`` fills them from the file headers).

The ``meta`` table records which model made the embeddings, the embedding size and dtype and the
folder root, so asking an index to work with another model is caught instead of returning
meaningless neighbours. Files that could not be decoded are remembered in ``skipped`` (with the
size and mtime seen), so they are listed by ``--report`` and retried only once they change.

Rows are immutable in their embedding: a changed file gets a new row (and a new id; ids are
``AUTOINCREMENT`` and never reused), a renamed one keeps its row. Hence ``(row count, max id,
model id)`` changes exactly when the set of stored embeddings changes, which is what
:class:`Fingerprint` captures for the ANN index (see :mod:`clipforge.index.ann`).

Every write happens in a transaction; a process killed at any moment leaves the database at its
last commit. Connections are per thread, so one store can be shared by a threaded server.

The rows it reads and writes are the records of :mod:`clipforge.index.records` (re-exported here);
the table layout and its upgrade are in :mod:`clipforge.index.schema`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .binding import DTYPES, IndexDatabaseError, ModelBinding, ModelMismatchError, describe_model
from .records import FileRow, Fingerprint, NewRow, PhotoFields, PhotoFilter, SkipRow, Snapshot, folder_of
from .schema import INFO_COLUMNS, PAGE_SIZE, SCHEMA, SCHEMA_SQL, UPGRADABLE, filter_sql, upgrade_schema

__all__ = [  # the records are re-exported: `from clipforge.index.store import PhotoFilter` keeps working
    "DTYPES",
    "FileRow",
    "Fingerprint",
    "IndexDatabaseError",
    "IndexStore",
    "ModelMismatchError",
    "NewRow",
    "PhotoFields",
    "PhotoFilter",
    "SkipRow",
    "Snapshot",
    "describe_model",
]

log = logging.getLogger(__name__)


def _is_sql_int(value: int) -> bool:
    """Whether ``value`` fits SQLite's signed 64-bit INTEGER (else binding it raises OverflowError)."""
    return -(2**63) <= int(value) < 2**63


# SQLite's result codes that say the file itself is not a (sound) database, as opposed to failing
# to read or write it (SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_BUSY...).
_NOT_A_DATABASE = ("SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_ERROR")


def _says_not_a_database(error: sqlite3.DatabaseError) -> bool:
    """Whether ``error`` blames the file's contents (then it is not an index), not the storage."""
    name = getattr(error, "sqlite_errorname", None)
    if name is None:  # Python < 3.11, or an error made without a result code
        return not isinstance(error, sqlite3.OperationalError)
    return name.startswith(_NOT_A_DATABASE)


class IndexStore(ModelBinding):
    """An index database. ``create=False`` refuses a path that holds no index yet."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path}: no index database (run `clipforge index FOLDER --db {path}`)"
            )
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        not_ours = f"{self.path}: not a clipforge index database"
        try:
            conn = self._conn()
            empty = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            if not empty:  # an existing database: ours, or refused untouched
                schema = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                schema = schema[0] if schema else None
                if schema in UPGRADABLE:
                    schema = upgrade_schema(conn)
            elif create:
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before the first table: then it is fixed
                conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
                conn.executescript(SCHEMA_SQL)
                with self.transaction() as c:
                    c.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA,))
                schema = SCHEMA
            else:
                raise IndexDatabaseError(f"{not_ours} (empty)")
        except sqlite3.DatabaseError as e:
            self.close()
            if not _says_not_a_database(e):  # a full disk, an I/O or permission error: not the file's fault
                code = getattr(e, "sqlite_errorname", type(e).__name__)
                raise IndexDatabaseError(
                    f"{self.path}: cannot open the index database: {e} ({code}); the disk may be full or its "
                    "folder not writable (SQLite needs room for the -wal and -shm files beside it). The "
                    "database itself was not changed: free some space and retry"
                ) from e
            raise IndexDatabaseError(f"{not_ours} ({e})") from e
        if schema != SCHEMA:
            self.close()
            raise IndexDatabaseError(f"{self.path}: index schema {schema!r}, this clipforge reads {SCHEMA!r}")

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:  # disk full, read-only, I/O error: the data is intact
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise IndexDatabaseError(f"{self.path}: cannot write the index ({e}); nothing was changed") from e

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.ProgrammingError):  # made in another thread
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def _rebind(self, values: dict[str, str], *, clear_rows: bool, drop_keys: tuple[str, ...]) -> None:
        with self.transaction() as c:  # one commit: rows dropped and model re-bound together
            if clear_rows:
                c.execute("DELETE FROM images")
                c.execute("DELETE FROM skipped")
            c.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in drop_keys])
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    def vector_search(self) -> None:
        """None: the SQLite store has no search of its own (:mod:`clipforge.index.ann` builds one)."""
        return None

    # -- reads ---------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRow]:
        rows = self._conn().execute("SELECT id, path, size, mtime_ns, sha256 FROM images")
        return {r[1]: FileRow(*r) for r in rows}

    def skipped(self) -> dict[str, SkipRow]:
        rows = self._conn().execute("SELECT path, size, mtime_ns, reason FROM skipped ORDER BY path")
        return {r[0]: SkipRow(*r) for r in rows}

    def count(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def fingerprint(self) -> Fingerprint:
        conn = self._conn()
        conn.execute("BEGIN")  # one snapshot for both reads
        try:
            return self.fingerprint_in_txn(conn)
        finally:
            conn.execute("COMMIT")

    def path_of(self, image_id: int) -> str | None:
        if not _is_sql_int(image_id):
            return None  # no row can have it (SQLite ids are signed 64-bit)
        row = self._conn().execute("SELECT path FROM images WHERE id = ?", (int(image_id),)).fetchone()
        return None if row is None else row[0]

    def paths_of(self, ids: Iterable[int]) -> dict[int, str]:
        ids = [int(i) for i in ids if _is_sql_int(i)]
        out: dict[int, str] = {}
        for start in range(0, len(ids), 500):  # stay below SQLite's host-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self._conn().execute(f"SELECT id, path FROM images WHERE id IN ({marks})", chunk))
        return out

    def details_of(self, ids: Iterable[int]) -> dict[int, dict]:
        """Per id: path and the photo fields (None where unknown)."""
        ids = [int(i) for i in ids]
        cols = ("path", *INFO_COLUMNS)
        out: dict[int, dict] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, {', '.join(cols)} FROM images WHERE id IN ({marks})"
            for row in self._conn().execute(sql, chunk):
                out[row[0]] = dict(zip(cols, row[1:], strict=True))
        return out

    def ids_matching(self, where: PhotoFilter) -> np.ndarray:
        """(M,) int64 ids of the rows that pass ``where`` (rows of unknown date fail a date bound)."""
        clause, params = filter_sql(where)
        sql = "SELECT id FROM images" + clause
        return np.fromiter((r[0] for r in self._conn().execute(sql, params)), dtype=np.int64)

    def facets(self) -> dict:
        """What the filters can choose from: folders, types and the date range of the index."""
        conn = self._conn()
        folders = [r[0] for r in conn.execute("SELECT DISTINCT folder FROM images WHERE folder IS NOT NULL")]
        types = [r[0] for r in conn.execute("SELECT DISTINCT type FROM images WHERE type IS NOT NULL")]
        first, last = conn.execute("SELECT MIN(taken_at), MAX(taken_at) FROM images").fetchone()
        return {"folders": sorted(folders), "types": sorted(types), "taken_at": [first, last]}

    def rows_without_info(self) -> list[FileRow]:
        rows = self._conn().execute("SELECT id, path, size, mtime_ns, sha256 FROM images WHERE type IS NULL")
        return [FileRow(*r) for r in rows]

    def embedding_of_hash(self, sha256: str) -> np.ndarray | None:
        sql = "SELECT embedding FROM images WHERE sha256 = ? LIMIT 1"
        row = self._conn().execute(sql, (sha256,)).fetchone()
        return None if row is None else self._decode(row[0])

    def embedding_of(self, image_id: int) -> np.ndarray | None:
        if not _is_sql_int(image_id):
            return None
        row = self._conn().execute("SELECT embedding FROM images WHERE id = ?", (int(image_id),)).fetchone()
        return None if row is None else self._decode(row[0])

    def embeddings_of(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Per id that exists: its (E,) float32 embedding."""
        ids = [int(i) for i in ids if _is_sql_int(i)]
        out: dict[int, np.ndarray] = {}
        dtype = np.dtype(self.dtype)  # once: each read of the meta is a query (re-ranking calls this per search)
        for start in range(0, len(ids), 500):  # stay below SQLite's host-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn().execute(f"SELECT id, embedding FROM images WHERE id IN ({marks})", chunk).fetchall()
            if not rows:
                continue
            blobs = b"".join(blob for _, blob in rows)
            if len(blobs) == len(rows) * len(rows[0][1]):  # equal sizes (always, as written): decode at once
                vectors = np.frombuffer(blobs, dtype=dtype).reshape(len(rows), -1).astype(np.float32)  # (n, E)
                out.update(zip((image_id for image_id, _ in rows), vectors, strict=True))
            else:
                out.update((image_id, np.frombuffer(blob, dtype=dtype).astype(np.float32)) for image_id, blob in rows)
        return out

    def embedding_batches(self, *, batch_rows: int) -> Iterator[tuple[Fingerprint, np.ndarray, np.ndarray]]:
        """Every row as ``(fingerprint, ids (B,) int64, vectors (B, E) float32)`` batches of at most
        ``batch_rows``, in id order, from one read transaction (one consistent snapshot; the
        fingerprint is the same in every batch). Holds one batch at a time."""
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        conn = self._conn()
        dim, dtype = self.embed_dim or 0, np.dtype(self.dtype)
        conn.execute("BEGIN")
        try:
            fp = self.fingerprint_in_txn(conn)
            rows = conn.execute("SELECT id, embedding FROM images ORDER BY id")
            while chunk := rows.fetchmany(batch_rows):
                ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
                vectors = np.empty((len(chunk), dim), dtype=np.float32)  # (B, E)
                for n, (_, blob) in enumerate(chunk):
                    vectors[n] = np.frombuffer(blob, dtype=dtype)
                del chunk
                yield fp, ids, vectors
        finally:
            conn.execute("COMMIT")

    def load_embeddings(self) -> tuple[np.ndarray, np.ndarray, Fingerprint]:
        """All embeddings as ``(ids (N,) int64, vectors (N, E) float32, fingerprint)``, one snapshot."""
        snap = self.snapshot(after_id=0)
        return snap.ids, snap.vectors, snap.fingerprint

    def snapshot(self, *, after_id: int) -> Snapshot:
        """In one read transaction: every live id, and the rows with ``id > after_id`` (the rows
        added since a fingerprint with ``max_id == after_id``; ids are never reused)."""
        conn = self._conn()
        dim, dtype = self.embed_dim or 0, np.dtype(self.dtype)
        conn.execute("BEGIN")
        try:
            fp = self.fingerprint_in_txn(conn)
            all_ids = np.fromiter(
                (r[0] for r in conn.execute("SELECT id FROM images ORDER BY id")),
                dtype=np.int64,
                count=fp.count,
            )
            n_new = int(np.count_nonzero(all_ids > after_id))
            ids = np.empty(n_new, dtype=np.int64)
            vectors = np.empty((n_new, dim), dtype=np.float32)
            rows = conn.execute("SELECT id, embedding FROM images WHERE id > ? ORDER BY id", (after_id,))
            for n, (image_id, blob) in enumerate(rows):
                ids[n] = image_id
                vectors[n] = np.frombuffer(blob, dtype=dtype)
        finally:
            conn.execute("COMMIT")
        return Snapshot(all_ids, ids, vectors, fp)

    def fingerprint_in_txn(self, conn: sqlite3.Connection) -> Fingerprint:
        count, max_id = conn.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM images").fetchone()
        row = conn.execute("SELECT value FROM meta WHERE key = 'model_id'").fetchone()
        return Fingerprint(count, max_id, row[0] if row else "")

    def _decode(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.dtype(self.dtype)).astype(np.float32)

    def encode(self, vector: np.ndarray) -> bytes:
        """One embedding as a blob of the store's dtype, checking its size."""
        vector = np.asarray(vector)
        if vector.shape != (self.embed_dim,):
            raise ValueError(f"embedding of shape {vector.shape}, the index stores ({self.embed_dim},)")
        return np.ascontiguousarray(vector, dtype=np.dtype(self.dtype)).tobytes()

    # -- writes (call inside ``with store.transaction() as c``) ---------------------------------
    def insert(self, c: sqlite3.Connection, rows: Iterable[NewRow]) -> None:
        """Insert rows, replacing any row at the same path (a changed file gets a new id)."""
        rows = list(rows)
        c.executemany("DELETE FROM images WHERE path = ?", [(r.path,) for r in rows])
        c.executemany("DELETE FROM skipped WHERE path = ?", [(r.path,) for r in rows])
        c.executemany(
            "INSERT INTO images (path, size, mtime_ns, sha256, embedding, taken_at, taken_from, camera, "
            "width, height, type, folder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.path, r.size, r.mtime_ns, r.sha256, self.encode(r.embedding), *(r.info or PhotoFields()),
                 folder_of(r.path))
                for r in rows
            ],
        )

    @staticmethod
    def set_info(c: sqlite3.Connection, image_id: int, info: PhotoFields) -> None:
        """Fill in the photo fields of an existing row (an index made before they existed)."""
        sql = "UPDATE images SET taken_at = ?, taken_from = ?, camera = ?, width = ?, height = ?, type = ? WHERE id = ?"
        c.execute(sql, (*info, image_id))

    @staticmethod
    def move(c: sqlite3.Connection, image_id: int, *, path: str, size: int, mtime_ns: int) -> None:
        """A renamed (or merely touched) file keeps its row and embedding."""
        c.execute("DELETE FROM skipped WHERE path = ?", (path,))
        sql = "UPDATE images SET path = ?, size = ?, mtime_ns = ?, folder = ? WHERE id = ?"
        c.execute(sql, (path, size, mtime_ns, folder_of(path), image_id))

    @staticmethod
    def delete(c: sqlite3.Connection, paths: Iterable[str]) -> None:
        c.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in paths])

    @staticmethod
    def record_skips(c: sqlite3.Connection, skips: Iterable[SkipRow]) -> None:
        c.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", list(skips))

    @staticmethod
    def forget_skips(c: sqlite3.Connection, paths: Iterable[str]) -> None:
        c.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p in paths])
