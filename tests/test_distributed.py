"""Multi-process DP-SGD (gloo, 2 CPU processes): same model as one process, noise once, same epsilon, resumable."""

import json
import math
import os
import time

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from privmed import rundir
from privmed.cli import main
from privmed.config import config_from_dict
from privmed.errors import PrivmedError
from privmed.privacy.units import PrivacyUnit
from privmed.privacy import distributed
from privmed.training import trainer
from privmed.privacy.engine import make_private, plan_schedule
from privmed.models import build_model
from privmed.training.trainer import seed_everything, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def tiny_config(root, out, epochs=1, **privacy):
    return config_from_dict({
        "out": str(out),
        "data": {"path": str(root), "image_size": 32},
        "model": {"name": "resnet9_small"},
        "privacy": privacy,
        "training": {"epochs": epochs, "batch_size": 32, "physical_batch_size": 16, "lr": 0.05, "augment": False,
                     "bootstrap_resamples": 100, "seed": 1, "device": "cpu"},
    })


def final_weights(out):
    return torch.load(out / rundir.CHECKPOINTS / rundir.LAST, weights_only=False)["engine"]["module"]


def privacy(out):
    return json.loads((out / rundir.PRIVACY).read_text())


@pytest.mark.slow
def test_two_processes_train_the_one_process_model_with_noise_off(phantom_root, tmp_path):
    """Replayable sampling: every rank draws the one-process batches and keeps its share of the units."""
    recipe = {"noise_multiplier": 0.0, "clip_norm": math.inf, "replayable_noise": True}
    one = train(tiny_config(phantom_root, tmp_path / "one", **recipe))
    two = trainer.train_processes(tiny_config(phantom_root, tmp_path / "two", **recipe), resume=False, nproc=2)
    a, b = final_weights(one), final_weights(two)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k
    seed_everything(1)  # the test can fail: training moved the weights away from their initial values
    initial = build_model("resnet9_small", spatial_dims=2, in_channels=1, num_outputs=1, image_size=32).state_dict()
    assert any(not torch.allclose(a[k], initial[k], rtol=1e-4, atol=1e-5) for k in a)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@pytest.mark.slow
def test_two_processes_spend_the_one_process_epsilon(phantom_root, tmp_path):
    one = privacy(train(tiny_config(phantom_root, tmp_path / "one", epsilon=3.0)))
    two = privacy(trainer.train_processes(tiny_config(phantom_root, tmp_path / "two", epsilon=3.0),
                                              resume=False, nproc=2))
    assert two["epsilon"] == one["epsilon"] <= 3.0
    assert [(m["noise_multiplier"], m["sample_rate"], m["steps"]) for m in two["stages"]] == \
        [(m["noise_multiplier"], m["sample_rate"], m["steps"]) for m in one["stages"]]


# --------------------------------------------------------------------------- noise is added once


SIGMA, CLIP, N, BATCH, WIDTH = 1.0, 1.0, 400, 40, 4000


def _one_noisy_step() -> torch.Tensor:
    """One DP-SGD step on zero inputs: the gradient is zero, so the update is the noise alone."""
    torch.manual_seed(0)
    net = nn.Linear(WIDTH, 1, bias=False)
    start = net.weight.detach().clone()
    unit = PrivacyUnit("image", torch.arange(N).numpy(), 1)
    schedule = plan_schedule(unit, batch_size=BATCH, epochs=1)
    fit = make_private(net, torch.optim.SGD(net.parameters(), lr=1.0),
                       TensorDataset(torch.zeros(N, WIDTH), torch.zeros(N, 1)), unit=unit, schedule=schedule,
                       noise_multiplier=SIGMA, clip_norm=CLIP, accountant="rdp")
    x, y = next(iter(fit.loader))
    fit.optimizer.zero_grad()
    fit.criterion(fit.module(x), y).backward()
    fit.optimizer.step()
    return (net.weight.detach() - start).flatten()


def _noisy_step_rank(result_file: str) -> None:
    distributed.join_from_env("cpu")
    update = _one_noisy_step()
    if distributed.is_lead():
        torch.save(update, result_file)
    distributed.leave()


def test_the_noise_is_added_once_across_processes(tmp_path):
    """Update std is sigma x clip / expected batch with two processes, as with one (not sqrt(2) x that)."""
    expected = SIGMA * CLIP / BATCH
    alone = _one_noisy_step().std().item()
    distributed.launch(_noisy_step_rank, (str(tmp_path / "update.pt"),), nproc=2, out=str(tmp_path))
    together = torch.load(tmp_path / "update.pt").std().item()
    assert alone == pytest.approx(expected, rel=0.05)
    assert together == pytest.approx(expected, rel=0.05)  # twice the noise would be 1.41 x expected


# --------------------------------------------------------------------------- a dead rank


def _die_in_second_epoch(config) -> None:
    import privmed.training.trainer as trainer

    original, calls = trainer.run_epoch, []

    def run_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 and distributed.current().rank == 1:
            last = trainer.Path(config.out) / rundir.CHECKPOINTS / rundir.LAST
            for _ in range(600):  # rank 0 checkpoints the first epoch while this rank goes on
                if last.is_file() and (trainer.Path(config.out) / rundir.HISTORY).is_file():
                    break
                time.sleep(0.1)
            os._exit(3)
        return original(*args, **kwargs)

    trainer.run_epoch = run_epoch
    trainer._train_rank(config, False)


@pytest.mark.slow
def test_a_dead_process_ends_the_run_with_a_message_and_it_resumes(phantom_root, tmp_path):
    config = tiny_config(phantom_root, tmp_path / "run", epochs=2, epsilon=3.0)
    with pytest.raises(PrivmedError, match=r"training process 1 of 2 stopped \(exit code 3\).*--resume"):
        distributed.launch(_die_in_second_epoch, (config,), nproc=2, out=config.out)
    assert not (tmp_path / "run" / rundir.METRICS).exists()
    out = tmp_path / "run"  # the command line, as the message says: the same command plus --resume
    assert main(["train", "--config", str(out / rundir.CONFIG), "--resume", "--nproc", "2"]) == 0
    ledger = privacy(out)
    assert ledger["private"] and ledger["epsilon"] <= 3.0
    history = (out / rundir.HISTORY).read_text().splitlines()
    assert len(history) == 3  # header + the two epochs, the first one from before the crash
    assert ledger["steps"] == 2 * round(1 / ledger["sample_rate"])  # no step recounted or lost


def test_rank_shards_split_each_poisson_batch_by_patient():
    """Each patient's rows go to one rank; the shards of ranks drawing one stream make up the one-process batch."""
    import numpy as np

    from privmed.privacy.units import GroupPoissonSampler
    from privmed.privacy.engine import RankShard

    groups = np.repeat(np.arange(30), 3)  # 30 patients, 3 images each, at most 2 a step
    unit = PrivacyUnit("patient", groups, 2)

    def sampler():
        return GroupPoissonSampler(unit, sample_rate=0.3, steps_per_epoch=20,
                                   generator=torch.Generator().manual_seed(5))

    whole = list(sampler())
    shards = [list(RankShard(sampler(), rank=r, world_size=2)) for r in range(2)]
    assert all(len(s) == len(whole) == 20 for s in shards)
    for batch, mine, theirs in zip(whole, *shards):
        assert sorted(mine + theirs) == sorted(batch)
        assert {int(g) % 2 for g in groups[mine]} <= {0} and {int(g) % 2 for g in groups[theirs]} <= {1}
    assert sum(len(b) for b in whole) > 0
