"""privmed: privacy-preserving medical-image AI.

Train diagnostic classifiers with a formal differential-privacy guarantee
(DP-SGD through Opacus), evaluate them with bootstrap confidence intervals,
and measure what privacy costs in accuracy and fairness.

The Python API is the names in ``__all__`` (docs/api.md documents them, with examples the tests run)::

    from privmed import config_from_dict, read_record, train
    run = train(config_from_dict({"data": {}, "privacy": {"epsilon": 3}, "out": "runs/phantom"}))  # no path: phantom
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

#: public name -> the module that defines it ("module:attribute" where the public name differs)
_PUBLIC = {
    # train and evaluate a classifier
    "train": "privmed.training.trainer",  # train(RunConfig) -> run folder
    "RunConfig": "privmed.config",
    "config_from_dict": "privmed.config",
    "DataConfig": "privmed.config",
    "load_dataset": "privmed.data.sources",  # a data folder as privmed reads it: images, labels, splits, patients
    "build_model": "privmed.models.registry",
    "privacy_unit": "privmed.training.preflight",  # whom a run protects and its delta, as `privmed check` says
    "evaluate_run": "privmed.evaluation.external",
    "compare_runs": "privmed.evaluation.external",
    # train by a run's recipe on tensors already in memory (frozen features, audits' shadows)
    "model_inputs": "privmed.training.inputs",  # what the trained part sees: frozen features, or the images
    "train_in_memory": "privmed.training.in_memory",
    "FittedModel": "privmed.training.in_memory",
    # read a run (or a generator's, or samples') folder
    "read_record": "privmed.rundir",  # privacy.json: epsilon, delta, unit, every accounted stage
    "read_metrics": "privmed.rundir",  # metrics.json: each split's metrics with CIs, the kept checkpoint
    "run_finished": "privmed.rundir",
    # audit
    "audit_run": "privmed.audit.membership",  # membership audit of a run (AuditConfig says how)
    "AuditConfig": "privmed.audit.config",
    "largest_showable_bound": "privmed.audit.one_run",  # an audit's power: a perfect attack's bound
    "audit_generator": "privmed.audit.generator",
    "dcr_membership": "privmed.audit.synthetic",
    # synthetic images: the phantom, DP generators, private evolution
    "PhantomSpec": "privmed.data.phantom",
    "write_phantom_dataset": "privmed.data.phantom",
    "GeneratorConfig": "privmed.synth.config",
    "generator_config_from_dict": "privmed.synth.config",
    "train_generator": "privmed.synth.training",
    "sample_generator": "privmed.synth.sample:sample",
    "synthetic_images": "privmed.synth.sample",
    "evaluate_synthetic": "privmed.synth.quality",
    "evolve_config_from_dict": "privmed.synth.config",
    "evolve": "privmed.synth.evolve",
    # studies
    "run_study": "privmed.study.runner",
    "StudyConfig": "privmed.study.config",
    "load_study": "privmed.study.config",
    "study_from_dict": "privmed.study.config",
    # the accountant (what epsilon a set of subsampled Gaussian releases spends)
    "Mechanism": "privmed.privacy.accounting",
    "epsilon_for": "privmed.privacy.accounting",
    "calibrate_noise": "privmed.privacy.accounting",
    "PrivmedError": "privmed.errors",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562) and keep the name here."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'privmed' has no attribute {name!r}")
    module, _, attribute = _PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
