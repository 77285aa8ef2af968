"""Shared helpers for the search tests: an encoder and a checkpoint of a tiny random CLIP (built by
``factories``), a tokenizer, and image folders (not a test module)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from factories import tiny_model
from PIL import Image


class WordTokenizer:
    """A stand-in tokenizer: each word hashed to an id; SOT first, EOT (the largest id) last."""

    def __init__(self, vocab_size: int = 64, context_length: int = 16) -> None:
        self.vocab_size, self.context_length = vocab_size, context_length
        self.sot_token_id, self.eot_token_id = vocab_size - 2, vocab_size - 1

    def __call__(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        ctx = context_length or self.context_length
        out = torch.zeros(len(texts), ctx, dtype=torch.long)  # (B, T)
        for i, text in enumerate(texts):
            ids = [1 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in text.lower().split()]
            ids = [self.sot_token_id, *ids[: ctx - 2], self.eot_token_id]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def tiny_encoder(seed: int = 0):
    from clipforge.api import image_transform
    from clipforge.index import Encoder

    model = tiny_model(seed=seed)
    return Encoder(model, WordTokenizer(), image_transform(model.config))


def tokenizer_for_checkpoint():
    """A small BPE tokenizer trained on a few captions (the 512 byte tokens + a few merges)."""
    from clipforge.tokenizer import train_bpe

    captions = ["a red circle", "a blue square", "a dog on a beach", "a cat on a sofa", "two green triangles"]
    return train_bpe(captions * 4, vocab_size=560, context_length=16, progress=False)


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint of a tiny random model with its own trained BPE tokenizer inside."""
    from clipforge.checkpoint import save_checkpoint

    tok = tokenizer_for_checkpoint()
    return save_checkpoint(path, tiny_model(seed=seed, vocab_size=tok.vocab_size), tokenizer=tok)


def write_image(path: Path, seed: int, *, size: tuple[int, int] = (40, 32), fmt: str | None = None) -> Path:
    """A small, distinct image (random blocks of colour) at ``path``."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((size[1] // 4, size[0] // 4, 1), dtype=np.uint8))  # (H, W, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_folder(root: Path, n: int, *, start: int = 0) -> list[Path]:
    """``n`` images of mixed formats in nested folders."""
    exts = [".png", ".jpg", ".webp", ".bmp", ".gif", ".tiff"]
    names = [f"d{i % 3}/img{i:04d}{exts[i % len(exts)]}" for i in range(start, start + n)]
    return [write_image(root / name, seed=start + j) for j, name in enumerate(names)]


def png_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of ``width`` x ``height`` zero pixels: tiny file, huge when decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (width + 1)  # filter byte + pixels
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _Kept:
    """A store whose ``close`` waits for the test's end: an embedded in-memory Qdrant collection
    lives only as long as its client, and the tests open "the same store" many times."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class StoreMaker:
    """Opens the stores of one kind under test by name: SQLite files under ``base``, or embedded
    (in-memory) Qdrant collections, one per name, shared by every open until :meth:`close_all`."""

    def __init__(self, kind: str, base: Path) -> None:
        self.kind, self.base, self._open = kind, Path(base), {}

    def __call__(self, name: str = "i", *, create: bool = True):
        from clipforge.index import IndexStore

        if self.kind == "sqlite":
            return IndexStore(self.base / f"{name}.cfidx", create=create)
        if name not in self._open:
            from clipforge.index.qdrant import QdrantStore, QdrantTarget

            self._open[name] = QdrantStore(QdrantTarget(None, ":memory:", name), create=create)
        return _Kept(self._open[name])

    def close_all(self) -> None:
        for store in self._open.values():
            store.close()
        self._open.clear()


def stored_rows(store) -> dict[str, tuple[int, str, np.ndarray]]:
    """path -> (id, sha256, embedding) of every row of ``store``, whichever kind."""
    rows = store.files()
    vectors = store.embeddings_of(r.id for r in rows.values())
    return {p: (r.id, r.sha256, vectors[r.id]) for p, r in rows.items()}
