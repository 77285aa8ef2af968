"""clipforge index FOLDER --model CKPT: build or update a searchable image index.

Embed every image under FOLDER into an SQLite index file (--db), or into a Qdrant collection
(--store qdrant://HOST:PORT/COLLECTION, or qdrant+local:FOLDER for the embedded engine). Re-running
only embeds new or changed files, drops deleted ones and keeps renamed ones. Safe to interrupt: the next run resumes.
"""

from __future__ import annotations

import argparse
import json

from ._apps import add_backend_arg, add_device_arg, add_model_arg, add_precision_arg
from ._stores import add_store_args, open_store_from_args, store_spec

HELP = "index an image folder for semantic search (incremental)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", help="image folder (optional with --from-embeddings)")
    add_model_arg(p, required=False)
    add_store_args(p)
    p.add_argument("--rebuild", action="store_true", help="drop the index and re-embed everything")
    p.add_argument("--report", action="store_true", help="list skipped (undecodable) files and links not followed")
    p.add_argument("--from-embeddings", metavar="DIR", help="merge shards written by `clipforge embed`")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes (default: up to 4)")
    add_device_arg(p)
    add_precision_arg(p)
    add_backend_arg(p)
    p.add_argument(
        "--exact-preprocess",
        action="store_true",
        help="decode every image at full size (the reference preprocessing, bit for bit); by default large "
        "JPEGs are decoded at reduced size, still at least twice the model input (about 4x faster)",
    )
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored embedding type")
    p.add_argument(
        "--ann-threshold",
        type=int,
        default=None,
        help="use a faiss ANN index from this many images on (default: 50000; remembered)",
    )
    p.add_argument(
        "--memory-budget",
        default=None,
        help="memory the ANN index may use, e.g. 4G: IVF-Flat while the vectors fit, compressed IVF-PQ beyond "
        "(default: half of this machine's memory; remembered)",
    )
    p.add_argument("--include-hidden", action="store_true", help="also index files and folders starting with '.'")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..index import Encoder, index_folder, open_vector_index
    from ..index.plan import parse_memory
    from ..index.shards import merge_shards

    if args.from_embeddings is None and (args.folder is None or args.model is None):
        raise ValueError("give FOLDER and --model (or --from-embeddings DIR)")
    budget = None if args.memory_budget is None else parse_memory(args.memory_budget)  # bad: fail before work
    progress = not args.no_progress
    out: dict = {"db": store_spec(args)}
    with open_store_from_args(args, create=True) as store:
        if args.from_embeddings:
            model_id = None
            if args.model:
                model_id = Encoder.load(
                    args.model, device=args.device, precision=args.precision, progress=progress
                ).model_id
            merged = merge_shards(store, args.from_embeddings, model_id=model_id, rebuild=args.rebuild)
            out["merged"] = {
                "parts": merged.parts,
                "added": merged.added,
                "unchanged": merged.unchanged,
                "skipped": len(merged.skipped),
            }
            _say(
                args,
                f"merged {merged.parts} shard parts: {merged.added} added, {merged.unchanged} unchanged, "
                f"{len(merged.skipped)} skipped",
            )
        if args.folder is not None and args.model is not None:
            encoder = Encoder.load(
                args.model, device=args.device, precision=args.precision, progress=progress, backend=args.backend
            )
            report = index_folder(
                args.folder,
                store,
                encoder,
                rebuild=args.rebuild and not args.from_embeddings,
                dtype=args.dtype,
                batch_size=args.batch_size,
                num_workers=args.workers,
                include_hidden=args.include_hidden,
                exact_preprocess=args.exact_preprocess,
                progress=progress,
            )
            out["index"] = {k: v for k, v in vars(report).items() if k not in ("skipped",)}
            _say(args, report.summary())
            if args.report:
                out["outside_links"] = report.outside_links
                _say(
                    args,
                    *(f"  link not followed (points outside the folder): {p}" for p in report.outside_links),
                )
                _say(args, *(f"  unreadable: {p}" for p in report.unreadable))
        skipped = list(store.skipped().values())
        out["skipped"] = [{"path": s.path, "reason": s.reason} for s in skipped]
        if args.report:
            _say(args, f"{len(skipped)} skipped file(s):", *(f"  {s.path}: {s.reason}" for s in skipped))
        if args.ann_threshold is not None:  # remembered: searches use it too
            store.set_meta("ann_threshold", str(args.ann_threshold))
        if budget is not None:  # remembered: searches that rebuild use it too
            store.set_meta("memory_budget", str(budget))
        vectors, fp = open_vector_index(store, progress=progress)  # build the ANN index now, not at search
        out["search"] = {"kind": vectors.kind, "count": fp.count}
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    return 0


def _say(args: argparse.Namespace, *lines: str) -> None:
    if not args.json:
        for line in lines:
            print(line)
