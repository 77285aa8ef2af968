"""The typed records that pass between the index store, the folder scan, the indexer and search.

Rows as read from and written to the database (:class:`FileRow`, :class:`NewRow`,
:class:`SkipRow`, :class:`PhotoFields`), the filter a search applies (:class:`PhotoFilter`), and
what identifies a set of stored embeddings (:class:`Fingerprint`, :class:`Snapshot`). Plain
immutable tuples, no SQL: :mod:`clipforge.index.store` reads and writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np


class FileRow(NamedTuple):
    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str


class SkipRow(NamedTuple):
    path: str
    size: int
    mtime_ns: int
    reason: str


class PhotoFields(NamedTuple):
    """The filterable facts of one file (``clipforge.data.photos.PhotoInfo`` has the same fields)."""

    taken_at: str | None = None  # ISO-8601 local time
    taken_from: str | None = None  # "exif" or "file"
    camera: str | None = None
    width: int | None = None
    height: int | None = None
    type: str | None = None  # jpeg, png, heic, avif, ...


class NewRow(NamedTuple):
    path: str
    size: int
    mtime_ns: int
    sha256: str
    embedding: np.ndarray  # (E,)
    info: PhotoFields | None = None  # None: filled in by a later `clipforge index` run


class PhotoFilter(NamedTuple):
    """Restricts a search to some rows. Every given condition must hold; None means any."""

    folder: str | None = None  # this folder (relative to the root, "/"-separated) and those below it
    taken_after: str | None = None  # ISO date or date-time, inclusive ("2021-07" works: string order)
    taken_before: str | None = None  # inclusive: "2021-07-31" includes that whole day
    types: tuple[str, ...] | None = None  # file types, e.g. ("jpeg", "heic")

    def is_empty(self) -> bool:
        return all(v is None for v in self)

    @classmethod
    def make(
        cls,
        *,
        folder: str | None = None,
        taken_after: str | None = None,
        taken_before: str | None = None,
        types: Iterable[str] | str | None = None,
    ) -> PhotoFilter:
        """A checked filter: dates as ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]``;
        ``types`` a list or a comma-separated string. Blank values mean "any"."""
        for name, value in (("taken_after", taken_after), ("taken_before", taken_before)):
            if value and not _DATE_BOUND.fullmatch(value):
                raise ValueError(
                    f"{name} must be a date like 2021, 2021-07, 2021-07-04 or 2021-07-04T18:30, got {value!r}"
                )
        if isinstance(types, str):
            types = types.split(",")
        kinds = tuple(t.strip().lower() for t in types or () if t.strip()) or None
        if folder is not None and (".." in folder.split("/") or folder.startswith("/")):
            raise ValueError(f"folder must be relative to the index root, without '..', got {folder!r}")
        return cls(folder or None, taken_after or None, taken_before or None, kinds)


_DATE_BOUND = re.compile(r"\d{4}(-\d{2}(-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?)?)?")


def folder_of(path: str) -> str:
    """The folder of a relative ``/``-separated path ("" for files at the root)."""
    return path.rpartition("/")[0]


class Fingerprint(NamedTuple):
    count: int
    max_id: int
    model_id: str

    def to_dict(self) -> dict:
        return self._asdict()


class Snapshot(NamedTuple):
    all_ids: np.ndarray  # (N,) every live row id
    ids: np.ndarray  # (M,) ids of the rows returned
    vectors: np.ndarray  # (M, E) float32
    fingerprint: Fingerprint
