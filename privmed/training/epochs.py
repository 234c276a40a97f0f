"""One epoch of Poisson batches: through Opacus when private, plain training with the same
sampling and loss scaling otherwise; the optimiser, and keeping the best epoch on validation."""

from __future__ import annotations

import copy

import numpy as np
import torch
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import TensorDataset

from privmed.config import RunConfig
from privmed.errors import PrivmedError
from privmed.models import grad_sample_mode_for
from privmed.progress import progress

from .augment import augmented_views, average_view_gradients
from .average import attach_average
from .inputs import is_feature_model
from .plan import ClassifierPlan
from .private import PrivateTraining, Schedule, make_plain, make_private


def make_fit(net: nn.Module, x_fit: torch.Tensor, y_fit: torch.Tensor, plan: ClassifierPlan, candidate: int,
         config: RunConfig, device: str) -> PrivateTraining:
    """Optimiser and Poisson loader over the sampled units for one candidate, through the
    private-training core when private; otherwise plain training with the same loader and
    loss scaling (the returned ``engine`` is then None)."""
    net.train()
    optimizer = make_optimizer(net, config)
    average = attach_average(net, optimizer, decay=config.training.ema)
    dataset, schedule, p = TensorDataset(x_fit, y_fit), plan.schedules[candidate], config.privacy
    if p.private:
        check_views(config)
        fit = make_private(net, optimizer, dataset, unit=plan.sampled, schedule=schedule,
                            noise_multiplier=plan.noise_multiplier, clip_norm=p.clip_norm, accountant=p.accountant,
                            grad_sample_mode=grad_sample_mode_for(config.model.name), replay_seed=plan.replay_seed,
                            device=device, num_workers=config.training.num_workers)
    else:
        fit = make_plain(net, optimizer, dataset, unit=plan.sampled, schedule=schedule,
                         criterion=nn.BCEWithLogitsLoss(reduction="sum"), replay_seed=plan.replay_seed,
                         num_workers=config.training.num_workers)
    fit.average = average
    return fit


def make_optimizer(net: nn.Module, config: RunConfig, *, lr: float | None = None) -> torch.optim.Optimizer:
    t = config.training
    lr = t.lr if lr is None else lr
    params = [p for p in net.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)

# --------------------------------------------------------------------------- one epoch


def augments(config: RunConfig, model: nn.Module) -> bool:
    """Augmentation applies to images, never to precomputed features."""
    return config.training.augment and not is_feature_model(model)


def check_views(config: RunConfig) -> None:
    """Averaging views' gradients needs Opacus's per-sample gradients, which ghost clipping never forms."""
    if config.training.augment_views > 1 and grad_sample_mode_for(config.model.name) == "ghost":
        raise PrivmedError(f"training.augment_views = {config.training.augment_views} needs per-sample gradients, "
                           f"which {config.model.name}'s ghost clipping does not form; use augment_views 1.")


def run_epoch(fit: PrivateTraining, schedule: Schedule, config: RunConfig, augment: bool, device: str) -> float:
    """One pass over Poisson batches, through Opacus when private; returns the mean loss."""
    if fit.engine is not None:
        return epoch_private(fit.module, fit.optimizer, fit.criterion, fit.loader, config, augment, device)
    return epoch_nonprivate(fit.module, fit.optimizer, fit.criterion, fit.loader, schedule.expected_batch,
                             config, augment, device)


def keep_best(best: dict, net: nn.Module, val_auroc: float, candidate: int, epoch: int) -> dict:
    """The (candidate, epoch) with the highest validation AUROC so far (``net``: the validated model)."""
    if val_auroc > best["val_auroc"]:
        return {"val_auroc": val_auroc, "candidate": candidate, "epoch": epoch,
                "state": copy.deepcopy(net.state_dict())}
    return best


def _batches(batches, *, total: int | None):
    """Progress inside an epoch (a long 3D or CNN epoch is otherwise a frozen bar; in a log, a few lines)."""
    return progress(batches, desc="batches", unit="batch", total=total)


def epoch_nonprivate(net, optimizer, criterion, loader, expected_batch: int, config: RunConfig, augment: bool,
                      device: str) -> float:
    """Logical Poisson batches, gradient accumulated over physical chunks, loss summed / expected batch."""
    total, count, views = 0.0, 0, config.training.augment_views if augment else 1
    for xb, yb in _batches(loader, total=len(loader)):
        optimizer.zero_grad(set_to_none=False)
        for xc, yc in zip(xb.split(config.training.physical_batch_size), yb.split(config.training.physical_batch_size)):
            xc, yc = xc.to(device), yc.to(device)
            if augment:
                xc, yc = augmented_views(xc, yc, views=views)
            # mean over labels (and views), sum over samples, divided by the expected batch: what Opacus computes
            loss = criterion(net(xc), yc) / (expected_batch * yc.shape[1] * views)
            loss.backward()
            total, count = total + loss.item() * expected_batch, count + len(xc) // views
        optimizer.step()
    return total / count if count else float("nan")


def epoch_private(net_dp, optimizer, criterion, loader, config: RunConfig, augment: bool, device: str) -> float:
    """DP-SGD: Opacus clips per-sample gradients, adds noise once per logical batch (also to an empty one)."""
    total, count, views = 0.0, 0, config.training.augment_views if augment else 1
    with BatchMemoryManager(data_loader=loader, max_physical_batch_size=config.training.physical_batch_size,
                            optimizer=optimizer) as batches:
        for xb, yb in _batches(batches, total=None):
            optimizer.zero_grad()
            if len(xb) == 0:
                noise_only_step(optimizer)
                continue
            xb, yb = xb.to(device), yb.to(device)
            if augment:
                xb, yb = augmented_views(xb, yb, views=views)
            loss = criterion(net_dp(xb), yb)
            loss.backward()
            if views > 1:
                average_view_gradients(optimizer.params, views=views)
            optimizer.step()
            total, count = total + float(loss.detach()) * len(xb), count + len(xb)
    return total / max(count, 1)


def noise_only_step(optimizer) -> None:
    """The DP-SGD step of an empty Poisson batch (no unit sampled): no gradient, only the Gaussian noise,
    and the accountant's step as for any other, which is what Opacus does with the empty per-sample
    gradients its hooks give such a batch. Expanded weights cannot run a model on zero samples, so the
    empty per-sample gradients are set here and the model is not called."""
    for p in optimizer.params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
    optimizer.step()


# --------------------------------------------------------------------------- bookkeeping

def mean_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y[:, j], scores[:, j]) for j in range(y.shape[1])]))
