"""Skipped samples: a marker that datasets return instead of a bad sample, and a tally.

A corrupt image or an empty caption must never stop a run, and must never pass silently either.
Datasets return a :class:`Skip` (reason + where) instead of ``(image, caption)``; the collate
function drops it and puts the reasons inside the batch, so counts made in DataLoader worker
processes reach the main process; a :class:`SkipStats` there accumulates them, logs the first few,
and says in the run summary how many samples were skipped and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Reasons, one word each, so counts from different sources add up.
MISSING_IMAGE = "missing_image"  # the image file does not exist / the tar sample has no image
CORRUPT_IMAGE = "corrupt_image"  # the bytes are not a decodable image
MISSING_CAPTION = "missing_caption"  # no caption file / member for an image
EMPTY_CAPTION = "empty_caption"  # the caption is empty or only whitespace
BAD_CAPTION = "bad_caption"  # the caption is not text (a number, a dict, undecodable bytes)
MALFORMED_ROW = "malformed_row"  # a CSV row or JSON object without the needed fields
MALFORMED_JSON = "malformed_json"  # a line / member that is not valid JSON
TRUNCATED_SHARD = "truncated_shard"  # a tar shard that ends in the middle of a member
MISSING_SHARD = "missing_shard"  # a tar shard that cannot be opened


@dataclass(frozen=True)
class Skip:
    """Stands in for a sample that could not be used. ``where`` names the file (and line or member)."""

    reason: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


class SkipStats:
    """Running count of skipped samples by reason; logs the first ``log_first`` of them."""

    def __init__(self, *, log_first: int = 5) -> None:
        self.counts: Counter[str] = Counter()
        self.log_first = log_first
        self._logged = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, reason: str, n: int = 1, *, note: str = "") -> None:
        self.counts[reason] += n
        if note and self._logged < self.log_first:
            self._logged += 1
            more = " (further skips are counted, not logged)" if self._logged == self.log_first else ""
            logger.warning("skipped sample: %s%s", note, more)

    def record(self, skip: Skip) -> None:
        self.add(skip.reason, note=str(skip))

    def extend(self, skips: Iterable[Skip]) -> None:
        for s in skips:
            self.record(s)

    def update(self, counts: Mapping[str, int], notes: Iterable[str] = ()) -> None:
        """Add counts that came back from a worker (e.g. ``batch.skipped``, ``batch.skip_notes``)."""
        notes = list(notes)
        for reason, n in counts.items():
            self.counts[reason] += n
        for note in notes:
            if self._logged >= self.log_first:
                break
            self._logged += 1
            logger.warning("skipped sample: %s", note)

    def summary(self) -> str:
        if not self.counts:
            return "no samples skipped"
        parts = ", ".join(f"{r} {n}" for r, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"skipped {self.total} samples: {parts}"

    def state_dict(self) -> dict[str, int]:
        return dict(self.counts)

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.counts = Counter({str(k): int(v) for k, v in state.items()})


def log_load_skips(source: str, skips: list[Skip], *, show: int = 3) -> None:
    """One warning for the bad rows found while reading an index file (they are also kept on the
    dataset as ``load_skips`` so the run summary can count them)."""
    if not skips:
        return
    by_reason = Counter(s.reason for s in skips)
    first = "; ".join(str(s) for s in skips[:show])
    logger.warning(
        "%s: %d entries skipped while loading (%s); first: %s",
        source,
        len(skips),
        ", ".join(f"{r} {n}" for r, n in by_reason.most_common()),
        first,
    )
