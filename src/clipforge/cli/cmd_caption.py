"""clipforge caption IMAGES --model CKPT --bank captions.txt: captioning by retrieval.

Ranks every caption of the bank (one per line) against each image.
"""

from __future__ import annotations

import argparse

from ._apps import add_model_args, emit_image_results, encode_found_images, find_images_and_load_model

HELP = "best captions for each image from a caption bank (captioning by retrieval)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    add_model_args(p)
    p.add_argument("--bank", required=True, help="text file of candidate captions, one per line")
    p.add_argument("-k", "--top-k", type=int, default=5, help="captions per image")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..eval.caption import CaptionBank, load_caption_bank

    captions = load_caption_bank(args.bank)
    if args.top_k < 1:
        raise ValueError(f"-k must be at least 1, got {args.top_k}")
    inputs, (model, tokenizer, transform) = find_images_and_load_model(args)
    paths = inputs.paths
    bank = CaptionBank(model, tokenizer, captions)
    feats, failures = encode_found_images(args, inputs, model, transform)
    matches = bank.top_k(feats.features, k=args.top_k)
    results = [
        {"path": str(paths[i]), "captions": [m.to_dict() for m in ms]}
        for i, ms in zip(feats.kept, matches, strict=True)
    ]
    if args.json:
        emit_image_results(args, {"bank": args.bank, "bank_size": len(captions)}, results, failures)
        return 0
    for r in results:
        print(r["path"])
        for m in r["captions"]:
            print(f"  {m['similarity']:7.4f}  {m['probability']:6.3f}  {m['caption']}")
    return 0
