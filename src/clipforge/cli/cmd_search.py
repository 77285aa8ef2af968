"""clipforge search "a dog on a beach" --db photos.cfidx: query an image index.

Top-k images of an index (built by `clipforge index`) for a text query, a query image (--image), or
both blended (--image-weight).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..fileio import atomic_write_text
from ._apps import FROM_INDEX, add_backend_arg, add_device_arg, add_language_arg, add_model_arg, add_precision_arg
from ._stores import add_store_args, open_store_from_args

HELP = "search an image index by text, by image, or both"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="?", help="text query")
    add_store_args(p)
    p.add_argument("--image", help="query image (image -> image search; with a text query: combined)")
    p.add_argument("--image-weight", type=float, default=0.5, help="weight of the image in a combined query")
    add_language_arg(p, of="the text query")
    p.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    p.add_argument("--offset", type=int, default=0, help="skip this many of the best results (paging)")
    p.add_argument("--min-score", type=float, default=None, help="only results with at least this cosine")
    p.add_argument("--min-relevance", type=float, default=None,
                   help="only results with at least this relevance (0-1: the score calibrated per query)")
    p.add_argument("--folder", help="only this folder (relative to the indexed root) and those below it")
    p.add_argument("--taken-after", metavar="DATE", help="taken on or after: 2021, 2021-07, 2021-07-04, ...")
    p.add_argument("--taken-before", metavar="DATE", help="taken on or before (inclusive: 2021-07 includes July)")
    p.add_argument("--type", dest="types", help="file types, comma-separated: jpeg,png,heic,avif,webp,...")
    add_model_arg(p, required=False, default_says=FROM_INDEX)
    add_device_arg(p)
    add_precision_arg(p, default=None, default_says=FROM_INDEX)
    add_backend_arg(p, default=None, default_says=FROM_INDEX)
    p.add_argument("--nprobe", type=int, default=None, help="ANN lists to probe (default: calibrated)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--html", metavar="OUT", help="also write a thumbnail gallery to this HTML file")


def run(args: argparse.Namespace) -> int:
    from ..index import ImageIndex
    from ..index.gallery import render_gallery
    from ..index.store import PhotoFilter

    if not args.query and not args.image:
        raise ValueError("give a text query, --image, or both")
    try:
        where = PhotoFilter.make(
            folder=args.folder, taken_after=args.taken_after, taken_before=args.taken_before, types=args.types
        )
    except ValueError as e:  # name the flags, not the parameters
        raise ValueError(str(e).replace("taken_after", "--taken-after").replace("taken_before", "--taken-before")
                         .replace("folder must", "--folder must")) from None
    index = ImageIndex.load(
        open_store_from_args(args), model=args.model, device=args.device, precision=args.precision,
        backend=args.backend, nprobe=args.nprobe,
    )
    hits = index.search(
        text=args.query,
        image=args.image,
        k=args.k,
        image_weight=args.image_weight,
        offset=args.offset,
        where=where,
        min_score=args.min_score,
        min_relevance=args.min_relevance,
        language=args.language,
    )
    root = index.root
    if args.json:
        print(json.dumps([{**h.to_dict(), "file": str(root / h.path)} for h in hits], indent=2))
    else:
        print(f"{'rank':>4}  {'score':>7}  {'relev.':>6}  {'taken':<19}  path")
        for rank, h in enumerate(hits, args.offset + 1):
            taken = (h.info or {}).get("taken_at") or "?"
            relevance = "?" if h.relevance is None else f"{h.relevance:.3f}"
            print(f"{rank:>4}  {h.score:>7.4f}  {relevance:>6}  {taken:<19}  {root / h.path}")
        if not hits:
            unfiltered = where.is_empty() and args.min_score is None and args.min_relevance is None
            print("no results" + ("" if unfiltered else " (with these filters)"))
    if args.html:
        title = " + ".join(
            x for x in (args.query and f'"{args.query}"', args.image and f"image {args.image}") if x
        )
        atomic_write_text(Path(args.html), render_gallery(hits, root, title=f"clipforge search: {title}"))
        if not args.json:
            print(f"gallery written to {args.html}")
    index.store.close()
    return 0
