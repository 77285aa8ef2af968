"""clipforge convert SOURCE OUT: OpenAI / open_clip / Hugging Face checkpoint -> clipforge checkpoint.

Convert a checkpoint into a self-describing clipforge checkpoint (OUT/model.safetensors, or OUT
itself when it ends in .safetensors). Nothing in the source is executed.
"""

from __future__ import annotations

import argparse
import time

HELP = "convert an OpenAI, open_clip or Hugging Face checkpoint to a clipforge checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        help="OpenAI .pt, open_clip .pt/.bin/.safetensors or folder, Hugging Face folder, Apple's mobileclip_s0.pt",
    )
    p.add_argument("out", help="output folder (or .safetensors file)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "openai", "open_clip", "hf", "apple_mobileclip"],
        help="source format (default: detect)",
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", help="open_clip model name, e.g. ViT-B-32 or ViT-B-32-quickgelu")
    model.add_argument("--model-config", metavar="JSON", help="open_clip (or clipforge) model config JSON")
    p.add_argument(
        "--vocab",
        metavar="PATH",
        help="tokenizer vocabulary for sources without one (OpenAI's bpe_simple_vocab_16e6.txt.gz "
        "or a folder with vocab.json + merges.txt); default: OpenAI's",
    )
    act = p.add_mutually_exclusive_group()
    act.add_argument("--act", choices=["gelu", "quick_gelu"], help="override the activation")
    act.add_argument(
        "--quick-gelu", action="store_const", const="quick_gelu", dest="act", help="same as --act quick_gelu"
    )
    p.add_argument(
        "--keep-branches",
        action="store_true",
        help="MobileCLIP S: keep the FastViT (and MobileCLIP-S0's MCT text) tower's train-time branches (for "
        "fine-tuning, or exporting back to open_clip); default: folded into single convolutions for inference",
    )


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import read_checkpoint_info
    from ..convert import convert

    start = time.perf_counter()
    path = convert(
        args.source,
        args.out,
        format=args.format,
        model=args.model or args.model_config,
        act=args.act,
        vocab=args.vocab,
        reparameterize=not args.keep_branches,
    )
    info = read_checkpoint_info(path)
    c = info.config
    if c.vision.kind == "vit":
        tower = f"ViT-{c.vision.patch_size}"
    else:
        tower = f"{'FastViT' if c.vision.kind == 'fastvit' else 'ResNet'}{list(c.vision.layers)}"
    if c.vision.kind == "fastvit":
        tower += " (folded)" if c.vision.reparameterized else " (train-time branches)"
    print(f"wrote {path} in {time.perf_counter() - start:.1f}s")
    print(
        f"  from {info.provenance.get('format')}: {tower} {c.vision.image_size}px, width {c.vision.width}, "
        f"text {c.text.layers}x{c.text.width}{'' if c.text.kind == 'clip' else f' ({c.text.kind})'}, "
        f"embed {c.embed_dim}, act {c.act}"
    )
    return 0
