"""Naming a store: the ``--store`` value parsed, checked and opened.

* ``PATH`` or ``sqlite:PATH``: an SQLite index file (:class:`~clipforge.index.store.IndexStore`).
* ``qdrant://HOST[:PORT]/COLLECTION``: a Qdrant server or cluster over HTTP (port 6333 unless said);
  ``?shards=N&replicas=M`` set how a cluster splits and copies the collection when it is made.
* ``qdrants://HOST[:PORT]/COLLECTION``: the same over TLS (HTTPS); give an API key with it.
* ``qdrant+local:PATH`` (or ``qdrant+local:PATH#COLLECTION``): Qdrant's embedded engine, keeping
  its collection in the folder PATH; one process at a time. ``qdrant+local::memory:`` lives in
  this process only (tests).

A malformed value is one ``ValueError`` naming ``store=`` and what to write instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from .protocol import Store
from .qdrant import DEFAULT_COLLECTION, DEFAULT_PORT, DEFAULT_TIMEOUT_S, QdrantStore, QdrantTarget
from .store import IndexStore

API_KEY_ENV = "QDRANT_API_KEY"  # where the CLI looks for a Qdrant API key when no flag gives one
_SCHEMES = {"qdrant": "http", "qdrants": "https"}
_LOCAL = "qdrant+local:"
_COLLECTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_FORMS = "qdrant://HOST:PORT/COLLECTION, qdrants://HOST:PORT/COLLECTION, qdrant+local:PATH or an index file"


class StoreSpec(NamedTuple):
    """A parsed ``--store`` value: an SQLite file (``sqlite``) or a Qdrant target (``qdrant``)."""

    kind: str  # "sqlite" or "qdrant"
    sqlite_path: Path | None = None
    qdrant: QdrantTarget | None = None


def parse_store(spec: str | Path) -> StoreSpec:
    """``spec`` as a :class:`StoreSpec` (see the module docstring); ``ValueError`` if malformed."""
    text = str(spec)
    bad = f"`store={text}`"
    if not text.strip():
        raise ValueError(f"{bad} is empty: give {_FORMS}")
    if text.startswith("sqlite:"):
        path = text[len("sqlite:") :]
        if not path:
            raise ValueError(f"{bad} names no file: write sqlite:PATH")
        return StoreSpec("sqlite", sqlite_path=Path(path))
    if text.startswith(_LOCAL):
        path, _, collection = text[len(_LOCAL) :].partition("#")
        if not path:
            raise ValueError(f"{bad} names no folder: write qdrant+local:PATH")
        _check_collection(collection or DEFAULT_COLLECTION, bad)
        return StoreSpec("qdrant", qdrant=QdrantTarget(None, path, collection or DEFAULT_COLLECTION))
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme is None:
        if text.lower().startswith("qdrant"):  # qdrant:host/c, qdrant+local/PATH, ...
            raise ValueError(f"{bad} is not a store URL: write {_FORMS}")
        return StoreSpec("sqlite", sqlite_path=Path(text))
    if scheme.group(1).lower() not in _SCHEMES:
        raise ValueError(f"{bad}: unknown store scheme {scheme.group(1)!r}; write {_FORMS}")
    return StoreSpec("qdrant", qdrant=_remote(text, bad))


def _remote(text: str, bad: str) -> QdrantTarget:
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise ValueError(f"{bad}: do not put credentials in the URL; give the API key with `qdrant_api_key=`")
    if parts.fragment:
        raise ValueError(f"{bad}: unexpected #fragment; write qdrant://HOST:PORT/COLLECTION")
    layout = _layout(parts.query, bad)
    if not parts.hostname:
        raise ValueError(f"{bad} names no host: write qdrant://HOST:PORT/COLLECTION")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:  # urlsplit: "Port could not be cast to integer value" / "out of range"
        raise ValueError(f"{bad}: the port must be a number from 1 to 65535") from None
    collection = parts.path.strip("/")
    if not collection:
        raise ValueError(f"{bad} names no collection: write qdrant://HOST:PORT/COLLECTION")
    _check_collection(collection, bad)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return QdrantTarget(f"{_SCHEMES[parts.scheme.lower()]}://{host}:{port}", None, collection, **layout)


def _layout(query: str, bad: str) -> dict[str, int]:
    """``shards=N&replicas=M`` → ``{"shards": N, "replicas": M}`` (each at most once, at least 1)."""
    try:
        given = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        given = {"": [query]}
    out = {}
    for key, values in given.items():
        if key not in ("shards", "replicas") or len(values) != 1 or not values[0].isdigit() or int(values[0]) < 1:
            raise ValueError(f"{bad}: the URL takes only ?shards=N&replicas=M (whole numbers from 1), not {query!r}")
        out[key] = int(values[0])
    return out


def _check_collection(name: str, bad: str) -> None:
    if not _COLLECTION.fullmatch(name) or name.endswith("__meta"):
        raise ValueError(
            f"{bad}: {name!r} is not a usable collection name (letters, digits, '_', '-', '.'; "
            "not ending in __meta)"
        )


def open_store(
    spec: str | Path,
    *,
    create: bool = False,
    qdrant_api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Store:
    """Open the store ``spec`` names. ``create``: make an empty one if there is none.
    ``qdrant_api_key`` and ``timeout`` (seconds a request to a Qdrant server may take) apply to
    Qdrant stores."""
    parsed = parse_store(spec)
    if parsed.kind == "sqlite":
        if qdrant_api_key:
            raise ValueError(f"`qdrant_api_key=` is for a Qdrant store, and `store={spec}` is an index file")
        return IndexStore(parsed.sqlite_path, create=create)
    if timeout <= 0:
        raise ValueError(f"`timeout={timeout}` must be a positive number of seconds")
    return QdrantStore(parsed.qdrant, create=create, api_key=qdrant_api_key or None, timeout=timeout)
