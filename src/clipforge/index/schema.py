"""The SQLite layout of an index database: its tables, the in-place upgrade from the first
schema, and the SQL ``WHERE`` clause a :class:`~clipforge.index.records.PhotoFilter` becomes.

Kept apart from :mod:`clipforge.index.store` (which owns connections, transactions and the
store's API) so the layout can be read in one place.
"""

from __future__ import annotations

import sqlite3

from .records import PhotoFilter

SCHEMA = "clipforge.index/2"
UPGRADABLE = ("clipforge.index/1",)
INFO_COLUMNS = ("taken_at", "taken_from", "camera", "width", "height", "type", "folder")
# SQLite's page size for a new database (fixed once the first table exists; older files keep theirs).
# A row is a little over one embedding's blob (a 512-d float32 one is 2,048 bytes): 4,096-byte pages
# (SQLite's default) hold one such row each and leave ~45 % of the file empty; 16 KiB pages hold seven.
PAGE_SIZE = 16384

_UPGRADE_SQL = """
ALTER TABLE images ADD COLUMN taken_at TEXT;
ALTER TABLE images ADD COLUMN taken_from TEXT;
ALTER TABLE images ADD COLUMN camera TEXT;
ALTER TABLE images ADD COLUMN width INTEGER;
ALTER TABLE images ADD COLUMN height INTEGER;
ALTER TABLE images ADD COLUMN type TEXT;
ALTER TABLE images ADD COLUMN folder TEXT;
CREATE INDEX IF NOT EXISTS images_taken_at ON images (taken_at);
CREATE INDEX IF NOT EXISTS images_type ON images (type);
"""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    embedding BLOB NOT NULL,
    taken_at TEXT,
    taken_from TEXT,
    camera TEXT,
    width INTEGER,
    height INTEGER,
    type TEXT,
    folder TEXT
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256);
CREATE INDEX IF NOT EXISTS images_taken_at ON images (taken_at);
CREATE INDEX IF NOT EXISTS images_type ON images (type);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""


def upgrade_schema(conn: sqlite3.Connection) -> str:
    """Add the photo columns to an index of the first schema (one transaction); the new schema."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in filter(None, (s.strip() for s in _UPGRADE_SQL.split(";"))):
            conn.execute(statement)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return SCHEMA


def filter_sql(where: PhotoFilter) -> tuple[str, list]:
    """``where`` as ``(" WHERE ..." or "", parameters)`` over the ``images`` table (rows of
    unknown date fail a date bound)."""
    clauses, params = [], []
    if where.folder is not None:
        folder = where.folder.strip("/")
        if folder:
            clauses.append("(folder = ? OR substr(folder, 1, ?) = ?)")
            params += [folder, len(folder) + 1, folder + "/"]
    if where.taken_after:
        clauses.append("taken_at >= ?")
        params.append(where.taken_after.replace(" ", "T"))
    if where.taken_before:
        clauses.append("taken_at <= ?")
        params.append(where.taken_before.replace(" ", "T") + "\uffff")  # "2021-07-31" includes 2021-07-31T23:59:59
    if where.types is not None:
        types = [t.lower() for t in where.types]
        clauses.append(f"type IN ({','.join('?' * len(types))})")
        params += types
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
