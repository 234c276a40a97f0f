"""The recipe of ``privmed train`` on tensors in memory, without a run directory (audits' shadow models)."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from privmed.config import RunConfig
from privmed.errors import PrivmedError
from privmed.evaluation.predictions import predict
from privmed.privacy.accounting import Mechanism
from privmed.privacy.ledger import PrivacyLedger
from privmed.privacy.distributed import resolve_device
from privmed.privacy.plan import protected_unit

from .average import evaluated
from .centre import public_centre_inputs, releases_centre
from .epochs import augments, keep_best, make_fit, mean_auroc, run_epoch
from .inputs import trainable_part
from .plan import plan_privacy, start_ledger
from .start import prepare_start, seed_everything


@dataclass
class FittedModel:
    """A model trained in memory by :func:`train_in_memory`, with what its training spent."""

    net: nn.Module
    ledger: PrivacyLedger
    best_epoch: int


def train_in_memory(config: RunConfig, *, build: Callable[[], nn.Module], x_train: torch.Tensor,
                    y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                    groups: np.ndarray | None = None, device: str | None = None) -> FittedModel:
    """The recipe of :func:`train` on tensors already in memory, without a run directory (public API).

    ``build`` makes a fresh model; it is called after seeding, so the initial weights, like
    everything else that is not part of the guarantee, follow from ``config.training.seed``
    and not from the caller's RNG state (the same model in any process). ``x_*`` are the
    model's :func:`model_inputs` (frozen features for a model with a frozen front end, else
    the images), ``y_*`` float labels (N, labels); ``groups`` the patient id of each training
    row (None: none known; the unit of privacy is then the image, as for data without ids). Same unit of privacy,
    privacy plan (noise calibrated for these units; the feature centre released and composed
    as ``privacy.center`` says), sampling, optimiser, clipping and checkpoint selection (the
    best val AUROC) as a run, so shadow models for a membership audit are trained exactly as
    the target was. ``config.data`` is not read (the tensors are the data); ``config.model.name``
    still picks Opacus's per-sample-gradient mode. ``device`` defaults to the run's
    (:func:`shadow_device`). Returns the trained part of the model (``net``), its ledger
    (``ledger.epsilon``) and the kept epoch.
    """
    device = device or shadow_device(config.training.device)
    seed_everything(config.training.seed)
    model = build()
    if config.synthetic.path is not None:
        raise PrivmedError("retraining a run that used synthetic images in memory (membership audits) is not "
                           "supported yet; audit a run trained on real data, or the generator with "
                           "`privmed audit-synthetic`.")
    net = trainable_part(model).to(device)
    p = config.privacy
    unit = protected_unit(p, patient_ids=groups, n=len(x_train))
    candidates = config.tune.candidates(config.training)  # a private search, as the run made it (or one recipe)
    public = public_centre_inputs(model, config, device=device)
    plan = plan_privacy(config, unit, unit, candidates, checkpoint=None,
                        has_center=releases_centre(net, synthetic=None, public=public, source=p.center))
    ledger = start_ledger(config, plan, n=len(x_train), synthetic=None)
    prepare_start(net, x_train, plan, ledger, config, None, None, device, public)
    initial = copy.deepcopy(net.state_dict())
    best = {"val_auroc": -math.inf, "candidate": 0, "epoch": config.training.epochs, "state": None}
    for c, training in enumerate(candidates):
        net.load_state_dict(initial)
        best = _fit_candidate(net, model, dataclasses.replace(config, training=training), plan, c, ledger, best,
                              (x_train, y_train, x_val, y_val), device)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    return FittedModel(net.eval(), ledger, best["epoch"])


def _fit_candidate(net: nn.Module, model: nn.Module, config: RunConfig, plan, c: int, ledger: PrivacyLedger,
                   best: dict, tensors: tuple, device: str) -> dict:
    """Train candidate ``c`` of the plan from the net's weights, its epochs validated against ``best``; its
    DP-SGD stage goes into the ledger. Returns the best so far."""
    x_train, y_train, x_val, y_val = tensors
    fit = make_fit(net, x_train, y_train, plan, c, config, device)
    augment = augments(config, model)
    for epoch in range(config.training.epochs):
        net.train()
        run_epoch(fit, config, augment, device)
        kept = evaluated(net, fit.average)
        best = keep_best(best, kept, mean_auroc(y_val.numpy(), predict(kept, x_val, device=device)), c, epoch + 1)
    if fit.private:
        ledger.mechanisms.append(Mechanism("dp_sgd", plan.noise_multiplier, plan.schedules[c].sample_rate,
                                           fit.spent_steps))
    fit.close()
    return best


def shadow_device(name: str) -> str:
    """The run's ``training.device`` where this machine has it (a run trained on a GPU can be audited
    on a machine without one), else what ``auto`` picks."""
    from .preflight import check_device

    try:
        check_device(name)
    except PrivmedError:
        return resolve_device("auto")
    return resolve_device(name)
