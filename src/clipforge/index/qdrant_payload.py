"""A row of the index as a Qdrant payload, and a :class:`~clipforge.index.records.PhotoFilter` as a
Qdrant filter over it (see :mod:`clipforge.index.qdrant` for the collections).

Beside the row's own fields the payload carries what makes each filter one indexed condition:
``folders`` (the file's folder and every folder above it: "this folder and below" is one keyword
match) and ``taken_ts`` (the local date taken as whole seconds since 1970, so a date bound is a
numeric range; a bound names a period, ``2021-07`` all of July, as the SQLite store compares
ISO strings).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..optional import require
from .records import PhotoFields, PhotoFilter, folder_of

# payload key -> index kind: the filters (folder, date, type) and the sync's look-ups (path, content)
PAYLOAD_INDEXES = {
    "folders": "keyword",
    "folder": "keyword",
    "type": "keyword",
    "taken_ts": "integer-range",
    "path": "keyword",
    "sha256": "keyword",
}


def qdrant_models() -> Any:
    return require("qdrant_client.models", extra="qdrant", purpose="a Qdrant store", package="qdrant-client")


def _ancestors(folder: str) -> list[str]:
    """``"a/b/c"`` → ``["a", "a/b", "a/b/c"]`` (``""`` → ``[]``)."""
    parts = [p for p in folder.split("/") if p]
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]


_BOUND = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?)?)?")


def _seconds(moment: dt.datetime) -> int:
    return int((moment - dt.datetime(1970, 1, 1)).total_seconds())


def date_period(bound: str, *, name: str) -> tuple[int, int]:
    """The period a date bound names (``2021``, ``2021-07``, ``2021-07-04``, ``2021-07-04T18:30``...)
    as ``[start, end)`` local-time seconds: ``taken_after`` keeps ``>= start``, ``taken_before``
    (inclusive, as in the SQLite store) keeps ``< end``."""
    m = _BOUND.fullmatch(bound.strip())
    if not m:
        raise ValueError(f"{name} must be a date like 2021, 2021-07, 2021-07-04 or 2021-07-04T18:30, got {bound!r}")
    year, month, day, hour, minute, second = (None if g is None else int(g) for g in m.groups())
    try:
        start = dt.datetime(year, month or 1, day or 1, hour or 0, minute or 0, second or 0)
    except ValueError as e:
        raise ValueError(f"{name}={bound!r} is not a date ({e})") from None
    if second is not None:
        end = start + dt.timedelta(seconds=1)
    elif minute is not None:
        end = start + dt.timedelta(minutes=1)
    elif day is not None:
        end = start + dt.timedelta(days=1)
    elif month is not None:
        end = dt.datetime(year + (month == 12), month % 12 + 1, 1)
    else:
        end = dt.datetime(year + 1, 1, 1)
    return _seconds(start), _seconds(end)


def taken_seconds(taken_at: str | None) -> int | None:
    """An ISO local date-time (``YYYY-MM-DDTHH:MM:SS``) as seconds; None if absent or unreadable."""
    if not taken_at:
        return None
    try:
        return _seconds(dt.datetime.fromisoformat(taken_at[:19]))
    except ValueError:
        return None


def row_payload(path: str, size: int, mtime_ns: int, sha256: str, info: PhotoFields | None) -> dict:
    """A row's payload: the file, its photo fields, and the derived filter keys."""
    return {
        "path": path,
        "size": size,
        "mtime_ns": mtime_ns,
        "sha256": sha256,
        **info_payload(info or PhotoFields()),
        **location_payload(path),
    }


def info_payload(info: PhotoFields) -> dict:
    return {**info._asdict(), "taken_ts": taken_seconds(info.taken_at)}


def location_payload(path: str) -> dict:
    folder = folder_of(path)
    return {"folder": folder, "folders": _ancestors(folder)}


def photo_filter(where: PhotoFilter) -> Any:
    """``where`` as a Qdrant filter over the row payload (rows of unknown date fail a date bound)."""
    m = qdrant_models()
    must = []
    folder = (where.folder or "").strip("/")
    if folder:
        must.append(m.FieldCondition(key="folders", match=m.MatchValue(value=folder)))
    if where.taken_after:
        start, _ = date_period(where.taken_after, name="taken_after")
        must.append(m.FieldCondition(key="taken_ts", range=m.Range(gte=start)))
    if where.taken_before:
        _, end = date_period(where.taken_before, name="taken_before")
        must.append(m.FieldCondition(key="taken_ts", range=m.Range(lt=end)))
    if where.types is not None:
        must.append(m.FieldCondition(key="type", match=m.MatchAny(any=[t.lower() for t in where.types])))
    return m.Filter(must=must)


def match_value(key: str, value: str) -> Any:
    m = qdrant_models()
    return m.FieldCondition(key=key, match=m.MatchValue(value=value))


def all_of(*conditions: Any) -> Any:
    return qdrant_models().Filter(must=list(conditions))
