"""Which nearest-neighbour structure a collection gets, from its size and a memory budget.

As autofaiss does: exact search below ``threshold`` rows; an IVF index with full float32 vectors
in its lists (IVF-Flat) while those fit the budget; above, IVF with product-quantised lists
(IVF-PQ: ``pq_m`` bytes a vector instead of ``4 * dim``; 32x smaller at dimension 512), whose
candidates are re-ranked with the stored full vectors so recall stays high: first ordered by finer
codes held in memory (``refine_m`` bytes a vector, :mod:`clipforge.index.refine`) where those fit
the budget beside the lists, so that only a few candidates a query need reading from disk. The
plan also bounds what a build holds at once: the k-means training sample and one batch of
streamed rows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 50_000
MIN_BUDGET = 64 * 2**20
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
ID_BYTES = 8  # faiss stores an int64 id beside every vector in an inverted list
PQ_MIN_TRAIN = 39 * 256  # PQ codebooks: 256 code words per sub-vector, 39 points each (faiss's minimum)


def parse_memory(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"2000000000"`` → bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"`memory_budget={text}` is not a size: write it like 4G, 512M or 1.5GiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < MIN_BUDGET:
        raise ValueError(f"`memory_budget={text}` is below the smallest workable budget, 64M")
    return value


def default_memory_budget() -> int:
    """Half of this machine's physical memory (4 GiB where it cannot be read), at least 64 MiB."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return max(MIN_BUDGET, total // 2)


def pq_bytes(dim: int) -> int:
    """Bytes a vector of IVF-PQ codes takes: the largest divisor of ``dim`` that is at most
    ``dim / 8`` (8-bit codes, one per sub-vector of at least 8 dimensions)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def refine_bytes(dim: int, room_per_vector: float, coarse_m: int) -> int:
    """Bytes of refinement codes a vector gets: the largest divisor of ``dim`` that is at most
    ``dim / 2`` (sub-vectors of two dimensions or more) and ``room_per_vector``, and at least
    four times the coarse codes' ``coarse_m`` (finer codes that are not much finer order nothing:
    at dimension 512, 128 bytes re-rank to recall 0.83 where 256 bytes reach 0.96); 0 if none."""
    fitting = [m for m in range(1, dim // 2 + 1) if dim % m == 0 and m <= room_per_vector]
    best = max(fitting, default=0)
    return best if best >= 4 * coarse_m else 0


@dataclass(frozen=True)
class IndexPlan:
    kind: str  # "exact", "ivf-flat" or "ivf-pq"
    count: int
    dim: int
    memory_budget: int
    nlist: int = 1
    pq_m: int = 0  # bytes per vector of PQ codes (ivf-pq only)
    refine_m: int = 0  # bytes per vector of the finer codes that order PQ candidates (0: none)
    train_rows: int = 0  # k-means (and PQ) training sample
    batch_rows: int = 0  # rows streamed from the store at a time

    @property
    def list_bytes(self) -> int:
        """Memory the inverted lists take once filled."""
        per_vector = self.pq_m if self.kind == "ivf-pq" else 4 * self.dim
        return self.count * (per_vector + ID_BYTES)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def ivf_nlist(n: int) -> int:
    """Number of inverted lists for ``n`` vectors: the power of two nearest ``4 * sqrt(n)``, with at
    least 39 training points per list (faiss's own minimum)."""
    if n < 39:
        return 1
    target = 4.0 * math.sqrt(n)
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return max(1, min(nlist, 65536))


def plan_index(
    count: int, dim: int, *, threshold: int = DEFAULT_THRESHOLD, memory_budget: int | None = None
) -> IndexPlan:
    """The structure for ``count`` vectors of dimension ``dim`` within ``memory_budget`` bytes
    (default: :func:`default_memory_budget`)."""
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    if count < threshold:
        return IndexPlan("exact", count, dim, budget)
    row = 4 * dim
    batch_rows = int(min(262_144, max(1024, budget // 16 // row)))  # a batch: ≤ 1/16 of the budget
    nlist = ivf_nlist(count)
    train_cap = max(39, budget // 8 // row)  # the training sample: ≤ 1/8 of the budget
    while nlist > 1 and 39 * nlist > train_cap:
        nlist //= 2
    train_rows = int(min(count, 64 * nlist, train_cap))
    fixed = (batch_rows + train_rows) * row + nlist * row  # batch, sample, centroids
    flat = IndexPlan("ivf-flat", count, dim, budget, nlist, train_rows=train_rows, batch_rows=batch_rows)
    if flat.list_bytes + fixed <= budget:
        return flat
    if count < 4 * 256:  # too few to train PQ codebooks: the full vectors are small anyway
        return flat
    pq_train = int(min(count, max(train_rows, PQ_MIN_TRAIN)))  # a smaller sample cannot train PQ
    pq_nlist = ivf_nlist(count)
    while pq_nlist > 1 and 39 * pq_nlist > pq_train:
        pq_nlist //= 2
    pq_train = int(min(pq_train, max(64 * pq_nlist, PQ_MIN_TRAIN)))
    pq = IndexPlan("ivf-pq", count, dim, budget, pq_nlist, pq_bytes(dim), train_rows=pq_train, batch_rows=batch_rows)
    # the finer codes live in memory beside the (memory-mapped) lists, an eighth of the budget spare
    room = (budget - budget // 8 - pq.list_bytes) / count
    pq = dataclasses.replace(pq, refine_m=refine_bytes(dim, room, pq.pq_m))
    if pq.list_bytes + fixed > budget:
        log.warning(
            "%d vectors need %.0f MiB as PQ codes, over the memory budget of %.0f MiB: the lists are "
            "memory-mapped from disk, so searches page them in",
            count,
            pq.list_bytes / 2**20,
            budget / 2**20,
        )
    return pq
