"""Fetch OpenAI's CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) into clipforge's cache.

clipforge does not ship the file. It is inside the open_clip_torch wheel, so this runs
`python -m pip download --no-deps open_clip_torch==3.3.0`, extracts the one file and checks its
SHA-256. Default destination: $CLIPFORGE_CACHE or ~/.cache/clipforge/.

    python scripts/fetch_openai_vocab.py [--cache-dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout

from clipforge.tokenizer import TokenizerError, fetch_openai_vocab  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="destination (default: clipforge's cache)"
    )
    parser.add_argument("--force", action="store_true", help="download even if a verified copy exists")
    args = parser.parse_args()
    try:
        path = fetch_openai_vocab(args.cache_dir, force=args.force)
    except TokenizerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
