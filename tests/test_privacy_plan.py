"""One privacy plan (privmed.privacy.plan): every workflow declares its stages and the plan resolves the unit,
delta and the noise; on patient data the classifier, the generator, private evolution and the audits' shadows
get one and the same delta."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from privmed import rundir
from privmed.audit import membership
from privmed.audit.config import AuditConfig
from privmed.cli import main
from privmed.config import PrivacyConfig, config_from_dict, config_from_run_dict
from privmed.data.sources import load_dataset
from privmed.errors import EPSILON_AND_TOTAL_EPSILON, TOTAL_EPSILON_SPENT_UPSTREAM, PrivmedError
from privmed.privacy.accounting import Mechanism, epsilon_for
from privmed.privacy.plan import StageSpec, make_plan
from privmed.privacy.units import PrivacyUnit
from privmed.study import run_study, study_from_dict
from privmed.study.budget import GENERATOR_SPENDS_TOTAL, generator_name
from privmed.synth.config import evolve_config_from_dict, generator_config_from_dict
from privmed.synth.evolve import load_private
from privmed.synth.training import plan_generator
from privmed.training import in_memory
from privmed.training.plan import plan_privacy, protected_unit

ROOT = Path(__file__).resolve().parents[1]
UNIT = PrivacyUnit("patient", np.arange(3000) // 3, 2)  # 1000 patients of 3 images
SGD = StageSpec("dp_sgd", 0.1, 30)
CENTRE = StageSpec("feature_centering", 1.0, 1, 5.0)
RDP = {"accountant": "rdp"}  # the plan is the subject here; RDP calibrates faster than PRV
UPSTREAM = (Mechanism("generator_discriminator_dp_sgd", 3.0, 0.1, 40),)


def _words(template: str) -> str:
    """The longest fixed part of a message template (its words between the placeholders)."""
    return max(re.split(r"\{[^}]*\}", template), key=len)


def _eps(plan, mechanisms) -> float:
    return epsilon_for(mechanisms, delta=plan.delta, accountant=plan.accountant)


def test_the_plan_calibrates_one_noise_for_its_stages_with_their_fixed_ones_to_the_target():
    plan = make_plan(PrivacyConfig(epsilon=2.0, **RDP), unit=UNIT, stages=[CENTRE, SGD, StageSpec("search", 0.1, 20)],
                     seed=0)
    assert plan.delta == pytest.approx(1 / (10 * 1000))  # patients, not images
    assert plan.stage("feature_centering").noise_multiplier == 5.0
    assert plan.stage("dp_sgd").noise_multiplier == plan.stage("search").noise_multiplier == plan.noise_multiplier
    spent = _eps(plan, plan.stages)
    assert spent <= 2.0 and spent == pytest.approx(2.0, rel=0.01)
    assert plan.replay_seed is None  # private: secret randomness


def test_epsilon_leaves_upstream_stages_on_top_and_total_epsilon_counts_them():
    own = make_plan(PrivacyConfig(epsilon=2.0, **RDP), unit=UNIT, stages=[SGD], seed=0, prior=UPSTREAM)
    total = make_plan(PrivacyConfig(total_epsilon=2.0, **RDP), unit=UNIT, stages=[SGD], seed=0, prior=UPSTREAM)
    assert _eps(own, own.stages) == pytest.approx(2.0, rel=0.01)
    assert _eps(own, [*UPSTREAM, *own.stages]) > 2.05
    composed = _eps(total, [*UPSTREAM, *total.stages])
    assert composed <= 2.0 and composed == pytest.approx(2.0, rel=0.01)
    assert total.noise_multiplier > own.noise_multiplier  # the upstream stages took part of the total
    assert total.start_ledger(n_private=3000, clip_norm=1.0).mechanisms == list(UPSTREAM)


def test_a_total_the_upstream_stages_already_spend_is_refused_before_any_work():
    upstream = _eps(make_plan(PrivacyConfig(epsilon=1.0, **RDP), unit=UNIT, stages=[], seed=0), UPSTREAM)
    with pytest.raises(PrivmedError, match=re.escape(_words(TOTAL_EPSILON_SPENT_UPSTREAM))) as err:
        make_plan(PrivacyConfig(total_epsilon=upstream * 0.9, **RDP), unit=UNIT, stages=[SGD], seed=0, prior=UPSTREAM)
    assert "Raise --total-epsilon" in str(err.value) and UPSTREAM[0].stage in str(err.value)


def test_epsilon_and_total_epsilon_are_exclusive_and_total_epsilon_makes_a_run_private():
    with pytest.raises(PrivmedError, match=re.escape(EPSILON_AND_TOTAL_EPSILON[:40])):
        PrivacyConfig(epsilon=1.0, total_epsilon=2.0)
    with pytest.raises(PrivmedError, match="total_epsilon"):
        PrivacyConfig(total_epsilon=0.0)
    assert PrivacyConfig(total_epsilon=2.0, **RDP).private


def test_a_resumed_or_given_noise_is_kept_and_a_non_private_plan_has_none_and_replays():
    assert make_plan(PrivacyConfig(epsilon=2.0, **RDP), unit=UNIT, stages=[SGD], seed=0,
                     recorded_noise=0.7).noise_multiplier == 0.7
    assert make_plan(PrivacyConfig(noise_multiplier=0.9), unit=UNIT, stages=[SGD], seed=0).noise_multiplier == 0.9
    plain = make_plan(PrivacyConfig(), unit=UNIT, stages=[SGD], seed=7)
    assert plain.noise_multiplier == 0.0 and plain.replay_seed == 7


def test_delta_is_resolved_and_noise_calibrated_only_by_the_plan():
    pattern = re.compile(r"\b(default_delta|calibrate_noise|resolve_delta|check_reachable)\(")
    callers = [str(p.relative_to(ROOT)) for folder in ("privmed", "benchmarks") for p in (ROOT / folder).rglob("*.py")
               if pattern.search(p.read_text()) and p.parent.name != "privacy"]
    assert not callers, f"declare stages to privmed.privacy.plan instead of calibrating in {callers}"


# ---------------------------------------------------------------- one delta on patient data


@pytest.fixture(scope="module")
def classifier_delta(patients_root) -> float:
    config = config_from_dict({"data": {"path": str(patients_root), "image_size": 32},
                               "privacy": {"noise_multiplier": 1.0},  # delta does not depend on the calibration
                               "training": {"epochs": 1, "batch_size": 8}})
    train = load_dataset(config.data).split("train")
    assert len(set(train.patient_ids)) < len(train), "the fixture must have patients with several images"
    unit = protected_unit(config, train, None)
    delta = plan_privacy(config, unit, unit, [config.training], checkpoint=None, has_center=True).delta
    assert delta == pytest.approx(1 / (10 * len(set(train.patient_ids))))
    return delta


def test_the_generator_and_evolution_get_the_classifiers_delta(patients_root, tmp_path, classifier_delta):
    data = {"path": str(patients_root), "image_size": 32}
    generator = generator_config_from_dict({"out": str(tmp_path / "g"), "data": data, "privacy": {"noise_multiplier": 1.0},
                                            "gan": {"epochs": 1, "batch_size": 16, "width": 8}})
    real = load_dataset(generator.data, require_splits=("train",)).split("train")
    plan, _ = plan_generator(generator, real, None)
    assert plan.delta == pytest.approx(classifier_delta)
    evolution = evolve_config_from_dict({"out": str(tmp_path / "e"), "data": data, "privacy": {"noise_multiplier": 1.0},
                                         "evolve": {"rounds": 2, "population": 6, "n": 10}})
    assert load_private(evolution)[1].delta == pytest.approx(classifier_delta)


class _Planned(Exception):
    """Raised once an audit's retrained target or shadow has been planned (nothing is trained)."""


@pytest.mark.slow  # trains one tiny run (about a minute on 2 busy cores)
def test_the_audits_target_and_shadows_get_the_classifiers_delta(patients_root, tmp_path, classifier_delta,
                                                                 monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--data", str(patients_root), "--out", str(run), "--image-size", "32", "--epochs", "1",
                 "--epsilon", "5", "--bootstrap", "100", "--batch-size", "8"]) == 0
    assert rundir.read_record(run).delta == pytest.approx(classifier_delta)
    ds = load_dataset(config_from_dict({"data": {"path": str(patients_root), "image_size": 32}}).data)
    run_config = config_from_run_dict(rundir.read_config_dict(run))
    assert membership.training_delta(run_config, ds) == pytest.approx(classifier_delta)
    seen, real_plan = [], in_memory.plan_privacy

    def planned(*args, **kwargs):
        """The real plan of train_in_memory (a shadow trains on a subset of the patients), then stop."""
        seen.append(real_plan(*args, **kwargs).delta)
        raise _Planned

    monkeypatch.setattr(in_memory, "plan_privacy", planned)
    for audit in (AuditConfig(canaries=4, shadows=0, bootstrap=50), AuditConfig(canaries=0, shadows=2, bootstrap=50)):
        with pytest.raises(_Planned):
            membership.audit_run(run, config=audit, shadow_dir=tmp_path / "shadows")
    assert seen == pytest.approx([classifier_delta, classifier_delta])  # the retrained target, then a shadow


# ---------------------------------------------------------------- a total epsilon for the whole pipeline


def _independent_epsilon(stages: list[dict], *, delta: float, accountant: str) -> float:
    """Epsilon of the recorded stages by Google's dp_accounting (not privmed's code, not Opacus): each stage
    ``steps`` Poisson-subsampled Gaussian releases, add-or-remove-one neighbours."""
    import dp_accounting
    from dp_accounting import pld, rdp

    event = dp_accounting.ComposedDpEvent([dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        s["sample_rate"], dp_accounting.GaussianDpEvent(s["noise_multiplier"])), s["steps"]) for s in stages])
    account = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant(value_discretization_interval=1e-3)
    return float(account.compose(event).get_epsilon(delta))


@pytest.fixture(scope="module")
def dp_generator_samples(phantom_root, tmp_path_factory) -> Path:
    """A tiny DP generator (as tests/test_synth.py trains it, at epsilon 1) and 60 of its samples."""
    from privmed.synth.sample import sample
    from privmed.synth.training import train_generator

    folder = tmp_path_factory.mktemp("gen")
    config = generator_config_from_dict({"out": str(folder / "g"), "data": {"path": str(phantom_root), "image_size": 32},
                                         "privacy": {"epsilon": 1.0}, "gan": {"epochs": 2, "batch_size": 32, "width": 8,
                                                                             "seed": 2}})
    return sample(train_generator(config), n=60, out=folder / "s", seed=0)


@pytest.mark.slow  # a tiny DP generator and a two-epoch classifier (about two minutes on 2 busy cores)
def test_train_with_a_dp_generators_samples_composes_to_the_total_epsilon_by_an_independent_accountant(
        phantom_root, dp_generator_samples, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(phantom_root), "--out", str(run), "--image-size", "32", "--model",
                 "scatter_linear", "--epochs", "2", "--batch-size", "32", "--bootstrap", "100", "--synthetic",
                 str(dp_generator_samples), "--synthetic-use", "pretrain", "--pretrain-epochs", "2",
                 "--total-epsilon", "2", "--accountant", "rdp"]) == 0
    record = rundir.read_json(run / rundir.PRIVACY)
    assert record["private"] is True
    names = [s["stage"] for s in record["stages"]]
    assert names[0] == "generator_discriminator_dp_sgd" and "dp_sgd" in names
    alone = {s["stage"]: s["epsilon_alone"] for s in record["stages"]}  # each stage's share, shown in the ledger
    assert 0 < alone["generator_discriminator_dp_sgd"] < 2 and 0 < alone["dp_sgd"] < 2
    assert record["epsilon"] == pytest.approx(2.0, abs=0.01)
    assert _independent_epsilon(record["stages"], delta=record["delta"], accountant="rdp") == pytest.approx(2.0, abs=0.01)
    # the tighter PLD accountant: the whole pipeline spends at most the total
    assert _independent_epsilon(record["stages"], delta=record["delta"], accountant="pld") <= 2.0 + 0.01
    assert rundir.read_config_dict(run)["privacy"]["total_epsilon"] == 2.0


@pytest.mark.slow  # the same tiny DP generator, no training
def test_a_total_below_what_the_generator_spent_is_refused_before_training(phantom_root, dp_generator_samples,
                                                                         tmp_path, capsys):
    assert main(["train", "--data", str(phantom_root), "--out", str(tmp_path / "run"), "--image-size", "32",
                 "--model", "scatter_linear", "--epochs", "2", "--batch-size", "32", "--synthetic",
                 str(dp_generator_samples), "--synthetic-use", "pretrain", "--total-epsilon", "0.5"]) == 2
    assert _words(TOTAL_EPSILON_SPENT_UPSTREAM) in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run" / rundir.CHECKPOINTS).exists()


# ---------------------------------------------------------------- a study whose epsilons are totals


def _total_study(**changes) -> dict:
    raw = {"name": "total", "base": {"data": {"phantom_samples": 300, "image_size": 32},
                                     "privacy": {"accountant": "rdp"},
                                     "training": {"epochs": 2, "batch_size": 64, "bootstrap_resamples": 100}},
           "generators": {"g": {"gan": {"epochs": 1, "batch_size": 32, "width": 8}, "samples": 60}},
           "strategies": {"real": {}, "gen_pretrain": {"generator": "g", "synthetic": {"use": "pretrain",
                                                                                      "pretrain_epochs": 1}}},
           "epsilons": [2], "seeds": [0], "privacy": {"target": "total", "generator_share": 0.25}}
    raw.update(changes)
    return raw


def test_a_total_study_gives_each_total_its_generator_at_its_share_and_the_runs_their_total():
    study = study_from_dict(_total_study(epsilons=[2, "inf"]))
    by_id = {c.run_id: c for c in study.cells(Path("OUT"))}
    cell = by_id["gen_pretrain__eps2__seed0"]
    assert cell.config.privacy.total_epsilon == 2.0 and cell.config.privacy.epsilon == math.inf
    assert cell.generator == generator_name("g", 2.0)
    assert cell.config.synthetic.path == str(Path("OUT") / "generators" / "g__total2" / "samples")
    assert study.generator("g__total2").config.privacy.epsilon == pytest.approx(0.5)  # a quarter of the total
    assert by_id["real__eps2__seed0"].config.privacy.total_epsilon == 2.0  # no generator: the run's own total
    assert not by_id["real__epsinf__seed0"].config.privacy.private
    assert by_id["gen_pretrain__epsinf__seed0"].generator == "g"  # a non-private grid value: the generator as given
    assert not study_from_dict(_total_study(privacy={})).cells(Path("OUT"))[0].config.privacy.total_epsilon


@pytest.mark.parametrize("privacy, message", [
    ({"target": "sum"}, "privacy.target"), ({"target": "total", "generator_share": 1.0}, "privacy.generator_share"),
    ({"target": "total", "share": 0.5}, "share")])
def test_a_bad_study_privacy_section_is_refused(privacy, message):
    with pytest.raises(PrivmedError, match=message):
        study_from_dict(_total_study(privacy=privacy))


def test_a_study_generator_whose_own_epsilon_reaches_a_total_is_refused():
    raw = _total_study()
    raw["generators"]["g"]["privacy"] = {"epsilon": 3}
    with pytest.raises(PrivmedError, match=re.escape(_words(GENERATOR_SPENDS_TOTAL))):
        study_from_dict(raw)


@pytest.mark.slow  # a tiny DP generator and one two-epoch run (about two minutes on 2 busy cores)
def test_a_total_study_run_composes_with_its_generator_to_the_total_by_an_independent_accountant(tmp_path):
    raw = _total_study(strategies={"gen_pretrain": _total_study()["strategies"]["gen_pretrain"]})
    study = study_from_dict(raw)
    run_study(study, raw, out=tmp_path, progress=lambda _: None)
    record = rundir.read_json(Path(study.cells(tmp_path)[0].config.out) / rundir.PRIVACY)
    generator = rundir.read_json(tmp_path / "generators" / "g__total2" / rundir.PRIVACY)
    assert generator["epsilon"] == pytest.approx(0.5, abs=0.01)  # its share of the total (by its own accountant)
    assert [s["stage"] for s in record["stages"]][0] == "generator_discriminator_dp_sgd"
    assert _independent_epsilon(record["stages"], delta=record["delta"], accountant="rdp") == pytest.approx(2.0, abs=0.01)
