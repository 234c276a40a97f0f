"""A private hyper-parameter search: every candidate's DP-SGD is composed into the run's epsilon."""

import json
from pathlib import Path

import pytest
from prv_accountant import PRVAccountant as ReferencePRV
from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism

from privmed import rundir
from privmed.config import config_from_dict
from privmed.errors import PrivmedError
from privmed.training.trainer import train


def tuned_config(root, out, tune, **privacy):
    return config_from_dict({
        "out": str(out), "data": {"path": str(root), "image_size": 32}, "model": {"name": "resnet9_small"},
        "privacy": privacy, "tune": tune,
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "augment": False, "bootstrap_resamples": 100,
                     "seed": 1},
    })


@pytest.mark.slow
def test_every_candidate_is_composed_into_the_epsilon(phantom_root, tmp_path):
    out = train(tuned_config(phantom_root, tmp_path / "t", {"lr": [0.01, 0.05], "epochs": [1, 2]}, epsilon=3.0))
    privacy = json.loads((out / rundir.PRIVACY).read_text())
    stages = privacy["stages"]
    assert len(stages) == 4 and sum(s["stage"] == "dp_sgd" for s in stages) == 1
    assert len({s["noise_multiplier"] for s in stages}) == 1
    assert [s["steps"] for s in stages] == [stages[0]["steps"], 2 * stages[0]["steps"]] * 2
    prvs = [PoissonSubsampledGaussianMechanism(noise_multiplier=s["noise_multiplier"],
                                               sampling_probability=s["sample_rate"]) for s in stages]
    steps = [s["steps"] for s in stages]
    reference = ReferencePRV(prvs=prvs, max_self_compositions=steps, eps_error=0.01,
                             delta_error=privacy["delta"] / 1000)
    assert privacy["epsilon"] == pytest.approx(reference.compute_epsilon(privacy["delta"], steps)[2], abs=5e-4)
    assert privacy["epsilon"] <= 3.0
    assert any("4 candidates" in c and "composed" in c for c in privacy["validation_choices"])
    chosen = json.loads((out / rundir.METRICS).read_text())["checkpoint"]["candidate"]
    assert set(chosen) == {"lr", "epochs"}
    # one recipe alone would have needed less noise for the same epsilon: the search is paid for
    single = train(tuned_config(phantom_root, tmp_path / "one", {}, epsilon=3.0))
    assert json.loads((single / rundir.PRIVACY).read_text())["noise_multiplier"] < stages[0]["noise_multiplier"]


@pytest.mark.slow
def test_a_search_the_target_cannot_pay_for_is_refused_before_anything_is_written(phantom_root, tmp_path):
    config = tuned_config(phantom_root, tmp_path / "big", {"epochs": [200, 300, 400]}, epsilon=0.01)
    with pytest.raises(PrivmedError, match="3 hyper-parameter candidates"):
        train(config)
    assert not (tmp_path / "big").exists()


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_recounting(phantom_root, tmp_path):
    tune = {"lr": [0.01, 0.05]}
    full = train(tuned_config(phantom_root, tmp_path / "full", tune, epsilon=3.0))

    def interrupt(epoch, row):
        if row.get("candidate") == 1:
            raise KeyboardInterrupt

    config = tuned_config(phantom_root, tmp_path / "cut", tune, epsilon=3.0)
    with pytest.raises(KeyboardInterrupt):
        train(config, on_epoch_end=interrupt)
    resumed = train(config, resume=True)
    a = json.loads((full / rundir.PRIVACY).read_text())
    b = json.loads((resumed / rundir.PRIVACY).read_text())
    assert [s["steps"] for s in a["stages"]] == [s["steps"] for s in b["stages"]]
    assert b["epsilon"] == pytest.approx(a["epsilon"])


def test_tune_values_are_checked():
    with pytest.raises(PrivmedError, match="tune.lr"):
        config_from_dict({"tune": {"lr": [0.1, -1]}})
    with pytest.raises(PrivmedError, match="unknown tune key"):
        config_from_dict({"tune": {"momentum": [0.9]}})


def test_tune_from_the_command_line_and_a_study_file():
    from privmed.cli import build_parser, cli_overrides
    from privmed.study.config import study_from_dict

    args = build_parser().parse_args(["train", "--epsilon", "2", "--tune", "lr=0.1,0.3", "--tune", "epochs=15,40"])
    config = config_from_dict(cli_overrides(args))
    assert config.tune.lr == (0.1, 0.3) and config.tune.epochs == (15, 40)
    assert len(config.tune.candidates(config.training)) == 4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--tune", "lr"])
    study = study_from_dict({"name": "s", "base": {}, "strategies": {"a": {}, "b": {"tune": {"lr": [0.5]}}},
                             "epsilons": [1], "seeds": [0], "tune": {"lr": [0.1, 0.3], "epochs": [15, 40]}})
    tunes = {cell.strategy: cell.config.tune for cell in study.cells(Path("OUT"))}
    assert tunes["a"].lr == (0.1, 0.3) and tunes["a"].epochs == (15, 40)
    assert tunes["b"].lr == (0.5,) and tunes["b"].epochs == (15, 40)


def test_a_search_retrained_in_memory_is_the_runs_search_composed_the_same_way():
    """An audit retrains the target in memory: a run with a private search must be retrained with that search,
    every candidate at the one shared noise, each composed into the ledger (it once refused a tune section)."""
    import math

    import torch
    from torch import nn

    from privmed.training.trainer import train_in_memory

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 8, generator=g), (torch.rand(200, 1, generator=g) < 0.5).float()
    x[:, 0] += 2 * y[:, 0]
    config = config_from_dict({"data": {"image_size": 32}, "model": {"name": "resnet9_small"},
                               "privacy": {"epsilon": 2.0, "unit": "image"}, "tune": {"epochs": [1, 3]},
                               "training": {"batch_size": 32, "lr": 0.1, "augment": False, "seed": 0}})
    fitted = train_in_memory(config, build=lambda: nn.Linear(8, 1), x_train=x[:150], y_train=y[:150],
                             x_val=x[150:], y_val=y[150:], device="cpu")
    stages = [m for m in fitted.ledger.mechanisms if m.stage == "dp_sgd"]
    assert len(stages) == 2 and len({m.noise_multiplier for m in stages}) == 1
    assert stages[1].steps > stages[0].steps  # 3 epochs against 1
    assert fitted.ledger.epsilon <= 2.0 + 1e-6 and math.isfinite(fitted.ledger.epsilon)
    assert 1 <= fitted.best_epoch <= 3
