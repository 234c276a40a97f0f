"""The weights' exponential moving average (training.ema): the hand formula, once per logical step, free."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from privmed.config import config_from_dict
from privmed.errors import PrivmedError
from privmed.privacy.units import resolve_unit
from privmed.training.average import attach_average, evaluated
from privmed.privacy.engine import make_private, plan_schedule


def test_the_average_follows_the_hand_formula_step_by_step():
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    average = attach_average(net, optimizer, decay=0.8)
    assert evaluated(net, average) is net  # nothing averaged before the first step
    expected = None
    for _ in range(4):
        optimizer.zero_grad()
        net(torch.randn(5, 3)).pow(2).mean().backward()
        optimizer.step()
        now = net.weight.detach().clone()
        expected = now if expected is None else 0.8 * expected + 0.2 * now
    assert torch.allclose(evaluated(net, average).weight, expected, atol=1e-6)
    assert not torch.allclose(evaluated(net, average).weight, net.weight)


def test_off_is_no_average():
    net = nn.Linear(2, 1)
    assert attach_average(net, torch.optim.SGD(net.parameters(), lr=0.1), decay=0.0) is None


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_the_config_refuses_a_decay_outside_zero_to_one(decay):
    with pytest.raises(PrivmedError, match="ema"):
        config_from_dict({"training": {"ema": decay}})


def test_under_dp_sgd_the_average_moves_once_per_logical_step_not_per_physical_batch():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64, 1)).float()
    unit = resolve_unit("image", None, max_images_per_patient=1, n=64)
    schedule = plan_schedule(unit, batch_size=32, epochs=1)
    net = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    average = attach_average(net, optimizer, decay=0.9)
    fit = make_private(net, optimizer, TensorDataset(x, y), unit=unit, schedule=schedule, noise_multiplier=1.0,
                       clip_norm=1.0, accountant="rdp")
    physical = []

    def backward(xb, yb):
        loss = fit.criterion(fit.module(xb), yb)
        loss.backward()
        physical.append(len(xb))
        return float(loss.detach())

    fit.run_epoch(backward, physical_batch_size=4)
    physical, steps = len(physical), fit.spent_steps
    assert steps == schedule.steps and physical > steps  # several physical batches per logical step
    assert int(average.n_averaged) == steps
    fit.close()


@pytest.mark.slow
def test_a_run_with_ema_keeps_the_average_and_states_it(phantom_root, tmp_path):
    from privmed import rundir
    from privmed.training.trainer import train

    def config(out, ema):
        return config_from_dict({
            "out": str(out), "data": {"path": str(phantom_root), "image_size": 32},
            "model": {"name": "resnet9_small"}, "privacy": {"epsilon": 3.0},
            "training": {"epochs": 1, "batch_size": 32, "physical_batch_size": 16, "lr": 0.05, "augment": False,
                         "bootstrap_resamples": 100, "seed": 1, "ema": ema}})

    out = train(config(tmp_path / "ema", 0.9))
    best = torch.load(out / rundir.CHECKPOINTS / rundir.BEST, weights_only=False)["model"]
    last = torch.load(out / rundir.CHECKPOINTS / rundir.LAST, weights_only=False)
    assert last["engine"]["average"] is not None and int(last["engine"]["average"]["n_averaged"]) > 0
    averaged = {k.removeprefix("module."): v for k, v in last["engine"]["average"].items() if k.startswith("module.")}
    # one epoch: the kept model is that epoch's average, not its last raw weights
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    assert any(not torch.equal(best[k], last["engine"]["module"][k]) for k in best if best[k].is_floating_point())
    assert "ema: 0.9" in (out / rundir.CONFIG).read_text()
    privacy = rundir.read_record(out)
    assert math.isfinite(privacy.epsilon) and privacy.epsilon <= 3.0  # the average costs nothing more


# --------------------------------------------------------------------------- augmentation multiplicity


def test_averaged_view_gradients_are_the_gradient_of_each_samples_mean_loss_over_its_views():
    from opacus import GradSampleModule

    from privmed.training.augment import average_view_gradients

    torch.manual_seed(0)
    views, batch = 3, 4
    x, y = torch.randn(views * batch, 5), torch.randint(0, 2, (views * batch, 1)).float()
    net = nn.Linear(5, 1)
    module = GradSampleModule(net, loss_reduction="mean")
    nn.BCEWithLogitsLoss()(module(x), y).backward()
    average_view_gradients(net.parameters(), views=views)
    for i in range(batch):  # by hand: sample i's views are rows i, i + B, i + 2B
        probe = nn.Linear(5, 1)
        probe.load_state_dict(net.state_dict())
        rows = [i + v * batch for v in range(views)]
        nn.BCEWithLogitsLoss()(probe(x[rows]), y[rows]).backward()
        assert torch.allclose(net.weight.grad_sample[i], probe.weight.grad, atol=1e-6)
        assert torch.allclose(net.bias.grad_sample[i], probe.bias.grad, atol=1e-6)


def test_views_need_augmentation_and_are_at_least_one():
    with pytest.raises(PrivmedError, match="augment_views"):
        config_from_dict({"training": {"augment": False, "augment_views": 4}})
    with pytest.raises(PrivmedError, match="augment_views"):
        config_from_dict({"training": {"augment_views": 0}})


@pytest.mark.slow
def test_identical_views_train_the_one_view_model(phantom_root, tmp_path, monkeypatch):
    """With augmentation the identity, K views of an image have one gradient: K = 4 must train exactly the
    K = 1 model (zero noise, infinite clip, the same replayable batches); with real augmentation it differs."""
    from privmed import rundir
    from privmed.training import augment
    from privmed.training.trainer import train

    def run(out, views):
        config = config_from_dict({
            "out": str(out), "data": {"path": str(phantom_root), "image_size": 32}, "model": {"name": "resnet9_small"},
            "privacy": {"noise_multiplier": 0.0, "clip_norm": 1.0, "replayable_noise": True},
            "training": {"epochs": 1, "batch_size": 32, "physical_batch_size": 16, "lr": 0.05, "augment": True,
                         "augment_views": views, "bootstrap_resamples": 100, "seed": 1,
                         # on a GPU the stacked views pick other convolution kernels, whose rounding differs
                         "device": "cpu"}})
        return torch.load(train(config) / rundir.CHECKPOINTS / rundir.LAST, weights_only=False)["engine"]["module"]

    monkeypatch.setattr(augment, "augment_batch", lambda x, generator=None: x)
    one, four = run(tmp_path / "k1", 1), run(tmp_path / "k4", 4)
    assert all(torch.allclose(one[k], four[k], rtol=1e-4, atol=1e-5) for k in one)
    monkeypatch.undo()
    augmented = run(tmp_path / "k4aug", 4)
    assert any(not torch.allclose(one[k], augmented[k], rtol=1e-4, atol=1e-5) for k in one)
