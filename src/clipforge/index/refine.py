"""A finer product quantiser, held in memory, that orders an IVF-PQ index's candidates.

IVF-PQ's inverted lists keep a few bytes of codes per vector (64 at dimension 512): enough to
find a query's neighbourhood, too coarse to order it, so thousands of candidates are re-scored.
Their full vectors live in the store, where each costs a random disk read once the collection
outgrows the page cache (0.1-0.2 ms each on our machines: 2,000 candidates, 200-400 ms). So the
candidates are scored in two steps: with ``m`` bytes of finer codes per vector kept in memory
(sub-vectors of two dimensions at dimension 512: ``m = 256``), then the best few of those
exactly, with the stored vectors (:class:`clipforge.index.neighbours.IvfIndex`).

The codes are rows addressed by the store's row ids in ``<db>.faiss.refine``: a header, the code
books, then row ``i`` at ``rows_offset + i * m``. Ids grow and are never reused, so a row once
written never changes and an update appends; a deleted id's row is never read again (the IVF
index no longer returns it). The header's random token is recorded in the index's sidecar, so a
file from another build is never taken for this one.
"""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path

import numpy as np

from .neighbours import _faiss

MAGIC = b"CFREFN01"
HEADER = struct.Struct("<8sIII8s")  # magic, dim, m, code words per book, token
HEADER_BYTES = 64
KSUB = 256  # 8-bit codes


class RefineFileError(ValueError):
    """The file is not a refinement file, or not the one the index was built with."""


def _runs(ids: np.ndarray) -> list[tuple[int, int, int]]:
    """Sorted (N,) ids as runs of consecutive values: (position in ``ids``, first id, length)."""
    if len(ids) == 0:
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(ids)]])
    return [(int(s), int(ids[s]), int(e - s)) for s, e in zip(starts, ends, strict=True)]


class RefineCodes:
    """``m``-byte product-quantisation codes of every vector, as rows by id, and scoring with them."""

    def __init__(self, centroids: np.ndarray, codes: np.ndarray | None = None, *, token: str | None = None) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)  # (m, KSUB, dsub)
        self.m, _, self.dsub = self.centroids.shape
        self.dim = self.m * self.dsub
        self.codes = np.zeros((0, self.m), dtype=np.uint8) if codes is None else codes  # (max id + 1, m)
        self.token = token or secrets.token_hex(8)
        self._pq = None

    @classmethod
    def train(cls, sample: np.ndarray, m: int, *, niter: int = 10, seed: int = 0) -> RefineCodes:
        """Code books (k-means of 256 words per sub-space) trained on ``sample`` (S, E)."""
        faiss = _faiss()
        sample = np.ascontiguousarray(sample, dtype=np.float32)  # (S, E)
        pq = faiss.ProductQuantizer(sample.shape[1], m, 8)
        pq.cp.niter = niter
        pq.cp.seed = seed
        pq.train(sample)
        centroids = faiss.vector_to_array(pq.centroids).reshape(m, KSUB, -1)  # (m, 256, dsub)
        refine = cls(centroids)
        refine._pq = pq
        return refine

    def _quantizer(self):
        if self._pq is None:
            faiss = _faiss()
            pq = faiss.ProductQuantizer(self.dim, self.m, 8)
            faiss.copy_array_to_vector(self.centroids.ravel(), pq.centroids)
            pq.is_trained = True
            self._pq = pq
        return self._pq

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """(B, E) vectors → (B, m) uint8 codes."""
        return self._quantizer().compute_codes(np.ascontiguousarray(vectors, dtype=np.float32))

    def set(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Encode (B,) ids' (B, E) vectors into their rows (the table grows to the largest id)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        top = int(ids.max()) + 1
        if top > len(self.codes):  # grown in place (realloc: no second copy of a large table)
            if not self.codes.flags.owndata:
                self.codes = self.codes.copy()
            self.codes.resize((max(top, len(self.codes) + len(self.codes) // 8), self.m), refcheck=False)
        self.codes[ids] = self.encode(vectors)

    def shortlist(self, queries: np.ndarray, candidates: np.ndarray, keep: int) -> np.ndarray:
        """The ``keep`` best of each query's candidates by refined score: (Q, E) queries and
        (Q, C) candidate ids → (Q, keep) ids, best first (-1 where fewer)."""
        out = np.full((len(queries), keep), -1, dtype=np.int64)
        offsets = (np.arange(self.m) * KSUB).astype(np.int64)  # row of each sub-space in the table
        for row, (q, cand) in enumerate(zip(queries, candidates, strict=True)):
            cand = cand[(cand >= 0) & (cand < len(self.codes))]  # (C',)
            if len(cand) == 0:
                continue
            table = np.einsum("md,mkd->mk", q.reshape(self.m, self.dsub), self.centroids)  # (m, 256)
            scores = table.ravel()[self.codes[cand] + offsets].sum(axis=1)  # (C',): sum over sub-spaces
            n = min(keep, len(cand))
            top = np.argpartition(-scores, n - 1)[:n] if n < len(cand) else np.arange(len(cand))
            out[row, :n] = cand[top[np.argsort(-scores[top], kind="stable")]]
        return out

    # -- the file ------------------------------------------------------------------------------
    @property
    def rows_offset(self) -> int:
        return HEADER_BYTES + self.centroids.nbytes

    def create_file(self, path: str | Path) -> None:
        """Write the header and code books to ``path`` (truncated), no rows yet."""
        header = HEADER.pack(MAGIC, self.dim, self.m, KSUB, bytes.fromhex(self.token))
        with open(path, "wb") as f:
            f.write(header.ljust(HEADER_BYTES, b"\0"))
            f.write(self.centroids.tobytes())

    def write_rows(self, path: str | Path, ids: np.ndarray, codes: np.ndarray, *, sync: bool = True) -> None:
        """Write (B,) ids' (B, m) codes at their rows of the file at ``path``, consecutive ids in one
        write each; ``sync``: durable on return (before an index naming these ids is saved)."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        ids, codes = ids[order], np.ascontiguousarray(codes[order], dtype=np.uint8)  # (B, m)
        fd = os.open(path, os.O_WRONLY)
        try:
            for pos, first, n in _runs(ids):
                os.pwrite(fd, codes[pos : pos + n].tobytes(), self.rows_offset + first * self.m)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: str | Path, *, token: str, rows: int) -> RefineCodes:
        """The codes of ids below ``rows`` from the file at ``path`` written by the build with
        ``token`` (:class:`RefineFileError` if it is another file or holds fewer rows)."""
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
            if len(raw) < HEADER.size:
                raise RefineFileError(f"{path}: too short for a refinement file")
            magic, dim, m, ksub, file_token = HEADER.unpack(raw[: HEADER.size])
            if magic != MAGIC or ksub != KSUB or m < 1 or dim % m:
                raise RefineFileError(f"{path}: not a clipforge refinement file")
            if file_token.hex() != token:
                raise RefineFileError(f"{path}: written by another index build")
            centroids = np.fromfile(f, dtype=np.float32, count=m * KSUB * (dim // m)).reshape(m, KSUB, dim // m)
            codes = np.fromfile(f, dtype=np.uint8, count=rows * m)  # read straight into the table
        if codes.size != rows * m:
            raise RefineFileError(f"{path}: holds {codes.size // m} rows, the index needs {rows}")
        codes.shape = (rows, m)  # in place: the table keeps owning its memory (it grows in place)
        return cls(centroids, codes, token=token)
