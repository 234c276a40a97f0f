"""Several processes training one DP-SGD model: PyTorch distributed plus Opacus's distributed optimiser.

``torchrun --nproc_per_node N -m privmed train ...`` (or ``privmed train --nproc N``, which
starts the N processes itself) runs :func:`~privmed.training.trainer.train` once per process.
Each process (rank) joins one process group (:func:`join_from_env`), and:

* the model is wrapped in Opacus's ``DifferentiallyPrivateDistributedDataParallel``, which
  broadcasts rank 0's weights once; Opacus's ``PrivacyEngine`` then picks its
  ``DistributedDPOptimizer``, which clips each rank's per-sample gradients, adds the Gaussian
  noise **on rank 0 only** (``add_noise``: ``if self.rank == 0: super().add_noise()``), and
  all-reduces (sums) the clipped-and-noised gradients, each divided by the per-rank expected
  batch ``E / N`` and then by ``N``: the update is ``(sum of all clipped gradients + one noise
  draw) / E``, exactly the one-process update (``opacus/optimizers/ddpoptimizer.py``);
* each step's Poisson sample of units (patients or images) is split between ranks: unit ``u``
  belongs to rank ``u mod N`` (:class:`~privmed.privacy.engine.RankShard`), so the union of the
  ranks' batches is one Poisson sample of units at rate ``q``, the sample the accountant is told
  about; the expected global batch, steps and noise multiplier are those of one process, so the
  epsilon is the same;
* every rank's sampling and noise generators are seeded from the operating system
  (:mod:`privmed.privacy.randomness`), never from the seed (in a replayable, not-private run all
  ranks derive the same sampling stream from the seed, so the union of their batches is the
  one-process batch);
* only rank 0 validates, checkpoints and writes the run directory (:func:`is_lead`).

No gradient is all-reduced by privmed: Opacus does it. :func:`launch` starts the processes for
``--nproc`` and turns a dead process into one clear message.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from privmed.errors import PrivmedError
from privmed.workers import die_with_parent

RANK_DIED = ("training process {rank} of {nproc} stopped ({reason}). The run directory '{out}' keeps the last "
             "finished epoch's checkpoint: continue with the same command plus --resume.")
NPROC_NEEDS_DP = ("--nproc {nproc}: multi-process training runs DP-SGD through Opacus's distributed optimiser; a "
                  "non-private run trains in one process. Give --epsilon (or --noise-multiplier), or leave out "
                  "--nproc.")
NPROC_NOT_POSITIVE = "--nproc {nproc}: give at least 1 process (default 1)."


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def lead(self) -> bool:
        """Rank 0: the process that validates and writes the run directory."""
        return self.rank == 0


def current() -> Ranks:
    """The process group's ranks, or a lone process when none was joined."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def is_lead() -> bool:
    """True in the process that writes (rank 0, or the only process)."""
    return current().lead


def join_from_env(device: str) -> Ranks:
    """Join the process group that ``torchrun`` (or :func:`launch`) describes in the environment
    (``WORLD_SIZE`` > 1); gloo on CPU, NCCL on CUDA. A lone process joins nothing."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return current()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return current()


def resolve_device(name: str) -> str:
    """``auto``: CUDA when available, else CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def rank_device(device: str) -> str:
    """On CUDA each local rank takes its own GPU (``LOCAL_RANK``); elsewhere ``device`` itself."""
    if device == "cuda" and current().world_size > 1:
        local = int(os.environ.get("LOCAL_RANK", current().rank))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def wrap(net: nn.Module) -> nn.Module:
    """``net`` for Opacus's distributed engine: rank 0's weights broadcast, then Opacus's DPDDP, whose
    type tells ``PrivacyEngine`` to use its ``DistributedDPOptimizer``. Unchanged in a lone process."""
    if current().world_size == 1:
        return net
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel

    share_buffers(net)
    return DifferentiallyPrivateDistributedDataParallel(net)


def share_buffers(net: nn.Module) -> None:
    """Rank 0's buffers (e.g. a released feature centre: released once, on rank 0) on every rank."""
    if current().world_size == 1:
        return
    with torch.no_grad():
        for buffer in net.buffers():
            dist.broadcast(buffer.data, 0)


def barrier() -> None:
    """Wait for every rank (a no-op in a lone process)."""
    if current().world_size > 1:
        dist.barrier()


def leave() -> None:
    """Leave the process group (at the end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on this machine now, for the ranks' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn: Callable[..., None], args: tuple, *, nproc: int, out: str) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes of one process group (what ``torchrun`` does); a
    process that dies ends the others and raises one :class:`PrivmedError` naming it."""
    import torch.multiprocessing as mp

    if nproc < 1:
        raise PrivmedError(NPROC_NOT_POSITIVE.format(nproc=nproc))
    port = free_port()
    try:
        mp.start_processes(_child, args=(fn, args, nproc, port), nprocs=nproc, join=True, start_method="spawn")
    except mp.ProcessRaisedException as err:
        first = str(err).strip().splitlines()[-1][:300]
        raise PrivmedError(RANK_DIED.format(rank=err.error_index, nproc=nproc, reason=first, out=out)) from None
    except mp.ProcessExitedException as err:
        reason = f"exit code {err.exit_code}" if err.exit_code is not None else "killed"
        if err.signal_name:
            reason = f"killed by {err.signal_name}"
        raise PrivmedError(RANK_DIED.format(rank=err.error_index, nproc=nproc, reason=reason, out=out)) from None


def _child(rank: int, fn: Callable[..., None], args: tuple, nproc: int, port: int) -> None:
    die_with_parent()  # a rank never outlives the `privmed train --nproc` that started it, however it ends (kill -9)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                       "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    fn(*args)
