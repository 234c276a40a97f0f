"""Checks of a ``privmed train`` run that can be made before any work: where it writes, its batch, its epsilon.

They repeat, early and cheaply, what training would otherwise find out only after reading the data,
extracting features or training a first epoch: an output folder that cannot be written or holds other
files, a logical batch larger than the training split, a target epsilon that no noise can reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from privmed import rundir
from privmed.config import RunConfig
from privmed.errors import BATCH_LARGER_THAN_DATA, BAD_DEVICE, FOLDER_NOT_EMPTY, PrivmedError

from .devices import cuda_count

if TYPE_CHECKING:
    from privmed.data.sources import Dataset
    from privmed.privacy.units import PrivacyUnit


def check_before_training(config: RunConfig, *, resume: bool) -> "Dataset | None":
    """Refuse, before anything is written, what :func:`~privmed.training.trainer.train` would
    refuse late. A resumed run keeps its schedule and noise, so only its folder is checked.
    Returns the data when it had to read it (for ``train(..., data=...)``, so it is read once)."""
    out = Path(config.out)
    rundir.check_writable(out)
    check_device(config.training.device)
    if resume:
        return None
    if not rundir.is_new_or_empty(out) and not (out / rundir.CONFIG).exists():
        raise PrivmedError(FOLDER_NOT_EMPTY.format(path=out, what="a run's files", option="--out"))
    return check_schedule(config)


def check_run(config: RunConfig, *, resume: bool) -> "Dataset":
    """What ``privmed check`` runs: every check of :func:`check_before_training`, the output folder as training
    checks it (a run there, ``--resume``), the data and the synthetic folder read and checked also where training
    would read them later (a resumed run, synthetic images in the sampled set), and the model built (its arguments
    and weights file). Trains nothing and writes nothing; returns the data."""
    from privmed.data.sources import load_dataset
    from privmed.models import build_for_run

    from .checkpoint import check_out_dir
    from .start import synthetic_source

    data = check_before_training(config, resume=resume)
    check_out_dir(Path(config.out), config, resume=resume)  # a run there, --resume with none, a changed config
    if data is None:
        data = load_dataset(config.data, stream=None)
    synthetic_source(config, data)
    build_for_run(config, num_outputs=len(data.label_names))  # model.args, the weights file, freeze
    return data


def check_schedule(config: RunConfig) -> "Dataset | None":
    """The logical batch fits the training split, and the target epsilon is reachable by DP-SGD alone
    (earlier stages only spend more; skipped when synthetic images are mixed into the sampled set).
    Returns the data it read (None when it read none)."""
    from privmed.data.sources import load_dataset
    from privmed.privacy.plan import StageSpec, check_plan, protected_unit
    from privmed.privacy.engine import plan_schedule

    if config.synthetic.path is not None and config.synthetic.use == "augment":
        return None  # synthetic images join the Poisson-sampled set: the trainer plans that schedule
    if config.synthetic.path is not None and config.synthetic.use == "only":
        return None  # the private training split is not sampled at all
    data = load_dataset(config.data, stream=None)
    train = data.split("train")
    p = config.privacy
    unit = protected_unit(p, patient_ids=train.patient_ids, n=len(train))
    candidates = config.tune.candidates(config.training)
    largest = max(c.batch_size for c in candidates)
    if largest > unit.contributions:
        raise PrivmedError(BATCH_LARGER_THAN_DATA.format(batch=largest, n=unit.contributions))
    schedules = [plan_schedule(unit, batch_size=c.batch_size, epochs=c.epochs) for c in candidates]
    check_plan(p, unit=unit, stages=[StageSpec(f"dp_sgd_candidate_{c}", s.sample_rate, s.steps)
                                     for c, s in enumerate(schedules)])
    return data


def privacy_unit(config: RunConfig, *, data: "Dataset | None" = None) -> "tuple[PrivacyUnit, float]":
    """Whom ``privmed train`` with ``config`` protects, and at what delta, as ``privmed check`` prints them (public
    API): the unit of privacy on the training split (``privacy.unit``, else the patient where the data has patient
    ids, else the image) and ``privacy.delta``, else its default 1 / (10 N) for the N units. Reads ``config.data``
    unless ``data`` (what :func:`~privmed.data.sources.load_dataset` returned for it) is given. Training refuses a
    delta of 1/N or more; this only states it."""
    from privmed.data.sources import load_dataset
    from privmed.privacy.plan import delta_for, protected_unit

    train = (data if data is not None else load_dataset(config.data, stream=None)).split("train")
    unit = protected_unit(config.privacy, patient_ids=train.patient_ids, n=len(train))
    return unit, delta_for(unit, config.privacy.delta, check=False)


def check_device(name: str) -> None:
    """``auto``, or a device torch knows and this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise PrivmedError(BAD_DEVICE.format(device=name, reason=f"not a device name ({type(err).__name__})")) from None
    if device.type == "cuda":
        count = cuda_count()
        if count == 0:
            raise PrivmedError(BAD_DEVICE.format(device=name, reason="this machine has no CUDA GPU"))
        if device.index is not None and device.index >= count:
            raise PrivmedError(BAD_DEVICE.format(device=name, reason=f"this machine has {count} CUDA GPU(s)"))
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise PrivmedError(BAD_DEVICE.format(device=name, reason="MPS is not available here"))
    elif device.type not in ("cpu", "cuda", "mps"):
        raise PrivmedError(BAD_DEVICE.format(device=name, reason=f"privmed does not train on '{device.type}'"))
