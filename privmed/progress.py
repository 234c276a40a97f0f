"""Progress of a slow step, on a terminal and in a log: the one helper every slow loop uses.

On a terminal, :func:`progress` is a tqdm bar. When standard error is not a terminal (a batch job
writing to a file), a tqdm bar would write nothing or one line per refresh; instead a few plain lines
go through :mod:`logging` (logger ``privmed.progress``): one at every tenth of a known total (or, with
no total, every :data:`HEARTBEAT_SECONDS`, less often as the step goes on) and one when it ends, and
only once the step has taken :data:`QUIET_SECONDS`, so fast steps write nothing. ``TQDM_DISABLE`` (set
for a study's worker processes) turns both off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

LOGGER = "privmed.progress"
QUIET_SECONDS = 5.0  # a step shorter than this writes no line
HEARTBEAT_SECONDS = 30.0  # with no known total: a line this often at first
STEPS = 10  # with a known total: a line at every tenth
TERMINAL_DELAY = 1.0  # a bar shows once its step has taken this long (no flicker of fast steps)


def progress(iterable: Iterable | None = None, *, desc: str, unit: str = "it", total: int | None = None,
             initial: int = 0, leave: bool = False, disable: bool | None = False):
    """A progress bar over ``iterable`` (or updated by hand: ``update()``, ``set_postfix()``, ``close()``):
    tqdm on a terminal, plain log lines otherwise. ``disable=True`` shows nothing."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if disable or os.environ.get("TQDM_DISABLE", "").lower() in {"1", "true", "yes"}:
        disable = True
    if disable is not True and _on_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, unit=unit, total=total, initial=initial, leave=leave, delay=TERMINAL_DELAY)
    return LogProgress(iterable, desc=desc, unit=unit, total=total, initial=initial, quiet=disable is True)


def _on_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class LogProgress:
    """tqdm's interface (the part privmed uses) writing a bounded number of plain lines to a log."""

    def __init__(self, iterable: Iterable | None, *, desc: str, unit: str, total: int | None, initial: int = 0,
                 quiet: bool = False) -> None:
        self.iterable, self.desc, self.unit, self.total = iterable, desc, unit, total
        self.n, self.quiet, self.lines, self.postfix = initial, quiet, 0, ""
        self._start = self._last = time.monotonic()
        self._next_step = self._step_of(initial) + 1
        self._interval = HEARTBEAT_SECONDS
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._start < QUIET_SECONDS:
            return
        if self.total:
            if self._step_of(self.n) >= self._next_step and self.n < self.total:
                self._next_step = self._step_of(self.n) + 1
                self._write(now)
        elif now - self._last >= self._interval:
            if self.lines >= STEPS:
                self._interval *= 2  # a long step with no total: ever fewer lines
            self._write(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        now = time.monotonic()
        if not self.quiet and (self.lines or now - self._start >= QUIET_SECONDS):
            self._write(now, done=True)

    def _step_of(self, n: int) -> int:
        return int(n * STEPS // self.total) if self.total else 0

    def _write(self, now: float, *, done: bool = False) -> None:
        self.lines += 1
        self._last = now
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n // self.total}%)" if self.total else ""
        state = "done" if done else "so far"
        extra = f", {self.postfix}" if self.postfix else ""
        _logger().info(f"{self.desc}: {count} {self.unit}{share}, {now - self._start:.0f} s {state}{extra}")


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is written (the CLI wraps it; tests capture it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _logger() -> logging.Logger:
    """``privmed.progress``; with no handler configured anywhere, one that writes to standard error."""
    log = logging.getLogger(LOGGER)
    if not log.hasHandlers():
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s privmed: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return log
