"""Progress reporting, in one place: a tqdm bar on a terminal; without one (a file, a job log, a
pipe) one plain line every ``every`` items, with the rate and the ETA, and no carriage returns.

Every long loop of the library reports through :func:`progress_bar`, which returns an object with
the part of tqdm's interface the library uses (iteration, ``update``, ``set_postfix``, ``write``,
``close``, ``with``). Cluster schedulers keep stderr in a file: carriage-return updates would fill
it with thousands of redrawn bars, where a training log should read like this::

    train: 200/1000 step (20%) 3.41 step/s, ETA 3:54, loss=2.3012 samples/s=436 data=4%
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Protocol

from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm  # tqdm's own pick: its notebook widget inside Jupyter

LINES_PER_BAR = 10  # without ``every``: about this many lines over a known total
INTERVAL_S = 30.0  # without ``every`` or a total: a line at most this often


class ProgressBar(Protocol):
    """What :func:`progress_bar` returns (a ``tqdm`` or a :class:`LogProgress`)."""

    def __iter__(self) -> Iterator[Any]: ...
    def __enter__(self) -> ProgressBar: ...
    def __exit__(self, *exc: object) -> None: ...
    def update(self, n: float = 1) -> Any: ...
    def refresh(self) -> Any: ...
    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True) -> None: ...
    def write(self, s: str) -> None: ...
    def close(self) -> None: ...


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    initial: float = 0,
    leave: bool = True,
    unit_scale: bool = False,
    every: int | None = None,
    stream: IO[str] | None = None,
) -> ProgressBar:
    """A progress bar over ``iterable`` (or updated by hand) that suits where ``stream`` (default:
    stderr) goes: a tqdm bar on a terminal (or a notebook), plain lines elsewhere (:class:`LogProgress`:
    one every ``every`` items; without ``every``, about ten over ``total``, or one per 30 s when the
    total is unknown). ``enabled=False`` shows nothing."""
    out = sys.stderr if stream is None else stream
    if total is None and iterable is not None:
        total = _length(iterable)
    options: dict[str, Any] = dict(total=total, desc=desc, unit=unit, initial=initial, unit_scale=unit_scale)
    if not enabled:
        return tqdm(iterable, disable=True, **options)
    notebook = stream is None and _in_notebook()  # a Jupyter kernel: its stderr is no TTY
    if not (notebook or _is_terminal(out)):
        return LogProgress(iterable, every=every, file=out, **options)
    options.update(leave=leave, unit_divisor=1024 if unit == "B" else 1000)
    if notebook:
        return auto_tqdm(iterable, **options)
    return tqdm(iterable, file=out, dynamic_ncols=True, **options)


class LogProgress:
    """Progress as plain log lines: ``desc: n/total unit (p%) rate unit/s, ETA h:mm:ss, postfix``,
    one whenever the count reaches a multiple of ``every`` (without ``every``: about
    ``LINES_PER_BAR`` over ``total``, else one per ``INTERVAL_S``), and a last one at ``close``."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None,
        desc: str,
        unit: str,
        file: IO[str],
        initial: float = 0,
        unit_scale: bool = False,
        every: int | None = None,
    ) -> None:
        if every is not None and every < 1:
            raise ValueError(f"`every={every}` must be at least 1")
        self.iterable, self.total, self.desc, self.unit, self.file = iterable, total, desc, unit, file
        self.unit_scale = unit_scale
        self.n = self._start_n = initial
        if every is None and total:
            every = max(1, math.ceil((total - initial) / LINES_PER_BAR))
        self.every = every
        self._postfix = ""
        self._start = self._last_line_time = time.monotonic()
        self._last_line_n: float | None = None
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress bar was made without an iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        before, self.n = self.n, self.n + n
        if self.every is not None:
            if self.n // self.every > before // self.every:
                self._line()
        elif time.monotonic() - self._last_line_time >= INTERVAL_S:
            self._line()

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self._postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def refresh(self) -> None:
        """Nothing to redraw: the next line shows the current figures (``total`` included)."""

    def write(self, s: str) -> None:
        print(s, file=self.file, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._last_line_n and self.n > self._start_n:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        unit = self.unit if self.unit_scale else f" {self.unit}"  # 2.00MB, 12 img
        parts = [f"{self.desc}: " if self.desc else "", self._amount(self.n)]
        if self.total:
            parts.append(f"/{self._amount(self.total)}{unit} ({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(unit)
        parts.append(f" {self._amount(rate)}{unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f", ETA {tqdm.format_interval((self.total - self.n) / rate)}")
        else:
            parts.append(f", elapsed {tqdm.format_interval(elapsed)}")
        if self._postfix:
            parts.append(f", {self._postfix}")
        self.write("".join(parts))
        self._last_line_n, self._last_line_time = self.n, now

    def _amount(self, x: float) -> str:
        if self.unit_scale:
            return tqdm.format_sizeof(x, divisor=1024 if self.unit == "B" else 1000)
        if x == int(x) or x >= 100:
            return f"{x:.0f}"
        return f"{x:.1f}" if x >= 10 else f"{x:.3g}"  # 12.5, 3.41, 0.208


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:  # no length (a generator; a DataLoader over a stream raises it too)
        return None


def _in_notebook() -> bool:
    return any(c.__module__ == "tqdm.notebook" for c in auto_tqdm.__mro__)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
