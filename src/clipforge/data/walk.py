"""Listing the image files under a folder without ever leaving it.

:func:`walk_images` follows a symbolic link to a file only when it resolves inside the root (a
link to ``/etc/passwd.png`` or into a sibling folder is skipped and listed). Links to directories
are never followed: one inside the root is walked under its real path anyway, and this way link
loops cannot arise. Paths are relative to the root, with ``/`` separators. Used by ``index`` and
by every command that takes a folder (``eval``, ``classify``, ``caption``, ``moderate``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from clipforge.data.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def _image_extensions() -> tuple[str, ...]:
    return tuple(e.lower() for e in IMAGE_EXTENSIONS)


class FileStat(NamedTuple):
    path: str  # relative to the root, "/"-separated
    size: int
    mtime_ns: int


class FolderListing(NamedTuple):
    files: list[FileStat]  # sorted by path
    outside_links: list[str]  # links that resolve outside the root (not followed)
    unreadable: list[str]  # directories or files that could not be listed or stat'ed


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
