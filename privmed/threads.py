"""CPU threads: as many as the cores a process may use, and none that spin while waiting.

Two measurements on a 2-core machine with other processes busy (scattering of 256
images at 64 px, the DP generator's front end): 12-18 s with torch's default 2 threads,
1.2 s with ``OMP_WAIT_POLICY=PASSIVE``, 0.65 s with 1 thread. OpenMP threads that
busy-wait for each other collapse when a core is taken by anything else, and a study
with N worker processes must not start more threads than cores in all.
"""

from __future__ import annotations

import os


def quiet_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning (unless the user set a policy). Takes effect only
    before torch starts its thread pool, so call it before importing torch; spawned workers inherit it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int) -> int:
    """torch threads for each of ``workers`` processes sharing this machine's cores."""
    return max(1, available_cpus() // max(1, workers))
