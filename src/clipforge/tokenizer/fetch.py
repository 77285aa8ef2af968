"""Fetch OpenAI's BPE vocabulary into the cache directory.

clipforge does not redistribute ``bpe_simple_vocab_16e6.txt.gz``. The file ships inside the
``open_clip_torch`` wheel, so we ask pip for that wheel (no install, no dependencies), take the one
file out and check its SHA-256.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .vocab import (
    OPENAI_VOCAB_FILE,
    OPENAI_VOCAB_SHA256,
    OPENAI_WHEEL,
    TokenizerError,
    default_cache_dir,
    sha256_file,
)


def fetch_openai_vocab(cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Download (once) OpenAI's vocabulary to ``cache_dir`` (default ``$CLIPFORGE_CACHE`` or
    ``~/.cache/clipforge``) and return its path."""
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = directory / OPENAI_VOCAB_FILE
    if target.is_file() and not force and sha256_file(target) == OPENAI_VOCAB_SHA256:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            OPENAI_WHEEL,
            "-d",
            tmp,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("open_clip_torch-*.whl"))
        if done.returncode != 0 or not wheels:
            raise TokenizerError(
                f"`{' '.join(command[2:])}` failed (rc={done.returncode}); is PyPI reachable?\n"
                f"{done.stderr[-2000:]}"
            )
        member = f"open_clip/{OPENAI_VOCAB_FILE}"
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise TokenizerError(f"{wheels[0].name} does not contain {member}")
            partial = directory / (OPENAI_VOCAB_FILE + ".partial")
            partial.write_bytes(wheel.read(member))
    digest = sha256_file(partial)
    if digest != OPENAI_VOCAB_SHA256:
        partial.unlink()
        raise TokenizerError(f"{member} has SHA-256 {digest}, expected {OPENAI_VOCAB_SHA256}")
    os.replace(partial, target)
    return target
