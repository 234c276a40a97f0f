"""privmed: privacy-preserving medical-image AI.

Train diagnostic classifiers with a formal differential-privacy guarantee
(DP-SGD through Opacus), evaluate them with bootstrap confidence intervals,
and measure what privacy costs in accuracy and fairness.

The Python API is the names in ``__all__``::

    from privmed import config_from_dict, read_record, train
    run = train(config_from_dict({"data": {"path": "phantom"}, "privacy": {"epsilon": 3}}))
    print(read_record(run).epsilon)

They are loaded on first use (PEP 562), so ``import privmed`` does not import torch.
This package root is the facade over every layer of docs/architecture.md: the table
below names modules as strings, resolved by :func:`importlib.import_module`, and no
module of privmed imports these names from here (each imports the module that owns it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "train": "privmed.training.trainer",  # train(RunConfig) -> run folder
    "evaluate_run": "privmed.evaluation.external",
    "compare_runs": "privmed.evaluation.external",
    "audit_run": "privmed.audit.membership",  # membership audit of a run (AuditConfig says how)
    "audit_generator": "privmed.audit.generator",
    "AuditConfig": "privmed.audit.config",
    "run_study": "privmed.study.runner",
    "RunConfig": "privmed.config",
    "config_from_dict": "privmed.config",
    "StudyConfig": "privmed.study.config",
    "load_study": "privmed.study.config",
    "study_from_dict": "privmed.study.config",
    "read_record": "privmed.rundir",
    "PrivmedError": "privmed.errors",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562) and keep the name here."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'privmed' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
