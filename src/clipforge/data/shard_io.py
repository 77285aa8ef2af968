"""Where tar shards come from: local files, ``file://``, ``pipe:`` commands and fsspec URLs.

A shard source is one of

* a local path (``shards/000001.tar``) or a ``file://`` URL;
* ``pipe:COMMAND``: the shard is the standard output of a shell command
  (``pipe:curl -s -L https://host/shard-000001.tar``, ``pipe:aws s3 cp s3://bucket/x.tar -``), as in
  WebDataset;
* any URL an fsspec file system serves: ``s3://`` (s3fs), ``gs://`` (gcsfs), ``hf://datasets/...``
  (huggingface_hub), ``http(s)://`` (aiohttp) ... (``pip install 'clipforge[stream]'`` plus the
  store's own package).

Patterns expand bash-style (``shards/{000000..000099}.tar``) and several patterns join with ``::``.
Shards are read front to back as streams (``tarfile`` mode ``r|*``), never seeked.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from braceexpand import braceexpand

from ..optional import require

PIPE = "pipe:"
FILE = "file://"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ZERO_STEP = re.compile(r"\{-?\d+\.\.-?\d+\.\.0+\}")


def is_remote(source: str) -> bool:
    """True for ``pipe:`` commands and URLs other than ``file://`` (no local existence check)."""
    return source.startswith(PIPE) or (bool(_URL.match(source)) and not source.startswith(FILE))


def local_path(source: str) -> Path | None:
    """The file behind a local path or ``file://`` URL; None for pipes and remote URLs."""
    if source.startswith(FILE):
        return Path(source[len(FILE) :])
    return None if is_remote(source) else Path(source)


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion, in order: ``a{00..02}`` → a00 a01 a02 (zero padding kept from
    the endpoints), ``{x,y}`` → x y, ``{0..10..5}`` → 0 5 10; several and nested groups combine."""
    if _ZERO_STEP.search(pattern):
        raise ValueError(f"brace range step must be positive in {pattern!r}")
    try:
        return list(braceexpand(pattern))
    except ValueError as e:  # braceexpand's UnbalancedBracesError
        raise ValueError(f"bad brace pattern {pattern!r}: {e}") from e


def expand_urls(pattern: str) -> list[str]:
    """``"a/{0..1}.tar::b/{0..1}.tar"`` → the four shard sources, in order."""
    return [url for part in pattern.split("::") if part for url in expand_braces(part)]


class PipeError(OSError):
    """A ``pipe:`` command exited with a non-zero status."""


@contextlib.contextmanager
def _pipe(command: str) -> Iterator[IO[bytes]]:
    proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    finished = False
    try:
        yield proc.stdout
        finished = True
    finally:
        proc.stdout.close()
        if not finished:  # the reader stopped early: the command's failure is not the news
            proc.kill()
        status = proc.wait()
        err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if finished and status != 0:
            raise PipeError(f"pipe command {shlex.quote(command)} exited with status {status}: {err[-300:]}")


@contextlib.contextmanager
def open_shard(source: str) -> Iterator[IO[bytes]]:
    """A binary stream of the shard ``source`` (see the module docstring for the forms)."""
    if source.startswith(PIPE):
        with _pipe(source[len(PIPE) :]) as f:
            yield f
        return
    path = local_path(source)
    if path is not None:
        with open(path, "rb") as f:
            yield f
        return
    fsspec = require("fsspec", extra="stream", purpose=f"reading {source.split('://')[0]}:// shards")
    try:
        opened = fsspec.open(source, "rb")
    except (ImportError, ValueError) as e:  # fsspec names the package a protocol needs
        raise ImportError(f"cannot open {source}: {e}") from e
    with opened as f:
        yield f
