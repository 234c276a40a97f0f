"""One place resolves delta (privmed.privacy.delta): on patient data every mechanism and audit
gets 1/(10 x patients) of the private training split, never 1/(10 x images)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from privmed import rundir
from privmed.audit import membership
from privmed.audit.config import AuditConfig
from privmed.cli import main
from privmed.config import config_from_dict
from privmed.data.sources import load_dataset
from privmed.errors import PrivmedError
from privmed.privacy.plan import delta_for
from privmed.privacy.units import PrivacyUnit, resolve_unit
from privmed.synth.config import evolve_config_from_dict, generator_config_from_dict
from privmed.synth.evolve import load_private
from privmed.synth.training import train_generator
from privmed.training.plan import plan_privacy, protected_unit

PACKAGE = Path(__file__).resolve().parents[1] / "privmed"


@pytest.fixture(scope="module")
def expected(patients_root) -> float:
    train = load_dataset(config_from_dict({"data": {"path": str(patients_root), "image_size": 32}}).data).split("train")
    patients = len(set(train.patient_ids))
    assert patients < len(train), "the fixture must have patients with several images"
    return 1.0 / (10 * patients)


def test_delta_for_takes_the_configured_one_else_one_over_ten_units_and_checks_it():
    unit = PrivacyUnit("patient", np.array([0, 0, 1, 2, 2, 2]), 2)
    assert delta_for(unit, None, check=True) == pytest.approx(1 / 30)
    assert delta_for(unit, 1e-3, check=True) == 1e-3
    with pytest.raises(PrivmedError, match="delta"):
        delta_for(unit, 0.5, check=True)
    assert delta_for(unit, 0.5, check=False) == 0.5


def test_default_delta_is_called_only_inside_privacy():
    callers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if re.search(r"\bdefault_delta\(", p.read_text()) and p.parent.name != "privacy"]
    assert not callers, f"resolve delta with privmed.privacy.plan.delta_for, not in {callers}"


def test_the_classifiers_plan_counts_patients(patients_root, expected):
    config = config_from_dict({"data": {"path": str(patients_root), "image_size": 32}, "privacy": {"epsilon": 5.0},
                               "training": {"epochs": 1, "batch_size": 8}})
    train = load_dataset(config.data).split("train")
    unit = protected_unit(config, train, None)
    plan = plan_privacy(config, unit, unit, [config.training], checkpoint=None, has_center=False)
    assert plan.delta == pytest.approx(expected)


def test_private_evolution_counts_patients(patients_root, tmp_path, expected):
    config = evolve_config_from_dict({"out": str(tmp_path / "e"), "data": {"path": str(patients_root),
                                      "image_size": 32}, "privacy": {"epsilon": 5.0},
                                      "evolve": {"rounds": 2, "population": 6, "n": 10}})
    _, plan = load_private(config)
    assert plan.delta == pytest.approx(expected)


def test_the_generators_training_counts_patients(patients_root, tmp_path, expected):
    config = generator_config_from_dict({"out": str(tmp_path / "g"), "data": {"path": str(patients_root),
                                         "image_size": 32}, "privacy": {"epsilon": 5.0},
                                         "gan": {"epochs": 1, "batch_size": 16, "width": 8, "seed": 1}})
    record = rundir.read_json(train_generator(config) / rundir.PRIVACY)
    assert record["delta"] == pytest.approx(expected)


class _Fitted(Exception):
    """Raised by the stand-in trainer once it has seen what an audit's model would be trained with."""


@pytest.mark.slow  # trains one tiny run (about a minute on 2 busy cores)
def test_the_membership_audits_target_and_shadows_keep_the_runs_delta(patients_root, tmp_path, expected,
                                                                       monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--data", str(patients_root), "--out", str(run), "--image-size", "32", "--epochs", "1",
                 "--epsilon", "5", "--bootstrap", "100", "--batch-size", "8"]) == 0
    assert rundir.read_record(run).delta == pytest.approx(expected)
    seen = []

    def planned(config, build, x_train, y_train, x_val, y_val, *, groups=None, **_):
        """The delta train_in_memory's plan takes for these rows (a shadow trains on a subset of patients)."""
        p = config.privacy
        unit = resolve_unit(p.unit, groups, max_images_per_patient=p.max_images_per_patient, n=len(x_train))
        seen.append(plan_privacy(config, unit, unit, [config.training], checkpoint=None, has_center=False).delta)
        raise _Fitted

    monkeypatch.setattr(membership, "train_in_memory", planned)
    for audit in (AuditConfig(canaries=4, shadows=0, bootstrap=50), AuditConfig(canaries=0, shadows=2, bootstrap=50)):
        with pytest.raises(_Fitted):
            membership.audit_run(run, config=audit, shadow_dir=tmp_path / "shadows")
    assert seen == pytest.approx([expected, expected])  # the retrained target, then the first shadow
