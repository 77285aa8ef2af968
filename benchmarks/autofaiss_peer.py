"""The autofaiss side of ``bench_ann_scale.py``: build an index with autofaiss (clip-retrieval's index
builder) under a memory budget, then search it one query at a time.

Runs in its own environment (autofaiss needs numpy < 2 and its own faiss-cpu), started by
``bench_ann_scale.py --autofaiss-python PYTHON``; one phase per process, so that each phase's peak
RSS is its own. Prints one JSON line.

    PYTHON autofaiss_peer.py build --vectors DIR --index DIR --memory-budget 4G --threads 2
    PYTHON autofaiss_peer.py search --index DIR --truth truth.npz --ids ids.npy --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    return float("nan")


def needs(args: argparse.Namespace) -> dict:
    """autofaiss's own estimate of the memory its build needs (the check it refuses by) and the
    index it would build, for the vectors in ``args.vectors`` under ``args.memory_budget``."""
    from autofaiss.external.quantize import estimate_memory_required_for_index_creation

    parts = [np.load(p, mmap_mode="r") for p in sorted(args.vectors.glob("*.npy"))]  # headers only
    count, dim = sum(len(p) for p in parts), parts[0].shape[1]
    needed, key = estimate_memory_required_for_index_creation(count, dim, None, args.memory_budget, False, 1)
    return {"index_key": key, "build_memory_needed_mib": round(needed / 2**20)}


def build(args: argparse.Namespace) -> dict:
    from autofaiss import build_index

    args.index.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    index, _ = build_index(
        embeddings=str(args.vectors),
        index_path=str(args.index / "knn.index"),
        index_infos_path=str(args.index / "infos.json"),
        max_index_memory_usage=args.memory_budget,
        current_memory_available=args.build_memory or args.memory_budget,
        metric_type="ip",
        nb_cores=args.threads,
        should_be_memory_mappable=True,
        verbose=logging.INFO,  # its phase timings, on stderr
    )
    if index is None:  # autofaiss logged why (typically: the budget is below what it needs to build)
        return {"refused": True, "build_s": round(time.perf_counter() - t0, 1), **needs(args)}
    infos = json.loads((args.index / "infos.json").read_text())
    return {
        "build_s": round(time.perf_counter() - t0, 1),
        "index_key": infos.get("index_key"),
        "index_param": infos.get("index_param"),
        "index_mib": round((args.index / "knn.index").stat().st_size / 2**20, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def search(args: argparse.Namespace) -> dict:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    infos = json.loads((args.index / "infos.json").read_text())
    t0 = time.perf_counter()
    index = faiss.read_index(str(args.index / "knn.index"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    if infos.get("index_param"):
        faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])  # autofaiss's tuned search
    open_s = time.perf_counter() - t0
    data = np.load(args.truth)
    queries, truth = data["queries"], data["truth"]  # (Q, E), (Q, 10) store ids
    ids = np.load(args.ids, mmap_mode="r")  # (N,) store id of each row autofaiss read
    rss_before = peak_rss_mib()
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, rows = index.search(q[None], 10)  # (1, 10) row numbers
        times.append((time.perf_counter() - t) * 1000.0)
        found.append(np.asarray(ids[rows[0]]))
    ms = np.array(times)
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return {
        "open_s": round(open_s, 2),
        "recall@10": round(float(np.mean(hits)) / 10, 4),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_mib_before_queries": round(rss_before, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=("build", "search"))
    p.add_argument("--vectors", type=Path, help="folder of .npy float32 vector files (build)")
    p.add_argument("--index", type=Path, required=True, help="folder for the index and its infos")
    p.add_argument("--memory-budget", default="4G", help="autofaiss's max_index_memory_usage")
    p.add_argument("--build-memory", default=None,
                   help="autofaiss's current_memory_available (default: --memory-budget)")  # fmt: skip
    p.add_argument("--truth", type=Path, help="npz with queries (Q, E) and truth (Q, 10) store ids (search)")
    p.add_argument("--ids", type=Path, help="npy (N,) store id of each vector row, in file order (search)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    print(json.dumps(build(args) if args.phase == "build" else search(args)))


if __name__ == "__main__":
    main()
