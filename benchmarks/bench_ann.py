"""ANN benchmark: faiss IVF (as built by clipforge.index) against exact search.

Data: ``--n`` unit vectors of ``--dim`` dimensions drawn around a two-level hierarchy of centres
(topics → sub-topics → points), a stand-in for CLIP image embeddings, which are clustered, not
uniform. Two query sets, both measured against exact search over the same vectors:

* ``near``: fresh points from the data distribution (image → image queries);
* ``far``: stored vectors pushed to cosine ≈ 0.3 from their source by noise (like text → image
  queries, which sit far from every image embedding).

Reports build time (k-means training, adding, nprobe calibration), recall@10 and single-query
latency (p50/p99, one query per call as a server issues them) at the calibrated nprobe and a sweep,
with exact search's latency beside it. Prints a markdown table.

    python benchmarks/bench_ann.py --n 1000000 --dim 512 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from clipforge.index.ann import ExactIndex, IvfIndex, _exact_topk_ids, recall_at_k  # noqa: E402


def make_data(
    n: int, dim: int, *, topics: int, subtopics: int, sub_spread: float, spread: float, seed: int
) -> tuple[np.ndarray, Callable]:
    """(N, dim) unit vectors: point = sub-topic + spread * noise, sub-topic = topic + sub_spread * noise."""
    rng = np.random.default_rng(seed)
    topic_c = rng.standard_normal((topics, dim)).astype(np.float32)
    sub_c = topic_c[rng.integers(0, topics, subtopics)]
    sub_c += sub_spread * rng.standard_normal((subtopics, dim)).astype(np.float32)

    def sample(m: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for start in range(0, m, 100_000):  # bounded temporaries
            stop = min(m, start + 100_000)
            x = sub_c[rng.integers(0, subtopics, stop - start)]
            x = x + spread * rng.standard_normal((stop - start, dim)).astype(np.float32)
            out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return sample(n, rng), sample


def far_queries(vectors: np.ndarray, m: int, *, cos: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    src = vectors[rng.choice(len(vectors), m, replace=False)]
    noise = rng.standard_normal(src.shape).astype(np.float32)
    noise -= (noise * src).sum(1, keepdims=True) * src  # orthogonal to the source
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = cos * src + np.sqrt(1 - cos**2) * noise
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def latencies(fn, queries: np.ndarray) -> np.ndarray:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1000.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--exact-latency-queries", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--topics", type=int, default=300)
    p.add_argument("--subtopics", type=int, default=20_000)
    p.add_argument("--sub-spread", type=float, default=0.7, help="sub-topic spread around its topic")
    p.add_argument("--spread", type=float, default=1.0, help="point spread around its sub-topic")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    t0 = time.perf_counter()
    vectors, sample = make_data(
        args.n,
        args.dim,
        topics=args.topics,
        subtopics=args.subtopics,
        sub_spread=args.sub_spread,
        spread=args.spread,
        seed=args.seed,
    )
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    print(
        f"data: {args.n} x {args.dim} float32 ({vectors.nbytes / 2**30:.2f} GiB) in "
        f"{time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    query_sets = {
        "near (image-like)": sample(args.queries, np.random.default_rng(args.seed + 1)),
        "far (text-like, cos 0.3)": far_queries(vectors, args.queries, cos=0.3, seed=args.seed + 2),
    }

    t0 = time.perf_counter()
    ivf = IvfIndex.build(ids, vectors, progress=True)
    build_s = time.perf_counter() - t0
    info = ivf.info
    print(
        f"built: nlist={ivf.nlist} nprobe={ivf.nprobe} train {info['train_seconds']:.1f} s, "
        f"add {info['add_seconds']:.1f} s, total {build_s:.1f} s",
        file=sys.stderr,
    )

    truth = {}
    for name, q in query_sets.items():
        t0 = time.perf_counter()
        truth[name] = ids[_exact_topk_ids(vectors, q, 10)]
        print(
            f"exact top-10 for {len(q)} '{name}' queries (batched): {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )

    exact = ExactIndex(ids, vectors)
    exact_queries = query_sets["near (image-like)"][: args.exact_latency_queries]
    exact_ms = latencies(lambda q: exact.search(q, 10), exact_queries)

    rows = []
    for nprobe in sorted({max(1, ivf.nprobe // 4), max(1, ivf.nprobe // 2), ivf.nprobe, ivf.nprobe * 2}):
        for name, q in query_sets.items():
            _, found = ivf.search(q, 10, nprobe=nprobe)
            ms = latencies(lambda x, n=nprobe: ivf.search(x, 10, nprobe=n), q)
            recall = recall_at_k(found, truth[name])
            rows.append((nprobe, name, recall, np.percentile(ms, 50), np.percentile(ms, 99)))

    print(
        f"\n### ANN search, {args.n:,} x {args.dim} vectors, {args.threads} threads "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible)\n"
    )
    print(
        f"IVF-Flat (inner product): nlist = {ivf.nlist}, calibrated nprobe = {ivf.nprobe}; "
        f"k-means training {info['train_seconds']:.1f} s, adding {info['add_seconds']:.1f} s, "
        f"build total incl. calibration {build_s:.1f} s.\n"
    )
    print("| search | nprobe | queries | recall@10 | p50 ms | p99 ms | p50 speed-up vs exact |")
    print("|---|---:|---|---:|---:|---:|---:|")
    ex50, ex99 = np.percentile(exact_ms, 50), np.percentile(exact_ms, 99)
    print(f"| exact (matrix product) | – | near | 1.000 | {ex50:.1f} | {ex99:.1f} | 1.0× |")
    for nprobe, name, recall, p50, p99 in rows:
        mark = " **(calibrated)**" if nprobe == ivf.nprobe else ""
        print(f"| IVF{mark} | {nprobe} | {name} | {recall:.3f} | {p50:.2f} | {p99:.2f} | {ex50 / p50:.0f}× |")
    nn = np.sort(query_sets["near (image-like)"][:200] @ vectors.T, axis=1)[:, -10:]  # (200, 10)
    print(
        f"\nneighbourhoods: mean cosine of a near query to its 1st / 10th neighbour "
        f"{nn[:, -1].mean():.2f} / {nn[:, 0].mean():.2f}."
    )
    print(f"calibration (recall@10 on its own perturbed queries, by nprobe): {info['calibration']}")


if __name__ == "__main__":
    main()
