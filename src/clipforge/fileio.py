"""File safety in one place: atomic writes that survive a crash at any moment, and file digests.

``atomic_write`` writes to a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the directory: a reader (or a process restarted after SIGKILL or power loss) sees
the old file or the new one, never a partial one. The new file gets the mode an ordinary ``open``
would give it (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
Temporaries are named ``.<name>.<random>.tmp``; :func:`sweep_temporaries` removes stale ones.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (read without changing it where the platform allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # fallback: read by setting (briefly) and restoring
    os.umask(mask)
    return mask


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# How writers implemented outside Python (safetensors, torch, faiss) report a full disk. torch.save
# to a file name writes through a C++ stream, which says only "basic_ios::clear: iostream error"
# (and then, closing the archive, "unexpected pos": that second error has the first as its context).
_DISK_FULL_MARKS = (
    "no space left", "storagefull", "disk quota", "file write failed", "errno 28", "enospc", "iostream error",
)  # fmt: skip


def write_error(path: str | Path, error: BaseException) -> OSError | None:
    """``error`` raised while writing ``path`` as an ``OSError`` naming ``path`` (not the temporary
    file) and the cause, or None when it is not a storage failure (a bug, an interrupt). A
    ``RuntimeError`` (how C++ writers fail) counts as one when the error it was raised while
    handling does."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError):
            return OSError(cause.errno, cause.strerror or str(cause), str(path))
        if any(mark in str(cause).lower() for mark in _DISK_FULL_MARKS):
            first = str(cause).strip().splitlines()[0]
            return OSError(errno.ENOSPC, f"cannot write (disk full?): {first}", str(path))
        cause = (cause.__cause__ or cause.__context__) if isinstance(cause, RuntimeError) else None
    return None


def replace_durably(src: str | Path, dst: str | Path) -> Path:
    """Move the finished file ``src`` over ``dst`` so that a crash leaves the old or the new file,
    never a torn one: fsync ``src``, rename it (atomic within one file system), fsync the folder."""
    with open(src, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)
    return Path(dst)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)``, fsync the file, give it the umask's mode, rename it over ``path`` and
    fsync the directory. On any error the temporary file is removed and ``path`` is untouched; a
    storage failure (disk full, quota, I/O error), whichever library reports it, is raised as an
    ``OSError`` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except Exception as e:
            storage = write_error(path, e)
            if storage is None:
                raise
            raise storage from e
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sweep_temporaries(
    directory: str | Path, *, older_than_s: float = 0.0, names: Iterable[str] | None = None
) -> list[Path]:
    """Remove ``atomic_write`` leftovers (``.<name>.*.tmp``) in ``directory`` older than
    ``older_than_s`` seconds: what a process killed mid-write leaves behind. With ``names``, only
    the temporaries of those target file names (for folders shared with other programs).
    Returns the removed paths."""
    directory = Path(directory)
    prefixes = None if names is None else tuple(f".{n}." for n in names)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    now = time.time()
    for p in directory.iterdir():
        if not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)) or not p.is_file():
            continue
        if prefixes is not None and not p.name.startswith(prefixes):
            continue
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed
