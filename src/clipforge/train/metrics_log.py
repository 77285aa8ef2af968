"""Metrics: a JSONL file always, plus the experiment trackers of ``report_to``; and the progress bar."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text
from .tracking import Tracker, scalars_of

log = logging.getLogger(__name__)


class MetricsLogger:
    """Appends ``{"step": s, **values}`` lines to ``metrics.jsonl`` and hands the numeric values to
    each tracker (:mod:`.tracking`: TensorBoard, W&B, MLflow)."""

    def __init__(self, path: Path, *, enabled: bool = True, trackers: Sequence[Tracker] = ()) -> None:
        self.path, self.enabled = path, enabled
        self.trackers = list(trackers) if enabled else []

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written before a crash, about to be recomputed on resume)."""
        if not (self.enabled and self.path.is_file()):
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and _step_of(line) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = scalars_of(values)
        for tracker in self.trackers:
            tracker.log(step, scalars)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Progress:
    """A tqdm bar over optimiser steps showing the loss, samples/s, the share of time spent waiting
    for data (high means the run is data-bound: add workers or a cache) and tqdm's ETA."""

    def __init__(self, *, total: int, initial: int, enabled: bool, desc: str = "train") -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
        self._loss: float | None = None
        now = time.perf_counter()
        self._run = [0, 0.0, now]  # samples, seconds waiting for data, start: since the bar began
        self._win = [0, 0.0, now]  # the same since the last window()

    def set_total(self, total: int) -> None:
        """A new step count (a time budget planned it)."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, *, samples: int, data_wait: float) -> None:
        for acc in (self._run, self._win):
            acc[0] += samples
            acc[1] += data_wait
        if self._bar is None:
            return
        elapsed = max(time.perf_counter() - self._run[2], 1e-9)
        postfix = {
            "samples/s": f"{self._run[0] / elapsed:.0f}",
            "data": f"{100 * self._run[1] / elapsed:.0f}%",
        }
        if self._loss is not None:
            postfix = {"loss": f"{self._loss:.4f}", **postfix}
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def set_loss(self, loss: float | None) -> None:
        if loss is not None:
            self._loss = loss

    def window(self) -> tuple[float, float]:
        """(samples/s, share of wall time waiting for data) since the last call."""
        now = time.perf_counter()
        elapsed = max(now - self._win[2], 1e-9)
        out = (self._win[0] / elapsed, self._win[1] / elapsed)
        self._win = [0, 0.0, now]
        return out

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
