"""``clipforge models``: list the built-in architectures."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list built-in model architectures")
    p.add_argument("--json", action="store_true", help="print the full configs as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..models import get_model_config, list_models

    if args.json:
        print(json.dumps({n: get_model_config(n).to_dict() for n in list_models()}, indent=2))
        return 0
    print(f"{'name':<12} {'tower':<7} {'image':>5} {'embed':>5} {'act':<10}")
    for name in list_models():
        c = get_model_config(name)
        print(f"{name:<12} {c.vision.kind:<7} {c.vision.image_size:>5} {c.embed_dim:>5} {c.act:<10}")
    return 0
