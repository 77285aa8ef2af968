"""clipforge embed FOLDER --model CKPT --out DIR: embed a folder into shards (scale-out).

Writes part-w<W>-r<R>-<J>.npy (embeddings) + .json (paths, sizes, mtimes, hashes) to --out. Parts
already written for the same model and files are skipped, so a killed job resumes.

Under torchrun --nproc-per-node N [--nnodes M ...] -m clipforge embed ... every process takes
its share of the files (by RANK / WORLD_SIZE; no communication between processes, the
folder must be visible to all of them) and writes its own shard parts; `clipforge index
--from-embeddings DIR --db ...` merges them into an index.
"""

from __future__ import annotations

import argparse
import os

from ._apps import add_backend_arg, add_device_arg, add_model_arg, add_precision_arg

HELP = "embed an image folder into shard files (one slice per torchrun process)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="image folder")
    add_model_arg(p)
    p.add_argument("--out", required=True, help="output directory for shard parts")
    p.add_argument("--part-size", type=int, default=50_000, help="images per part file")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes per rank")
    add_device_arg(p)
    add_precision_arg(p)
    add_backend_arg(p)
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..index import Encoder
    from ..index.shards import embed_shards

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    encoder = Encoder.load(
        args.model, device=args.device, precision=args.precision, progress=not args.no_progress, backend=args.backend
    )
    parts = embed_shards(
        args.folder,
        encoder,
        args.out,
        rank=rank,
        world_size=world,
        part_size=args.part_size,
        dtype=args.dtype,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.no_progress and rank == 0,
    )
    print(f"rank {rank}/{world}: {len(parts)} part(s) in {args.out}")
    return 0
