"""One study per folder: the study folder is locked while a study runs.

The lock is :func:`privmed.rundir.folder_lock` (``flock`` on ``OUT/.lock``, released by the kernel when
the holder dies, also by ``kill -9``), the one ``privmed train`` holds on its run folder, so two studies
never write the same run folders. Workers that die with their parent are :mod:`privmed.workers`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from privmed import rundir
from privmed.errors import STUDY_BUSY

LOCK_FILE = rundir.LOCK_FILE


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the study folder ``out`` (created if new) for the block;
    refuse with :data:`~privmed.errors.STUDY_BUSY` when another live study holds it."""
    with rundir.folder_lock(out, STUDY_BUSY):
        yield
