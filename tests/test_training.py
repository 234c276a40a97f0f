"""Training: DP-SGD mechanics against plain training, accounting, resume, run directory."""

import json
import math

import pandas as pd
import pytest
import torch
from opacus.accountants import PRVAccountant

from privmed import rundir
from privmed.config import config_from_dict
from privmed.errors import PrivmedError
from privmed.training.trainer import train


def tiny_config(root, out, **privacy):
    return config_from_dict({
        "out": str(out),
        "data": {"path": str(root), "image_size": 32},
        "model": {"name": "resnet9_small"},
        "privacy": privacy,
        "training": {"epochs": 2, "batch_size": 32, "physical_batch_size": 16, "lr": 0.05, "augment": False,
                     "bootstrap_resamples": 100, "seed": 1},
    })


def final_weights(out):
    state = torch.load(out / rundir.CHECKPOINTS / rundir.LAST, weights_only=False)["engine"]["module"]
    return {k: v for k, v in state.items()}


@pytest.mark.slow
def test_dp_with_zero_noise_and_infinite_clip_equals_plain_training(phantom_root, tmp_path):
    # the same Poisson batches need the same sampling stream: replayable (derived from the seed), as a plain run's
    plain = train(tiny_config(phantom_root, tmp_path / "plain"))
    dp = train(tiny_config(phantom_root, tmp_path / "dp", noise_multiplier=0.0, clip_norm=math.inf,
                           replayable_noise=True))
    a, b = final_weights(plain), final_weights(dp)
    assert a.keys() == b.keys()
    for k in a:  # float32 sums of per-sample gradients against the batch gradient: about 1e-5 apart after 2 epochs
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-4), k
    # and clipping does change it: the test can fail
    clipped = train(tiny_config(phantom_root, tmp_path / "clip", noise_multiplier=0.0, clip_norm=1e-3,
                                replayable_noise=True))
    c = final_weights(clipped)
    assert any(not torch.allclose(a[k], c[k], rtol=1e-4, atol=1e-4) for k in a)


@pytest.mark.slow
def test_privacy_json_matches_an_independent_accountant(phantom_root, tmp_path):
    """Patient unit by default (the phantom has patient ids); epsilon from Microsoft's prv_accountant
    (not the Opacus code privmed calls) at the patient sample rate, to 3 decimals."""
    from prv_accountant import PRVAccountant as ReferencePRV
    from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism

    out = train(tiny_config(phantom_root, tmp_path / "eps", epsilon=3.0))
    privacy = json.loads((out / rundir.PRIVACY).read_text())
    meta = pd.read_csv(phantom_root / "metadata.csv")
    train_rows = meta[meta["split"] == "train"]
    per_patient = train_rows.groupby("patient_id").size()
    contributions = len(per_patient)  # default max_images_per_patient = 1: one image per patient per step
    assert privacy["private"] is True and privacy["unit"] == "patient"
    assert privacy["delta"] == pytest.approx(1 / (10 * len(per_patient)))
    assert f"{len(per_patient)} patients" in privacy["summary"]
    assert privacy["sample_rate"] == pytest.approx(1 / math.ceil(contributions / 32))
    assert privacy["steps"] == 2 * math.ceil(contributions / 32)
    mechanism = PoissonSubsampledGaussianMechanism(noise_multiplier=privacy["noise_multiplier"],
                                                   sampling_probability=privacy["sample_rate"])
    reference = ReferencePRV(prvs=[mechanism], max_self_compositions=[privacy["steps"]], eps_error=0.01,
                             delta_error=privacy["delta"] / 1000)
    _, _, eps_upper = reference.compute_epsilon(delta=privacy["delta"], num_self_compositions=[privacy["steps"]])
    assert privacy["epsilon"] == pytest.approx(eps_upper, abs=5e-4)
    assert privacy["epsilon"] <= 3.0
    for name in ("config.yaml", "metrics.json", "predictions.csv", "train.log", "history.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / rundir.METRICS).read_text())
    test_auroc = metrics["splits"]["test"]["auroc"]
    assert test_auroc["ci_low"] <= test_auroc["value"] <= test_auroc["ci_high"]
    preds = pd.read_csv(out / rundir.PREDICTIONS)
    assert {"sample_id", "label", "score", "split", "breast_density", "age"} <= set(preds.columns)


@pytest.mark.slow
def test_image_unit_ledger_states_what_it_means_for_a_patient(phantom_root, tmp_path):
    out = train(tiny_config(phantom_root, tmp_path / "img", epsilon=3.0, unit="image"))
    privacy = json.loads((out / rundir.PRIVACY).read_text())
    n_images = int((pd.read_csv(phantom_root / "metadata.csv")["split"] == "train").sum())
    assert privacy["unit"] == "image"
    assert privacy["delta"] == pytest.approx(1 / (10 * n_images))
    assert privacy["sample_rate"] == pytest.approx(1 / math.ceil(n_images / 32))
    assert "a patient with m images" in privacy["summary"]
    assert f"({2 * privacy['epsilon']:.3g}," in privacy["summary"]  # group privacy for 2 images: 2 epsilon


@pytest.mark.slow
def test_two_runs_with_the_same_seed_differ_in_their_noise(phantom_root, tmp_path):
    a = train(tiny_config(phantom_root, tmp_path / "a", noise_multiplier=1.0))
    b = train(tiny_config(phantom_root, tmp_path / "b", noise_multiplier=1.0))
    wa, wb = final_weights(a), final_weights(b)
    assert any(not torch.allclose(wa[k], wb[k]) for k in wa)
    # while replayable noise is the same noise, and its ledger says the run is not private
    c = train(tiny_config(phantom_root, tmp_path / "c", noise_multiplier=1.0, replayable_noise=True))
    d = train(tiny_config(phantom_root, tmp_path / "d", noise_multiplier=1.0, replayable_noise=True))
    wc, wd = final_weights(c), final_weights(d)
    assert all(torch.equal(wc[k], wd[k]) for k in wc)
    privacy = json.loads((c / rundir.PRIVACY).read_text())
    assert privacy["private"] is False and "replayable_noise" in privacy["summary"]


@pytest.mark.slow
def test_interrupted_run_resumes_without_recounting_steps(phantom_root, tmp_path):
    full = train(tiny_config(phantom_root, tmp_path / "full", epsilon=3.0))

    def interrupt(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    config = tiny_config(phantom_root, tmp_path / "cut", epsilon=3.0)
    with pytest.raises(KeyboardInterrupt):
        train(config, on_epoch_end=interrupt)
    assert not (tmp_path / "cut" / rundir.PRIVACY).exists()
    resumed = train(config, resume=True)
    p_full = json.loads((full / rundir.PRIVACY).read_text())
    p_res = json.loads((resumed / rundir.PRIVACY).read_text())
    assert p_res["steps"] == p_full["steps"]
    assert p_res["epsilon"] == pytest.approx(p_full["epsilon"])
    assert p_res["noise_multiplier"] == p_full["noise_multiplier"]
    # the resumed epoch drew fresh secret noise and batches: not the uninterrupted run's weights
    a, b = final_weights(full), final_weights(resumed)
    assert any(not torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_resume_errors(phantom_root, tmp_path):
    config = tiny_config(phantom_root, tmp_path / "r", epsilon=3.0)
    with pytest.raises(PrivmedError, match="holds no run to resume"):
        train(config, resume=True)
    train(config)
    with pytest.raises(PrivmedError, match="already holds a run"):
        train(config)
    changed = tiny_config(phantom_root, tmp_path / "r", epsilon=4.0)
    with pytest.raises(PrivmedError, match=r"configuration changed \(privacy.epsilon: 3.0 -> 4.0\)"):
        train(changed, resume=True)
    other_unit = tiny_config(phantom_root, tmp_path / "r", epsilon=3.0, unit="image")
    with pytest.raises(PrivmedError, match=r"privacy.unit: None -> 'image'"):
        train(other_unit, resume=True)


def test_patient_unit_errors(tmp_path):
    from privmed.config import config_from_dict as build

    with pytest.raises(PrivmedError, match="max_images_per_patient"):
        build({"privacy": {"epsilon": 1, "max_images_per_patient": 0}})
    with pytest.raises(PrivmedError, match="privacy.unit"):
        build({"privacy": {"epsilon": 1, "unit": "study"}})


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True])
def test_run_that_crashed_before_its_first_checkpoint_restarts_with_the_same_command(phantom_root, tmp_path,
                                                                                     monkeypatch, caplog, resume):
    import privmed.training.trainer as trainer

    config = tiny_config(phantom_root, tmp_path / "crash", epsilon=3.0)

    def crash(*args, **kwargs):
        raise RuntimeError("killed inside the first epoch")

    with monkeypatch.context() as m:
        m.setattr(trainer, "run_epoch", crash)
        with pytest.raises(RuntimeError):
            train(config)
    assert (tmp_path / "crash" / rundir.CONFIG).is_file()
    assert not (tmp_path / "crash" / rundir.CHECKPOINTS / rundir.LAST).exists()
    out = train(config, resume=resume)
    assert (out / rundir.METRICS).is_file()
    assert "stopped before its first checkpoint" in caplog.text  # logged (the CLI shows it on standard error)
    assert "starting it again" in (out / rundir.LOG).read_text()
    privacy = json.loads((out / rundir.PRIVACY).read_text())
    assert privacy["private"] and privacy["epsilon"] <= 3.0


@pytest.mark.slow
def test_a_not_private_run_shows_no_epsilon_per_epoch(phantom_root, tmp_path):
    """Issue 32: replayable noise makes the run NOT PRIVATE; its history.csv and train.log once showed an epsilon
    as if private. A private run still shows its number."""
    from privmed.privacy.ledger import NOT_PRIVATE_EPSILON, epsilon_text, shown_epsilon

    config = config_from_dict({
        "out": str(tmp_path / "replay"), "data": {"path": str(phantom_root), "image_size": 32},
        "model": {"name": "scatter_linear"}, "privacy": {"noise_multiplier": 1.0, "replayable_noise": True},
        "training": {"epochs": 1, "batch_size": 64, "bootstrap_resamples": 100, "seed": 1}})
    out = train(config)
    assert json.loads((out / rundir.PRIVACY).read_text())["private"] is False
    history = pd.read_csv(out / rundir.HISTORY)
    assert list(history["epsilon"]) == [NOT_PRIVATE_EPSILON]
    log = (out / rundir.LOG).read_text()
    assert f"epsilon={NOT_PRIVATE_EPSILON}" in log and "epsilon=0" not in log and "epsilon=1" not in log
    # the progress bar shows what the row holds
    assert epsilon_text(shown_epsilon(0.8, private=False)) == "not private"
    assert epsilon_text(shown_epsilon(0.8123, private=True)) == "0.812"
    assert shown_epsilon(math.inf, private=True) == NOT_PRIVATE_EPSILON
