"""Bounded load test of `clipforge serve` on loopback: N search requests at concurrency C.

A server process (uvicorn, the real app) serves an index of ``--images`` random clustered
embeddings (above 50k the faiss IVF path is used) with a randomly initialised ``--model``
architecture (ViT-B-32 by default: the text tower's cost is that of real weights). This process
fires ``--requests`` text searches with distinct queries (no cache hits) from ``--concurrency``
concurrent connections, then a mixed run with image uploads, and reports errors, throughput and
latency percentiles as markdown. Everything stays on 127.0.0.1; the whole run is bounded by
``--time-limit`` seconds.

    python benchmarks/bench_serve_load.py --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

MODEL_ID = "bench:random-init"


class HashTokenizer:
    """Fallback when clipforge.tokenizer is unavailable: words hashed into the vocabulary."""

    def __init__(self, vocab_size: int, context_length: int) -> None:
        self.vocab_size, self.context_length = vocab_size, context_length

    def __call__(self, texts, context_length=None):
        import torch

        ctx = context_length or self.context_length
        out = torch.zeros(len(texts), ctx, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.vocab_size - 2] + [
                1 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in t.split()
            ]
            ids = ids[: ctx - 1] + [self.vocab_size - 1]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def build_encoder(model_name: str, precision: str = "fp32"):
    import torch

    from clipforge.api import image_transform
    from clipforge.index import Encoder
    from clipforge.models import create_model

    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    model = create_model(model_name, dtype=dtype).eval()
    try:
        from clipforge.tokenizer import get_tokenizer

        tokenizer, kind = (
            get_tokenizer("openai", context_length=model.config.text.context_length),
            "openai BPE",
        )
    except Exception:  # tokenizer module or vocabulary file not available
        tokenizer, kind = (
            HashTokenizer(model.config.text.vocab_size, model.config.text.context_length),
            "hash",
        )
    return Encoder(
        model, tokenizer, image_transform(model.config), model_id=MODEL_ID, model_name=model_name
    ), kind


def build_index(db: Path, n: int, dim: int, root: Path) -> None:
    from clipforge.index import IndexStore, open_vector_index
    from clipforge.index.store import NewRow

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    with IndexStore(db, create=True) as store:
        store.bind(model_id=MODEL_ID, embed_dim=dim, root=root)
        for start in range(0, n, 50_000):
            m = min(50_000, n - start)
            x = centres[rng.integers(0, 2000, m)] + rng.standard_normal((m, dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            rows = [NewRow(f"img{start + i:07d}.jpg", 1, 1, f"{start + i:064x}", v) for i, v in enumerate(x)]
            with store.transaction() as c:
                store.insert(c, rows)
        open_vector_index(store)  # build (and persist) the ANN index before the server starts


def serve(args) -> None:
    import torch
    import uvicorn

    from clipforge.index import ImageIndex
    from clipforge.serve import SearchService, create_app

    torch.set_num_threads(args.threads)
    encoder, kind = build_encoder(args.model, args.precision)
    service = SearchService(ImageIndex.open(args.db, encoder=encoder))
    print(f"server ready: {service.health()} tokenizer={kind}", flush=True)
    uvicorn.run(create_app(service), host="127.0.0.1", port=args.port, log_level="warning")


def queries(n: int) -> list[str]:
    colours = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown"]
    things = [
        "dog",
        "cat",
        "car",
        "bicycle",
        "house",
        "tree",
        "boat",
        "bird",
        "horse",
        "chair",
        "cup",
        "train",
    ]
    places = [
        "on a beach",
        "in a forest",
        "in the snow",
        "at night",
        "in a city",
        "on a table",
        "in a field",
        "near a lake",
        "under a bridge",
        "in the rain",
    ]
    combos = [f"a {c} {t} {p}" for c, t, p in itertools.product(colours, things, places)]  # 1200
    combos += [f"two {c} {t}s {p}" for c, t, p in itertools.product(colours, things, places)]
    rng = np.random.default_rng(1)
    return [combos[i] for i in rng.permutation(len(combos))[:n]]


def jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((40, 40, 1), dtype=np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)  # 320 x 320
    return out.getvalue()


async def load(base: str, jobs: list, concurrency: int, deadline: float) -> tuple[list[float], list[str]]:
    import httpx

    latencies, errors = [], []
    queue = list(reversed(jobs))
    async with httpx.AsyncClient(
        base_url=base, timeout=60, limits=httpx.Limits(max_connections=concurrency)
    ) as c:

        async def worker():
            while queue and time.monotonic() < deadline:
                method, url, kw = queue.pop()
                t0 = time.perf_counter()
                try:
                    r = await c.request(method, url, **kw)
                    if r.status_code != 200 or "hits" not in r.json():
                        errors.append(f"{r.status_code} {r.text[:100]}")
                except Exception as e:  # a failed request is an error to report, not a crash
                    errors.append(f"{type(e).__name__}: {e}")
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if queue:
        errors.append(f"time limit reached with {len(queue)} requests not sent")
    return latencies, errors


def report(name: str, lat: list[float], errors: list[str], seconds: float, sent: int) -> str:
    a = np.array(lat)
    return (
        f"| {name} | {sent} | {len(errors)} | {len(a) / seconds:.0f} | {np.percentile(a, 50):.0f} | "
        f"{np.percentile(a, 90):.0f} | {np.percentile(a, 99):.0f} | {a.max():.0f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--images", type=int, default=100_000, help="index size (random embeddings)")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="server model precision")
    p.add_argument("--time-limit", type=float, default=600.0)
    p.add_argument(
        "--mixed", type=int, default=400, help="requests in the mixed run (20%% image uploads); 0: skip"
    )
    p.add_argument("--_serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._serve:
        return serve(args)

    from clipforge.models import get_model_config

    start = time.monotonic()
    deadline = start + args.time_limit
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.cfidx"
        t0 = time.perf_counter()
        build_index(db, args.images, get_model_config(args.model).embed_dim, Path(tmp))
        print(f"index of {args.images} embeddings built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(args.threads)}
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--_serve",
                "--db",
                str(db),
                "--port",
                str(port),
                "--model",
                args.model,
                "--threads",
                str(args.threads),
                "--precision",
                args.precision,
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            ready = server.stdout.readline().strip()
            print(ready, file=sys.stderr)
            import httpx

            base = f"http://127.0.0.1:{port}"
            while True:
                try:
                    if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.1)
            rows = []
            qs = queries(args.requests)
            jobs = [("GET", "/api/search", {"params": {"q": q, "k": 20}}) for q in qs]
            t0 = time.perf_counter()
            lat, errors = asyncio.run(load(base, jobs, args.concurrency, deadline))
            rows.append(
                report("text search, distinct queries", lat, errors, time.perf_counter() - t0, len(jobs))
            )
            all_errors = errors
            if args.mixed:
                images = [jpeg(i) for i in range(20)]
                popular = qs[:50]
                jobs = []
                for i in range(args.mixed):
                    if i % 5 == 4:
                        jobs.append(
                            ("POST", "/api/search/image", {"params": {"k": 20}, "content": images[i % 20]})
                        )
                    else:
                        jobs.append(("GET", "/api/search", {"params": {"q": popular[i % 50], "k": 20}}))
                t0 = time.perf_counter()
                lat, errors = asyncio.run(load(base, jobs, args.concurrency, deadline))
                rows.append(
                    report(
                        "mixed: 80% repeated text, 20% 320px JPEG uploads",
                        lat,
                        errors,
                        time.perf_counter() - t0,
                        len(jobs),
                    )
                )
                all_errors = all_errors + errors
            health = httpx.get(f"{base}/api/health").json()
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"\n### Load test: `clipforge serve` on loopback, concurrency {args.concurrency}\n")
    print(
        f"Server: {args.model} {args.precision} (random init, {ready.split('tokenizer=')[-1]} tokenizer), "
        f"{args.threads} torch threads, index of {health['images']:,} embeddings "
        f"({health['search']} search); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared by client and server.\n"
    )
    print("| run | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    print(f"\nerrors: {len(all_errors)}" + (f" (first: {all_errors[:3]})" if all_errors else ""))
    print(f"total time {time.monotonic() - start:.0f} s (limit {args.time_limit:.0f} s)")
    if all_errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
