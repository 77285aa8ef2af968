"""Walking an image folder and comparing it with what the index already holds.

:func:`~clipforge.data.walk.walk_images` (shared with every command that takes a folder) lists the
image files under the root without leaving it (links out of the tree and links to directories are
not followed). Paths are relative to the root, with ``/`` separators, so an index survives the
folder being mounted elsewhere.

:func:`diff_folder` compares the listing with the stored rows by (size, mtime): unchanged files
are not even read. What it cannot tell from metadata alone (a rename, a ``touch``) is settled by
content hashes in :mod:`clipforge.index.indexer`.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from ..data.walk import FileStat, FolderListing, is_within, walk_images
from .records import FileRow, SkipRow

__all__ = ["FileStat", "FolderDiff", "FolderListing", "diff_folder", "is_within", "walk_images"]

log = logging.getLogger(__name__)


class FolderDiff(NamedTuple):
    unchanged: list[FileStat]
    new: list[FileStat]  # paths the index does not hold
    changed: list[FileStat]  # held paths whose size or mtime differs
    gone: list[FileRow]  # held rows whose file is no longer there
    skip_unchanged: list[SkipRow]  # undecodable before and not modified since: not retried
    skip_gone: list[str]  # skip records whose file is gone


def diff_folder(files: list[FileStat], rows: dict[str, FileRow], skipped: dict[str, SkipRow]) -> FolderDiff:
    """Split a listing against the stored rows and skip records (metadata only, no file reads)."""
    unchanged, new, changed, skip_unchanged = [], [], [], []
    on_disk = set()
    for f in files:
        on_disk.add(f.path)
        row = rows.get(f.path)
        if row is not None:
            (unchanged if (row.size, row.mtime_ns) == (f.size, f.mtime_ns) else changed).append(f)
            continue
        skip = skipped.get(f.path)
        if skip is not None and (skip.size, skip.mtime_ns) == (f.size, f.mtime_ns):
            skip_unchanged.append(skip)
        else:
            new.append(f)
    gone = [row for path, row in sorted(rows.items()) if path not in on_disk]
    skip_gone = [path for path in sorted(skipped) if path not in on_disk]
    return FolderDiff(unchanged, new, changed, gone, skip_unchanged, skip_gone)
