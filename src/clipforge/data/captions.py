"""Caption cleaning and the per-epoch choice among several captions of one image."""

from __future__ import annotations

import json
import random
from typing import Any

from clipforge.data.skips import BAD_CAPTION, EMPTY_CAPTION

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """A 64-bit hash of a few integers (seed, epoch, index...): same inputs, same output, any process."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h


def clean_captions(value: Any, *, split_lines: bool = False) -> list[str] | str:
    """The usable captions in ``value`` (a string, or a list of strings), whitespace-normalised.

    ``split_lines`` treats each line of a string as its own caption (``.txt`` caption files).
    Returns the reason string (``EMPTY_CAPTION`` / ``BAD_CAPTION``) when nothing usable is left.
    """
    if isinstance(value, str):
        items = value.splitlines() if split_lines else [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        return BAD_CAPTION
    captions = [" ".join(c.split()) for c in items]
    captions = [c for c in captions if c]
    return captions if captions else EMPTY_CAPTION


def pick_caption(captions: list[str], *, seed: int, epoch: int, index: int) -> str:
    """One of ``captions``, chosen by (seed, epoch, index) alone, so a run is reproducible and each
    epoch may see a different caption of the same image."""
    if len(captions) == 1:
        return captions[0]
    return captions[mix_seed(seed, epoch, index) % len(captions)]


def cycle_caption(captions: list[str], *, seed: int, epoch: int, index: int) -> str:
    """One of ``captions`` for ``epoch`` such that every ``k = len(captions)`` consecutive epochs
    (``0..k-1``, ``k..2k-1``, ...) see each caption exactly once, in an order shuffled per image and
    per cycle from (seed, index, cycle). Deterministic, like :func:`pick_caption`."""
    k = len(captions)
    if k == 1:
        return captions[0]
    cycle, turn = divmod(epoch, k)
    order = list(range(k))
    random.Random(mix_seed(seed, index, cycle, 0xCA9)).shuffle(order)
    return captions[order[turn]]


def caption_list(value: str) -> list[str] | str:
    """A CSV cell holding a JSON list of captions (``["a dog", "a puppy"]``) as that list; any other
    text is returned unchanged (one caption)."""
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return value
    return parsed if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed) else value
