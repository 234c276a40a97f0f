"""Worker processes that die with their parent, however the parent dies.

A study or an audit killed with ``kill -9`` cannot clean up after itself, so its workers watch
for it: each asks the kernel for SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``) and,
everywhere, a watchdog thread exits the worker as soon as it is re-parented. Pass
:func:`die_with_parent` as a process pool's ``initializer`` (or call it first in the worker).
"""

from __future__ import annotations

import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5


def die_with_parent() -> None:
    """Make the calling (worker) process exit when its parent process dies, however it dies."""
    parent = os.getppid()
    _ask_kernel_for_sigkill()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="privmed-lifeline").start()


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
