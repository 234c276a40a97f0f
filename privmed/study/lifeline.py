"""Keeping a study's processes tied together: workers die with their parent, one study per folder.

A study killed with ``kill -9`` cannot clean up after itself, so its workers watch for it: each
asks the kernel for SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``) and, everywhere,
a watchdog thread exits the worker as soon as it is re-parented. The study folder is locked
(``flock`` on ``OUT/.lock``, released by the kernel when the holder dies) so two studies never
write the same run folders.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

from privmed.errors import STUDY_BUSY, PrivmedError

LOCK_FILE = ".lock"
PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5


def die_with_parent() -> None:
    """Make the calling (worker) process exit when its parent process dies, however it dies."""
    parent = os.getppid()
    _ask_kernel_for_sigkill()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="privmed-lifeline").start()


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the study folder ``out`` (created if new) for the block;
    refuse with :data:`~privmed.errors.STUDY_BUSY` when another live study holds it."""
    import fcntl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = fh.read().strip() if fh.seek(0) == 0 else ""
            raise PrivmedError(STUDY_BUSY.format(path=out, pid=holder or "?")) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ask_kernel_for_sigkill() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog alone does it
        pass


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)
