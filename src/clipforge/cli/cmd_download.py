"""clipforge download MODEL: fetch and convert pretrained weights ahead of time (for offline use).

Downloads a pretrained name (clipforge models --pretrained) or a Hub id, verifies it, converts it
into a self-describing clipforge checkpoint and caches it ($CLIPFORGE_CACHE, default
~/.cache/clipforge; Hub files go to the Hugging Face cache). Prints the cached path.
"""

from __future__ import annotations

import argparse

HELP = "download and convert pretrained weights now, so later commands work offline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="pretrained name(s) or Hub id(s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..pretrained import resolve_checkpoint

    for reference in args.models:
        path = resolve_checkpoint(reference, progress=not args.no_progress)
        print(f"{reference}: {path}")
    return 0
