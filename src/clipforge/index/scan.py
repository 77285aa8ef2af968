"""Walking an image folder and comparing it with what the index already holds.

:func:`walk_images` lists the image files under a root (by extension), following a symbolic link
to a file only when it resolves inside the root (a link to ``/etc/passwd.png`` or into a sibling
folder is skipped and listed). Links to directories are never followed: one inside the root is
walked under its real path anyway, and this way link loops cannot arise. Paths are relative to the root, with
``/`` separators, so an index survives the folder being mounted elsewhere.

:func:`diff_folder` compares the listing with the stored rows by (size, mtime): unchanged files
are not even read. What it cannot tell from metadata alone (a rename, a ``touch``) is settled by
content hashes in :mod:`clipforge.index.embed`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from .store import FileRow, SkipRow

log = logging.getLogger(__name__)


def _image_extensions() -> tuple[str, ...]:
    from clipforge.data.images import IMAGE_EXTENSIONS

    return tuple(e.lower() for e in IMAGE_EXTENSIONS)


class FileStat(NamedTuple):
    path: str  # relative to the root, "/"-separated
    size: int
    mtime_ns: int


class FolderListing(NamedTuple):
    files: list[FileStat]  # sorted by path
    outside_links: list[str]  # links that resolve outside the root (not followed)
    unreadable: list[str]  # directories or files that could not be listed or stat'ed


class FolderDiff(NamedTuple):
    unchanged: list[FileStat]
    new: list[FileStat]  # paths the index does not hold
    changed: list[FileStat]  # held paths whose size or mtime differs
    gone: list[FileRow]  # held rows whose file is no longer there
    skip_unchanged: list[SkipRow]  # undecodable before and not modified since: not retried
    skip_gone: list[str]  # skip records whose file is gone


def is_within(path: str | Path, root: str | Path) -> bool:
    """True if ``path`` (already resolved) is ``root`` or below it."""
    path, root = os.fspath(path), os.fspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_images(
    root: str | Path,
    *,
    extensions: tuple[str, ...] | None = None,
    include_hidden: bool = False,
) -> FolderListing:
    """All image files below ``root`` (hidden names, starting with ".", skipped unless asked)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    exts = extensions or _image_extensions()
    real_root = os.path.realpath(root)
    files: list[FileStat] = []
    outside: list[str] = []
    unreadable: list[str] = []
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]  # (directory as reached, relative prefix)
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as e:
            log.warning("cannot list %s: %s", directory, e)
            unreadable.append(prefix or ".")
            continue
        for entry in entries:
            if entry.name.startswith(".") and not include_hidden:
                continue
            rel = prefix + entry.name
            try:
                is_link = entry.is_symlink()
                if is_link:
                    target = os.path.realpath(entry.path)
                    if not is_within(target, real_root):
                        log.info("not following %s: it points outside %s", rel, root)
                        outside.append(rel)
                        continue
                if entry.is_dir(follow_symlinks=True):
                    # A link to a directory inside the root is not followed either: its target is
                    # walked under its real path, and not following links means no loops.
                    if not is_link:
                        stack.append((entry.path, rel + "/"))
                    continue
                if not entry.name.lower().endswith(exts) or not entry.is_file(follow_symlinks=True):
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError as e:  # dangling link, permission denied, vanished meanwhile
                log.warning("cannot stat %s: %s", rel, e)
                unreadable.append(rel)
                continue
            files.append(FileStat(rel, st.st_size, st.st_mtime_ns))
    files.sort()
    return FolderListing(files, sorted(outside), sorted(unreadable))


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
