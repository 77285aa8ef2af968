"""Search at scale on one machine: the index `clipforge index` builds for a store under a memory budget.

Fills an index database with ``--n`` synthetic unit vectors of ``--dim`` dimensions, clustered
like CLIP image embeddings (two-level hierarchy: topics → sub-topics → points, the generator of
``bench_ann.py``), generated and inserted in bounded chunks. Then, each in a fresh process so that
its peak RSS is its own:

* **build**: ``open_vector_index(store, memory_budget=...)`` (the plan's kind — IVF-Flat or
  IVF-PQ — streamed from the store): build time, peak RSS, index size on disk;
* **search**: the saved index opened as ``clipforge search`` opens it (IVF-PQ lists memory-mapped,
  candidates ordered by the finer codes in memory, the best re-ranked with the stored vectors),
  ``--queries`` text-like queries (stored vectors pushed to cosine 0.3 from their source), one
  query per call: recall@10 against exact search (computed by
  streaming over the store in chunks, once, saved beside the database), p50/p99 latency, peak RSS;
* with ``--autofaiss-python PY`` (a Python where ``pip install autofaiss`` worked: it needs numpy < 2),
  the same vectors exported as .npy parts, indexed by autofaiss (clip-retrieval's builder) under the
  same memory budget and searched, memory-mapped, with its tuned parameters (``autofaiss_peer.py``):
  the same columns, side by side (autofaiss does not re-rank).

    python benchmarks/bench_ann_scale.py --n 1000000 --dim 512 --memory-budget 1G --threads 2 \
        --db /tmp/scale.cfidx --autofaiss-python /work/venv-autofaiss/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_ann import make_data  # noqa: E402

from clipforge.index import IndexStore, open_vector_index  # noqa: E402
from clipforge.index.ann import ann_paths, recall_at_k  # noqa: E402
from clipforge.index.plan import parse_memory  # noqa: E402
from clipforge.index.recall import exact_topk_stream, perturbed_queries  # noqa: E402
from clipforge.index.relevance import sample_embeddings  # noqa: E402
from clipforge.index.store import NewRow  # noqa: E402


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fill(db: Path, args: argparse.Namespace) -> None:
    store = IndexStore(db, create=True)
    store.bind(model_id="synthetic", embed_dim=args.dim, root=db.parent)
    _, sample = make_data(1, args.dim, topics=args.topics, subtopics=args.subtopics, sub_spread=0.7, spread=1.0,
                          seed=args.seed)  # fmt: skip
    rng = np.random.default_rng(args.seed + 100)
    for start in range(0, args.n, 50_000):
        vectors = sample(min(50_000, args.n - start), rng)  # (B, dim)
        with store.transaction() as c:
            store.insert(c, (NewRow(f"v{start + i}", 1, 1, f"h{start + i}", v) for i, v in enumerate(vectors)))
    store.close()


def phase_build(db: Path, budget: int, threshold: int) -> dict:
    t0 = time.perf_counter()
    with IndexStore(db) as store:
        ivf, fp = open_vector_index(store, memory_budget=budget, threshold=threshold, rebuild=True)
    paths = ann_paths(db)
    return {
        "kind": f"ivf-{ivf.variant}",
        "count": fp.count,
        "nlist": ivf.nlist,
        "nprobe": ivf.nprobe,
        "candidates": ivf.candidates,
        "refine_m": ivf.refine.m if ivf.refine is not None else 0,
        "calibration": ivf.info.get("calibration"),
        "plan": ivf.info.get("plan"),
        "build_s": round(time.perf_counter() - t0, 1),
        "train_s": ivf.info.get("train_seconds"),
        "add_s": ivf.info.get("add_seconds"),
        "index_mib": round(sum(p.stat().st_size for p in (paths.index, paths.refine) if p.exists()) / 2**20, 1),
        "refine_mib": round(paths.refine.stat().st_size / 2**20, 1) if paths.refine.exists() else 0.0,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def phase_truth(db: Path, n_queries: int, batch_rows: int) -> dict:
    """Text-like queries and their exact top 10 (streamed over the store in chunks), saved beside the
    database for every peer's search phase."""
    with IndexStore(db) as store:
        t0 = time.perf_counter()
        queries = perturbed_queries(sample_embeddings(store, size=4 * n_queries, seed=7), n_queries, seed=7)
        truth = exact_topk_stream(
            ((ids, v) for _, ids, v in store.embedding_batches(batch_rows=batch_rows)), queries, 10
        )  # (Q, 10)
    np.savez(truth_path(db), queries=queries, truth=truth)
    return {"truth_s": round(time.perf_counter() - t0, 1), "queries": n_queries}


def truth_path(db: Path) -> Path:
    return db.with_name(db.name + ".truth.npz")


def phase_search(db: Path, budget: int, threshold: int) -> dict:
    data = np.load(truth_path(db))
    queries, truth = data["queries"], data["truth"]  # (Q, E), (Q, 10)
    with IndexStore(db) as store:
        t0 = time.perf_counter()
        ivf, _ = open_vector_index(store, memory_budget=budget, threshold=threshold)
        open_s = time.perf_counter() - t0
        rss_before = peak_rss_mib()
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, ids = ivf.search(q[None], 10)
            times.append((time.perf_counter() - t) * 1000.0)
            found.append(ids[0])
        ms = np.array(times)
        return {
            "kind": f"ivf-{ivf.variant}",
            "open_s": round(open_s, 2),
            "queries": len(queries),
            "recall@10": round(recall_at_k(np.array(found), truth), 4),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "peak_rss_mib_before_queries": round(rss_before, 1),
        }


def export_vectors(db: Path, folder: Path, batch_rows: int = 1_000_000) -> Path:
    """The store's vectors as .npy files of at most ``batch_rows`` rows (autofaiss's input), and
    ``ids.npy``, the store id of each row in file order, beside the folder. Streams; reuses a
    complete export."""
    ids_path = folder.with_name(folder.name + ".ids.npy")
    if ids_path.exists():
        return ids_path
    folder.mkdir(parents=True, exist_ok=True)
    all_ids = []
    with IndexStore(db) as store:
        for n, (_, ids, vectors) in enumerate(store.embedding_batches(batch_rows=batch_rows)):
            np.save(folder / f"part-{n:05d}.npy", vectors)  # (B, E) float32
            all_ids.append(ids)
    np.save(ids_path, np.concatenate(all_ids))  # written last: its presence marks a complete export
    return ids_path
def run_phase(args: argparse.Namespace, phase: str, db: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--db", str(db), "--memory-budget", args.memory_budget,
           "--queries", str(args.queries), "--threads", str(args.threads),
           "--threshold", str(args.threshold)]  # fmt: skip
    return _json_of(cmd)


def run_autofaiss(args: argparse.Namespace, db: Path) -> tuple[dict, dict | None]:
    """autofaiss's build and search phases (each a process of ``--autofaiss-python``) on the same vectors;
    no search where autofaiss refused to build under the budget."""
    peer = str(Path(__file__).with_name("autofaiss_peer.py"))
    vectors = db.with_name(db.name + ".npy-parts")
    t0 = time.perf_counter()
    ids = export_vectors(db, vectors)
    print(f"exported vectors for autofaiss in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    index = db.with_name(db.name + ".autofaiss")
    common = ["--index", str(index), "--threads", str(args.threads)]
    memory = ["--build-memory", args.autofaiss_build_memory] if args.autofaiss_build_memory else []
    build = _json_of([args.autofaiss_python, peer, "build", "--vectors", str(vectors),
                      "--memory-budget", args.memory_budget, *memory, *common])  # fmt: skip
    if build.get("refused"):  # its memory check failed: nothing to search
        return build, None
    search = _json_of([args.autofaiss_python, peer, "search", "--truth", str(truth_path(db)), "--ids", str(ids),
                       *common])  # fmt: skip
    return build, search


def _json_of(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--memory-budget", default="4G")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--threshold", type=int, default=50_000, help="exact search below this many vectors")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--topics", type=int, default=300)
    p.add_argument("--subtopics", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", type=Path, default=None, help="reuse (or keep) this database")
    p.add_argument("--autofaiss-python", default=None,
                   help="a Python with autofaiss installed: also build and search autofaiss's index")  # fmt: skip
    p.add_argument("--autofaiss-build-memory", default=None,
                   help="autofaiss's current_memory_available (default: --memory-budget, which it refuses: "
                        "it keeps a tenth spare beyond the index)")  # fmt: skip
    p.add_argument("--phase", choices=("build", "truth", "search"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import faiss

    faiss.omp_set_num_threads(args.threads)
    budget = parse_memory(args.memory_budget)
    if args.phase == "build":
        print(json.dumps(phase_build(args.db, budget, args.threshold)))
        return
    if args.phase == "truth":
        print(json.dumps(phase_truth(args.db, args.queries, batch_rows=65_536)))
        return
    if args.phase == "search":
        print(json.dumps(phase_search(args.db, budget, args.threshold)))
        return

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory()
        args.db = Path(tmp.name) / "scale.cfidx"
    if not args.db.exists():
        t0 = time.perf_counter()
        fill(args.db, args)
        print(f"filled {args.db} with {args.n} x {args.dim} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    build = run_phase(args, "build", args.db)
    if not truth_path(args.db).exists():
        run_phase(args, "truth", args.db)
    search = run_phase(args, "search", args.db)
    refined = f", {build['refine_m']}-byte finer codes" if build["refine_m"] else ""
    rows = [(f"clipforge {build['kind']} nlist {build['nlist']} nprobe {build['nprobe']}, {build['candidates']} "
             f"candidates{refined}, re-ranked",
             f"{build['build_s']} ({build['train_s']} / {build['add_s']})", build, search)]  # fmt: skip
    refused = None
    if args.autofaiss_python:
        try:
            af_build, af_search = run_autofaiss(args, args.db)
        except subprocess.CalledProcessError as e:  # autofaiss said why on stderr (e.g. the budget is too small)
            print(f"autofaiss: no result ({e.cmd[2]} phase exited {e.returncode}); clipforge only", file=sys.stderr)
        else:
            if af_build.get("refused"):
                refused = (f"autofaiss `{af_build['index_key']}`: **builds nothing** under --memory-budget "
                           f"{args.memory_budget} (needs {af_build['build_memory_needed_mib']:,} MiB to build, "
                           "its own estimate)")  # fmt: skip
            else:
                rows.append((f"autofaiss `{af_build['index_key']}` ({af_build['index_param']})",
                             f"{af_build['build_s']}", af_build, af_search))  # fmt: skip
    vectors_mib = args.n * args.dim * 4 / 2**20
    print(f"### {args.n:,} x {args.dim} vectors, memory budget {args.memory_budget}, {args.threads} threads\n")
    print(f"float32 vectors: {vectors_mib:,.0f} MiB; clipforge's plan: {build['plan']}\n")
    print("| index | build s | peak RSS build MiB | index on disk MiB | recall@10 (text-like) "
          "| p50 ms | p99 ms | peak RSS search MiB (before queries) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, build_s, b, q in rows:
        print(f"| {name} | {build_s} | {b['peak_rss_mib']} | {b['index_mib']} | {q['recall@10']} | {q['p50_ms']} | "
              f"{q['p99_ms']} | {q['peak_rss_mib']} ({q['peak_rss_mib_before_queries']}) |")  # fmt: skip
    if refused:
        print(f"\n{refused}")
    print("\n" + json.dumps({"build": build, "search": search, "peers": rows[1:]}, default=str), file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
