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
from collections.abc import Iterable, Mapping, Sequence
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
    """Running count of skipped samples by reason; logs the first ``log_first`` of them.

    Samples named by ``keys`` (``(reason, where)``) are counted once however many epochs meet
    them, so a file that disappears in a later epoch adds one, and a bad one does not add one per
    epoch; skips without a name are counted each time."""

    def __init__(self, *, log_first: int = 5) -> None:
        self.counts: Counter[str] = Counter()
        self.seen: set[tuple[str, str]] = set()
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

    def update(
        self,
        counts: Mapping[str, int],
        notes: Iterable[str] = (),
        keys: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """Add counts that came back from a worker (``batch.skipped``, ``batch.skip_notes``,
        ``batch.skip_keys``). With ``keys``, samples already counted are not counted again."""
        notes = list(notes)
        counts = Counter(counts)
        if keys is not None:
            keys = [tuple(k) for k in keys]
            counts.subtract(Counter(reason for reason, _ in keys))  # what remains has no name
            new = [k for k in dict.fromkeys(keys) if k not in self.seen]
            notes = [n for n in notes if any(n.startswith(f"{where}:") for _, where in new)]  # log once
            self.seen.update(new)
            counts.update(reason for reason, _ in new)
        for reason, n in counts.items():
            if n > 0:
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

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "seen": sorted(self.seen)}

    def load_state_dict(self, state: Mapping) -> None:
        if "counts" not in state:  # the older flat {reason: count}
            state = {"counts": state, "seen": []}
        self.counts = Counter({str(k): int(v) for k, v in state["counts"].items()})
        self.seen = {(str(r), str(w)) for r, w in state["seen"]}

    def merge(self, state: Mapping) -> None:
        """Add another process's ``state_dict()``; samples both counted are counted once."""
        other = SkipStats()
        other.load_state_dict(state)
        counts = other.counts.copy()
        for reason, where in other.seen:
            if (reason, where) in self.seen:
                counts[reason] -= 1
            self.seen.add((reason, where))
        for reason, n in counts.items():
            if n > 0:
                self.counts[reason] += n


def describe_skips(skips: Sequence[Skip], *, show: int = 3) -> str:
    """``"3 entries skipped (malformed_row 3); first: f.csv:2: malformed_row (...)"``."""
    by_reason = Counter(s.reason for s in skips)
    reasons = ", ".join(f"{r} {n}" for r, n in by_reason.most_common())
    return f"{len(skips)} entries skipped ({reasons}); first: " + "; ".join(str(s) for s in skips[:show])


def log_load_skips(source: str, skips: list[Skip], *, show: int = 3) -> None:
    """One warning for the bad rows found while reading an index file (they are also kept on the
    dataset as ``load_skips`` so the run summary can count them)."""
    if not skips:
        return
    logger.warning("%s: while loading, %s", source, describe_skips(skips, show=show))


def no_usable_pairs(source: str, skips: Sequence[Skip], *, columns: bool) -> ValueError:
    """The error for image-caption data of which no pair can be used: names ``source``, why its
    entries were skipped and, for CSV/JSONL data (``columns``), the parameters that pick the columns."""
    why = describe_skips(skips, show=1) if skips else "it lists no entries"
    choose = "; choose the columns with `image_key=` / `caption_key=`" if columns else ""
    return ValueError(f"{source}: no usable image-caption pairs: {why}{choose}")
