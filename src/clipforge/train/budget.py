"""Training to a wall-clock budget: measure the step time, size the step count and the schedule.

:func:`parse_duration` reads ``"25m"``, ``"90s"``, ``"1h"``, ``"1h30m"`` or plain seconds.
:class:`TimeBudget` skips a few warm-up steps (allocation, caches, workers starting), times the
next few, and plans the total number of steps that fits in what is left of the budget (keeping a
small reserve for the final evaluation and save). The loop sizes the learning-rate schedule
(warm-up, cosine) to that total. After every evaluation or checkpoint (time not spent on steps),
and every tenth of the planned steps (the pace of a shared machine drifts), the plan is made again
from the measured step time, and the loop also stops as soon as one more
step would overrun the budget. The elapsed time travels in the checkpoint, so a resumed run keeps
the same budget.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: ``"25m"``, ``"90s"``, ``"1h"``, ``"1h30m"``, ``"1500"`` or a number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '25m', '90s', '1h' or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"expected a duration like '25m', '90s', '1h' or seconds, got {value!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


@dataclass
class TimeBudget:
    """The plan for a run of ``seconds`` of wall-clock (steps, evaluations and saves together).

    Call :meth:`start` when training starts, :meth:`begin_step` and :meth:`step_done` around each
    step (its data wait included), and :meth:`replan` after anything else that took time. :attr:`planned` is the total
    step count once measured (None before).
    """

    seconds: float
    warmup: int = 3  # steps not timed (first-step costs)
    measure: int = 5  # steps timed for the first plan
    reserve: float = 0.03  # share of the budget kept for the final evaluation and save
    elapsed_before: float = 0.0  # time already spent (a resumed run)
    planned: int | None = None
    step_time: float | None = None
    _t0: float = 0.0
    _mark: float = 0.0  # when the current step began
    _last: float = 0.0  # the last step's time (the pace until one is measured)
    _seen: int = 0
    _recent: deque = field(default_factory=lambda: deque(maxlen=20))  # the pace: the last 20 timed steps
    _timed_steps: int = 0
    _stale: bool = False  # resumed with another budget: plan again after the next step

    @staticmethod
    def now() -> float:
        return time.perf_counter()

    def start(self) -> None:
        self._t0 = self.now()

    def elapsed(self) -> float:
        return self.elapsed_before + self.now() - self._t0

    def begin_step(self) -> None:
        self._mark = self.now()

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def step_done(self, step: int, seconds: float | None = None) -> bool:
        """Record that step ``step`` (1-based count of steps done) took ``seconds`` (default: since
        :meth:`begin_step`); True when this made a plan (the first, or the first after resuming
        with another budget)."""
        if seconds is None:
            seconds = self.now() - self._mark
        self._seen += 1
        self._last = seconds
        if self._seen <= self.warmup:
            return False
        self._recent.append(seconds)
        self._timed_steps += 1
        self.step_time = sum(self._recent) / len(self._recent)
        if (self.planned is None and self._timed_steps >= self.measure) or self._stale:
            self._stale = False
            return self.replan(step)
        return False

    def replan(self, step: int) -> bool:
        """Plan the total from ``step`` done and the recent mean step time; False before a measurement."""
        if self.step_time is None or self._timed_steps < min(self.measure, 1):
            return False
        left = self.remaining() - self.reserve * self.seconds
        self.planned = max(step + int(left / self.step_time), step)
        return True

    def due(self, step: int) -> bool:
        """Time to plan again from the pace so far: every tenth of the planned steps."""
        return self.planned is not None and step % max(self.planned // 10, 1) == 0

    @property
    def measuring(self) -> bool:
        """No plan yet: the run keeps stepping whatever its step count says."""
        return self.planned is None

    def schedule(self, *, steps: int, warmup_steps: int) -> tuple[int, int]:
        """(total steps, warm-up steps) of the learning-rate schedule: ``steps`` and
        ``warmup_steps`` until planned, then the plan, with warm-up at most a tenth of it."""
        if self.planned is None:
            return steps, warmup_steps
        total = max(self.planned, 1)
        return total, min(warmup_steps, max(total // 10, 1))

    def out_of_time(self) -> bool:
        """Whether one more step (at the measured pace) would overrun the budget."""
        pace = self.step_time if self.step_time is not None else self._last
        return self.elapsed() + pace > self.seconds

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "elapsed": self.elapsed(), "planned": self.planned,
                "step_time": self.step_time}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed_before = float(state["elapsed"])
        self._stale = float(state["seconds"]) != self.seconds
        self.planned = state["planned"]
        self.step_time = state["step_time"]
        if self.step_time is not None:  # already measured: keep the pace, no new warm-up
            self._recent.append(self.step_time)
            self._timed_steps, self._seen = 1, self.warmup
