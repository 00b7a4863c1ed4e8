"""Progress with an ETA for long phases (sampling, evaluators, dataset builds, training).

tqdm draws a bar on a terminal but writes nothing useful into a plain log (CI, nohup, a
remote job), where a phase of minutes then looks hung. `Progress` logs
`label i/N unit (x%), elapsed, ETA` through absl logging at most every `every` seconds, and
draws a tqdm bar instead only when stderr is a terminal. ETAs come from the steady-state
rate (`SteadyRate`): the first unit, which carries compilation, is not counted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_LOG = logging.getLogger(__name__)


def log_to_stderr() -> None:
    """For plain (argparse) CLIs, which have no absl handler: vdiff's INFO lines (progress,
    what is built from where) on stderr; other libraries stay at WARNING."""
    logging.basicConfig()  # a stderr handler, unless one exists (absl adds a plain one)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and getattr(
                handler.formatter, "_fmt", None) == logging.BASIC_FORMAT:
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("vdiff").setLevel(logging.INFO)


def format_duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class SteadyRate:
    """Units per second measured from the end of the first `skip` units on, so that compile
    time and other one-off start-up costs do not inflate the ETA."""

    def __init__(self, skip: int = 1):
        self.skip = skip
        self._start: tuple[float, float] | None = None  # (units, time) once `skip` are done
        self._last: tuple[float, float] | None = None

    def mark(self, done: float, now: float | None = None) -> None:
        """Records that `done` units are complete at `now` (perf_counter seconds)."""
        now = time.perf_counter() if now is None else now
        if self._start is None:
            if done >= self.skip:
                self._start = (done, now)
        else:
            self._last = (done, now)

    def eta(self, remaining: float) -> float | None:
        """Seconds for `remaining` more units at the steady rate; None before it is known."""
        if self._start is None or self._last is None or self._last[0] <= self._start[0]:
            return None
        rate = (self._last[0] - self._start[0]) / max(self._last[1] - self._start[1], 1e-9)
        return remaining / rate


class Progress:
    """`update(n)` as units complete; logs every `every` s in plain logs, a bar on a TTY.

    Use as a context manager, or call `close()`: a phase that took at least `every` seconds
    ends with one summary line.
    """

    def __init__(self, label: str, total: int = 0, *, unit: str = "", every: float = 10.0,
                 skip: int = 1):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.done = 0
        self.t0 = self._last_log = time.perf_counter()
        self.rate = SteadyRate(skip)
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=label, unit=unit or "it", dynamic_ncols=True,
                             leave=False)

    def add_total(self, n: int) -> None:
        """Grows the total (e.g. one more window of an autoregressive application)."""
        self.total += n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        self.rate.mark(self.done, now)
        if self._bar is not None:
            self._bar.update(n)
        elif now - self._last_log >= self.every:
            self._last_log = now
            _LOG.info("%s", self.status(now))

    def status(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        unit = f" {self.unit}" if self.unit else ""
        line = f"{self.label}: {self.done}"
        if self.total:
            eta = self.rate.eta(max(self.total - self.done, 0))
            line += (f"/{self.total}{unit} ({100 * self.done / self.total:.0f}%), "
                     f"{format_duration(now - self.t0)} elapsed, ETA "
                     f"{'--' if eta is None else format_duration(eta)}")
        else:
            line += f"{unit}, {format_duration(now - self.t0)} elapsed"
        return line

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elapsed = time.perf_counter() - self.t0
        if elapsed >= self.every:
            unit = f" {self.unit}" if self.unit else ""
            _LOG.info("%s: %d%s in %s", self.label, self.done, unit, format_duration(elapsed))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], label: str, *, total: int | None = None, unit: str = "",
          every: float = 10.0) -> Iterator[T]:
    """Yields `items`, counting one unit when the loop body for an item is done (block on
    asynchronous JAX results inside the body, or the count runs ahead of the work)."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else 0
    with Progress(label, total, unit=unit, every=every) as bar:
        for item in items:
            yield item
            bar.update()
