"""How large a physical batch fits in memory, found before training starts.

On a CPU an out-of-memory is not an exception: the kernel kills the process (3D DP
training at 64³ was killed at 24 GB, without a word). So the batch is not tried at full
size; training steps at batches of two and four are measured instead: the bytes autograd saves
for backward (activations) per sample, and the per-sample gradients DP-SGD keeps (one
copy of every trainable parameter per sample). The physical batch is then the largest
that fits in a share of the memory available, or, if not even one sample fits, the run is
refused with what it would need. The physical batch only bounds memory: the logical
(Poisson) batch, the noise and the privacy guarantee do not depend on it.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from privmed.errors import BATCH_NEVER_FITS, PrivmedError

#: backward needs about as much again as the activations saved for it (gradients of activations)
ACTIVATION_FACTOR = 2.0
#: per-sample gradients, and the clipped copy Opacus makes of them
GRAD_SAMPLE_COPIES = 2.0
#: share of the available memory a run may plan to use (the rest: data, Python, other processes)
MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class MemoryPlan:
    """What one step needs: ``per_sample`` bytes for each sample of a physical batch, ``fixed`` bytes once."""

    per_sample: float
    fixed: float
    available: float

    def largest_batch(self) -> int:
        """The largest physical batch within :data:`MEMORY_SHARE` of the available memory (0: not even one)."""
        budget = self.available * MEMORY_SHARE - self.fixed
        return max(0, int(budget // self.per_sample)) if self.per_sample > 0 else 1 << 30


def measure(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, private: bool, device: str) -> MemoryPlan:
    """Measure training steps of a copy of ``net`` on two and on four samples (two: batch norm needs
    more than one): what grows with the batch is per-sample (activations), what does not is fixed
    (weights saved for backward)."""
    probe = copy.deepcopy(net).to(device)
    small, large = min(2, len(x)), min(4, len(x))
    saved = {k: _saved_bytes(probe, x[:k].to(device), y[:k].to(device)) for k in {small, large}}
    params = sum(p.numel() * p.element_size() for p in probe.parameters() if p.requires_grad)
    del probe
    if large > small:
        activations = (saved[large] - saved[small]) / (large - small)
        fixed_saved = max(saved[small] - small * activations, 0)
    else:  # a training set this small: count everything as per-sample
        activations, fixed_saved = saved[small] / small, 0.0
    per_sample = max(activations, 0) * ACTIVATION_FACTOR + x[0].numel() * x.element_size()
    if private:
        per_sample += params * GRAD_SAMPLE_COPIES
    fixed = 4.0 * params + fixed_saved * ACTIVATION_FACTOR  # weights, grads, optimiser state
    return MemoryPlan(per_sample=per_sample, fixed=fixed, available=available_memory(device))


def _saved_bytes(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd saves for the backward pass of one step on ``x`` (then runs that backward)."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
    loss.backward()
    net.zero_grad(set_to_none=True)
    return saved


def choose_physical_batch(plan: MemoryPlan, requested: int, *, what: str) -> int:
    """``requested`` when it fits, else the largest batch that does; raise when not even one sample fits."""
    fits = plan.largest_batch()
    if fits < 1:
        raise PrivmedError(BATCH_NEVER_FITS.format(
            what=what, need=gigabytes(plan.per_sample + plan.fixed), share=int(MEMORY_SHARE * 100),
            available=gigabytes(plan.available)))
    return min(requested, fits)


def available_memory(device: str = "cpu") -> float:
    """Bytes free for this process: the GPU's free memory, or on the CPU the smaller of the
    system's available memory and what the cgroup limit leaves."""
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return float(free)
    candidates = [_meminfo_available()]
    limit, used = _cgroup_limit()
    if limit is not None:
        candidates.append(limit - used)
    known = [c for c in candidates if c is not None and c > 0]
    return float(min(known)) if known else math.inf


def _meminfo_available() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def _cgroup_limit() -> tuple[float | None, float]:
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = float(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None, 0.0
    return (None, used) if raw == "max" else (float(raw), used)


def gigabytes(n: float) -> str:
    """'1.23 GB'."""
    return f"{n / 2**30:.2f} GB"
