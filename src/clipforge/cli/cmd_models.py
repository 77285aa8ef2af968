"""clipforge models [--pretrained]: list the built-in architectures, or the pretrained weights.

Architectures are what `train --model` builds; pretrained names (ARCH/TAG) are what every --model
flag loads (downloaded and converted once, then cached).
"""

from __future__ import annotations

import argparse
import json

HELP = "list built-in model architectures (--pretrained: the pretrained weights by name)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", action="store_true", help="list the pretrained weights by name")
    p.add_argument("--json", action="store_true", help="print the full configs/entries as JSON")


def run(args: argparse.Namespace) -> int:
    from ..models import get_model_config, list_models
    from ..pretrained import get_pretrained, list_pretrained

    if args.pretrained:
        entries = [get_pretrained(n) for n in list_pretrained()]
        if args.json:
            print(json.dumps({e.name: {k: v for k, v in vars(e).items() if k != "name"} for e in entries}, indent=2))
            return 0
        print(f"{'name':<34} {'act':<10} {'source':<8} description")
        for e in entries:
            print(f"{e.name:<34} {e.act:<10} {'url' if e.url else 'hf-hub':<8} {e.description}")
        print("\nAlso accepted: hf-hub:ORG/REPO (open_clip repos), ORG/REPO (transformers repos), and files.")
        return 0
    if args.json:
        print(json.dumps({n: get_model_config(n).to_dict() for n in list_models()}, indent=2))
        return 0
    print(f"{'name':<14} {'tower':<7} {'image':>5} {'embed':>5} {'act':<10} pretrained")
    for name in list_models():
        c = get_model_config(name)
        tags = [n.split("/", 1)[1] for n in list_pretrained(architecture=name)]
        shown = ", ".join(tags[:3]) + (f" (+{len(tags) - 3})" if len(tags) > 3 else "")
        print(f"{name:<14} {c.vision.kind:<7} {c.vision.image_size:>5} {c.embed_dim:>5} {c.act:<10} {shown}")
    return 0
