"""Caption cleaning and the per-epoch choice among several captions of one image."""

from __future__ import annotations

from typing import Any

from clipforge.data.seeding import mix_seed
from clipforge.data.skips import BAD_CAPTION, EMPTY_CAPTION


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
