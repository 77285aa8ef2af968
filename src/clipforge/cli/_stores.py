"""The flags that say where an index lives (``--db`` / ``--store`` and the Qdrant settings), shared by
``index``, ``search`` and ``serve``."""

from __future__ import annotations

import argparse
import os

DEFAULT_DB = "clipforge.cfidx"
STORE_HELP = (
    "where the index lives, instead of --db: an index file, qdrant://HOST:PORT/COLLECTION (a Qdrant server "
    "or cluster), qdrants://HOST:PORT/COLLECTION (the same over TLS) or qdrant+local:FOLDER (Qdrant's embedded "
    "engine, one process at a time)"
)


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, help=f"index database file (default: {DEFAULT_DB})")
    p.add_argument("--store", metavar="URL", default=None, help=STORE_HELP)
    p.add_argument(
        "--qdrant-api-key", default=None, help="API key of a Qdrant server (default: $QDRANT_API_KEY)"
    )
    p.add_argument(
        "--qdrant-timeout",
        type=float,
        default=10.0,
        help="seconds a request to a Qdrant server may take before it counts as unreachable (default: 10)",
    )


def store_spec(args: argparse.Namespace) -> str:
    """The store the flags name: ``--store``, else ``--db``, else the default file."""
    if args.store and args.db:
        raise ValueError("give --db FILE or --store URL, not both")
    return args.store or args.db or DEFAULT_DB


def open_store_from_args(args: argparse.Namespace, *, create: bool = False):
    """Open the store of ``store_spec(args)`` with the Qdrant settings of the flags (the API key
    from ``$QDRANT_API_KEY`` when no flag gives one; only for a Qdrant store)."""
    from ..index.stores import API_KEY_ENV, open_store, parse_store

    spec = store_spec(args)
    key = args.qdrant_api_key
    if key is None and parse_store(spec).kind == "qdrant":
        key = os.environ.get(API_KEY_ENV) or None
    return open_store(spec, create=create, qdrant_api_key=key, timeout=args.qdrant_timeout)
