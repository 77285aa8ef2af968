"""``clipforge search "a dog on a beach" --db photos.cfidx``: query an image index."""

from __future__ import annotations

import argparse
import json

from ._apps import MODEL_HELP, add_backend_arg
from .cmd_index import DEFAULT_DB


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an image index by text, by image, or both",
        description="Top-k images of an index (built by `clipforge index`) for a text query, a query image "
        "(--image), or both blended (--image-weight).",
    )
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--db", default=DEFAULT_DB, help=f"index database (default: {DEFAULT_DB})")
    p.add_argument("--image", help="query image (image -> image search; with a text query: combined)")
    p.add_argument("--image-weight", type=float, default=0.5, help="weight of the image in a combined query")
    p.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    p.add_argument("--model", help=MODEL_HELP + " (default: the one the index was built with)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32")
    add_backend_arg(p)
    p.add_argument("--nprobe", type=int, default=None, help="ANN lists to probe (default: calibrated)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--html", metavar="OUT", help="also write a thumbnail gallery to this HTML file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..index import Encoder, ImageIndex, IndexStore
    from ..index.gallery import render_gallery

    if not args.query and not args.image:
        raise ValueError("give a text query, --image, or both")
    store = IndexStore(args.db)
    model = args.model or store.get_meta("model_path")
    if not model:
        raise ValueError(f"{args.db} does not record its model's path: pass --model CKPT")
    encoder = Encoder.load(model, device=args.device, precision=args.precision, backend=args.backend)
    index = ImageIndex(store, encoder=encoder, nprobe=args.nprobe)
    hits = index.search(text=args.query, image=args.image, k=args.k, image_weight=args.image_weight)
    root = index.root
    if args.json:
        print(json.dumps([{**h.to_dict(), "file": str(root / h.path)} for h in hits], indent=2))
    else:
        print(f"{'rank':>4}  {'score':>7}  path")
        for rank, h in enumerate(hits, 1):
            print(f"{rank:>4}  {h.score:>7.4f}  {root / h.path}")
    if args.html:
        title = " + ".join(
            x for x in (args.query and f'"{args.query}"', args.image and f"image {args.image}") if x
        )
        Path(args.html).write_text(render_gallery(hits, root, title=f"clipforge search: {title}"))
        if not args.json:
            print(f"gallery written to {args.html}")
    store.close()
    return 0
