"""What the library logs, shown to the user of the command line: one line a record on standard error.

The library never prints: its modules log to ``logging.getLogger(__name__)`` (under ``privmed``), notes the
user should read at WARNING. The command line shows every record of privmed's loggers from INFO up as
``privmed: <message>`` on standard error (the stream the CLI wraps at the time of the line, so a note starts
a line of its own after a progress bar), and a progress line (:mod:`privmed.progress`) with its time, as that
module writes it by itself outside the command line. Outside the CLI, a library user's own logging
configuration decides (with none, Python shows warnings on standard error).
"""

from __future__ import annotations

import logging

from privmed.progress import LOGGER as PROGRESS_LOGGER, StderrHandler

#: the logger every privmed module logs under
ROOT = "privmed"


class _Lines(logging.Formatter):
    """``privmed: message``; a progress line with its time first (``12:03:45 privmed: ...``)."""

    def __init__(self) -> None:
        super().__init__("privmed: %(message)s")
        self._timed = logging.Formatter("%(asctime)s privmed: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return self._timed.format(record) if record.name.startswith(PROGRESS_LOGGER) else super().format(record)


class CliHandler(StderrHandler):
    """A line a record on whatever ``sys.stderr`` is at the time, as :class:`_Lines` formats it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Lines())


def show_library_logs() -> None:
    """Send privmed's log records from INFO up to standard error, once however often the CLI runs in a process."""
    log = logging.getLogger(ROOT)
    if not any(isinstance(h, CliHandler) for h in log.handlers):
        log.addHandler(CliHandler())
    log.setLevel(logging.INFO)
