"""The weights' exponential moving average (training.ema): the hand formula, once per logical step, free."""

import math

import pytest
import torch
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import TensorDataset

from privmed.config import config_from_dict
from privmed.errors import PrivmedError
from privmed.privacy.units import resolve_unit
from privmed.training.average import attach_average, evaluated
from privmed.training.private import make_private, plan_schedule, spent_steps


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
    with BatchMemoryManager(data_loader=fit.loader, max_physical_batch_size=4, optimizer=fit.optimizer) as batches:
        physical = 0
        for xb, yb in batches:
            fit.optimizer.zero_grad()
            fit.criterion(fit.module(xb), yb).backward()
            fit.optimizer.step()
            physical += 1
    steps = spent_steps(fit.engine)
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
    assert last["average"] is not None and int(last["average"]["n_averaged"]) > 0
    averaged = {k.removeprefix("module."): v for k, v in last["average"].items() if k.startswith("module.")}
    # one epoch: the kept model is that epoch's average, not its last raw weights
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    assert any(not torch.equal(best[k], last["model"][k]) for k in best if best[k].is_floating_point())
    assert "ema: 0.9" in (out / rundir.CONFIG).read_text()
    privacy = rundir.read_record(out)
    assert math.isfinite(privacy.epsilon) and privacy.epsilon <= 3.0  # the average costs nothing more
