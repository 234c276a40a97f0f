"""GPUs for study workers: ``--devices 0,1`` pins each worker process to one of the listed GPUs.

A worker sees only its GPU (``CUDA_VISIBLE_DEVICES``, set before it touches CUDA), so a run's
``cuda`` (or ``auto``) device is that GPU; workers beyond the list share GPUs in turn.
"""

from __future__ import annotations

import os

from privmed.errors import PrivmedError

BAD_DEVICES = ("--devices {text}: {reason}. Give GPU indices separated by commas, e.g. --devices 0,1 (each study "
               "worker takes one in turn; leave it out to let every run use its own --device).")


def parse_devices(text: str, *, available: int | None = None) -> tuple[str, ...]:
    """``"0,1"`` -> ``("0", "1")``, each an index of a GPU this machine has (``available``: how many;
    default: ask torch)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise PrivmedError(BAD_DEVICES.format(text=text, reason="not a list of GPU indices"))
    if available is None:
        available = cuda_count()
    if available == 0:
        raise PrivmedError(BAD_DEVICES.format(text=text, reason="this machine has no CUDA GPU"))
    too_high = [p for p in parts if int(p) >= available]
    if too_high:
        raise PrivmedError(BAD_DEVICES.format(text=text, reason=f"this machine has {available} CUDA GPU(s), "
                                                                f"numbered 0 to {available - 1}"))
    return tuple(parts)


def cuda_count() -> int:
    """How many CUDA GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_slots(devices: tuple[str, ...], workers: int) -> list[str]:
    """The GPU of each worker: the listed ones in turn."""
    return [devices[i % len(devices)] for i in range(workers)] if devices else []


def pin(device: str | None) -> None:
    """Let this process see only GPU ``device`` (before CUDA is initialised); None: leave it be."""
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
