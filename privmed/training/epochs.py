"""The classifier's epoch: its loss and augmented views through the engine's one step loop
(:meth:`privmed.privacy.engine.Engine.run_epoch`), the optimiser, and keeping the best epoch on validation."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from privmed.config import RunConfig
from privmed.errors import PrivmedError
from privmed.models import grad_sample_mode_for
from privmed.privacy.engine import Engine, make_plain, make_private
from privmed.progress import progress

from .augment import augmented_views, average_view_gradients
from .average import attach_average
from .inputs import is_feature_model
from .plan import ClassifierPlan


def make_fit(net: nn.Module, x_fit: torch.Tensor, y_fit: torch.Tensor, plan: ClassifierPlan, candidate: int,
         config: RunConfig, device: str) -> Engine:
    """The engine of one candidate: its optimiser and weight average, and Poisson batches of the sampled units,
    by DP-SGD when private, else plain training over the same batches and loss scaling."""
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


def run_epoch(fit: Engine, config: RunConfig, augment: bool, device: str) -> float:
    """One pass over the Poisson batches through the engine's step loop (DP-SGD when private, the same
    batches and loss scaling otherwise), in physical batches that fit in memory; returns the mean loss."""
    backward = _private_backward if fit.private else _plain_backward
    views = config.training.augment_views if augment else 1
    bar = progress(desc="batches", unit="batch", total=len(fit.loader))  # a long 3D epoch is otherwise silent
    loss = fit.run_epoch(lambda x, y: backward(fit, *_views(x.to(device), y.to(device), augment, views), views),
                         physical_batch_size=config.training.physical_batch_size, after_step=bar.update)
    bar.close()
    return loss


def keep_best(best: dict, net: nn.Module, val_auroc: float, candidate: int, epoch: int) -> dict:
    """The (candidate, epoch) with the highest validation AUROC so far (``net``: the validated model)."""
    if val_auroc > best["val_auroc"]:
        return {"val_auroc": val_auroc, "candidate": candidate, "epoch": epoch,
                "state": copy.deepcopy(net.state_dict())}
    return best


def _views(x: torch.Tensor, y: torch.Tensor, augment: bool, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    return augmented_views(x, y, views=views) if augment else (x, y)


def _private_backward(fit: Engine, x: torch.Tensor, y: torch.Tensor, views: int) -> float:
    """Opacus's mean loss; each sample's per-sample gradient is the mean of its views' before clipping."""
    loss = fit.criterion(fit.module(x), y)
    loss.backward()
    if views > 1:
        average_view_gradients(fit.optimizer.params, views=views)
    return float(loss.detach())


def _plain_backward(fit: Engine, x: torch.Tensor, y: torch.Tensor, views: int) -> float:
    """What Opacus computes without clipping or noise: the loss summed over samples (mean over labels and
    views) divided by the expected batch, so DP-SGD with no noise and no clip is this exactly."""
    expected = fit.schedule.expected_batch
    loss = fit.criterion(fit.module(x), y) / (expected * y.shape[1] * views)
    loss.backward()
    return float(loss.detach()) * expected / max(len(x) // views, 1)


# --------------------------------------------------------------------------- bookkeeping

def mean_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y[:, j], scores[:, j]) for j in range(y.shape[1])]))
