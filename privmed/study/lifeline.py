"""One study per folder: the study folder is locked while a study runs.

The lock is ``flock`` on ``OUT/.lock``, released by the kernel when the holder dies (also by
``kill -9``), so two studies never write the same run folders. Workers that die with their
parent are :mod:`privmed.workers`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from privmed.errors import STUDY_BUSY, PrivmedError

LOCK_FILE = ".lock"


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
