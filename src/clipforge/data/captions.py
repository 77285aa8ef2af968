"""Caption cleaning and the per-epoch choice among several captions of one image."""

from __future__ import annotations

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
