"""Privacy accounting: every epsilon must equal an independent Opacus accountant computation."""

import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from privmed.errors import PrivmedError
from privmed.privacy.accounting import (Mechanism, calibrate_noise, check_delta, default_delta, epsilon_for,
                                       poisson_schedule)
from privmed.privacy.ledger import PrivacyLedger


@pytest.mark.parametrize("cls,name", [(PRVAccountant, "prv"), (RDPAccountant, "rdp")])
def test_epsilon_equals_accountant(cls, name):
    acc = cls()
    for _ in range(300):
        acc.step(noise_multiplier=1.1, sample_rate=0.05)
    expected = acc.get_epsilon(delta=1e-5)
    assert epsilon_for([Mechanism("dp_sgd", 1.1, 0.05, 300)], delta=1e-5, accountant=name) == pytest.approx(expected)


# the reference call to Opacus's PRV below meets the full-batch stage's log(1 - q) = -inf, as epsilon_for does
@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")
def test_composition_goes_through_the_accountant_not_a_sum():
    a, b = Mechanism("centering", 5.0, 1.0, 1), Mechanism("dp_sgd", 1.0, 0.1, 100)
    acc = PRVAccountant()
    acc.history = [(5.0, 1.0, 1), (1.0, 0.1, 100)]
    composed = epsilon_for([a, b], delta=1e-5)
    assert composed == pytest.approx(acc.get_epsilon(delta=1e-5))
    assert composed < epsilon_for([a], delta=1e-5) + epsilon_for([b], delta=1e-5)
    assert composed > epsilon_for([b], delta=1e-5)


@pytest.mark.parametrize("n,batch_size", [(1104, 128), (1104, 1104), (144, 32), (10, 64)])
def test_poisson_schedule_is_the_sample_rate_opacus_draws_with(n, batch_size):
    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(torch.zeros(n)), batch_size=batch_size))
    sample_rate, steps = poisson_schedule(n, batch_size=batch_size, epochs=3)
    assert sample_rate == pytest.approx(loader.sample_rate)
    assert steps == 3 * len(loader)


def test_zero_noise_is_infinite_epsilon():
    assert math.isinf(epsilon_for([Mechanism("dp_sgd", 0.0, 0.1, 10)], delta=1e-5))


@pytest.mark.slow
@pytest.mark.parametrize("target", [1.0, 6.0])
def test_calibration_matches_opacus_and_reaches_target(target):
    sigma = calibrate_noise(target_epsilon=target, delta=1e-4, sample_rate=0.1, steps=300)
    eps = epsilon_for([Mechanism("dp_sgd", sigma, 0.1, 300)], delta=1e-4)
    assert eps <= target
    assert eps > target * 0.97  # not wastefully noisy
    reference = get_noise_multiplier(target_epsilon=target, target_delta=1e-4, sample_rate=0.1, steps=300,
                                     accountant="prv", epsilon_tolerance=0.001)
    assert sigma == pytest.approx(reference, rel=0.02)


def test_calibration_with_prior_stage_needs_more_noise_and_composes_to_target():
    prior = [Mechanism("feature_centering", 5.0, 1.0, 1)]
    alone = calibrate_noise(target_epsilon=2.0, delta=1e-4, sample_rate=0.1, steps=200)
    with_prior = calibrate_noise(target_epsilon=2.0, delta=1e-4, sample_rate=0.1, steps=200, prior=prior)
    assert with_prior > alone
    total = epsilon_for([*prior, Mechanism("dp_sgd", with_prior, 0.1, 200)], delta=1e-4)
    assert 1.94 < total <= 2.0


def test_unreachable_epsilon_is_a_clear_error():
    with pytest.raises(PrivmedError, match="cannot be reached"):
        calibrate_noise(target_epsilon=0.5, delta=1e-4, sample_rate=0.1, steps=10,
                        prior=[Mechanism("feature_centering", 0.5, 1.0, 1)])


def test_delta_must_be_below_one_over_n():
    check_delta(default_delta(1000), 1000)
    with pytest.raises(PrivmedError, match="not below 1/N"):
        check_delta(1e-3, 1000)


def test_ledger_reports_non_private_in_words():
    ledger = PrivacyLedger(delta=1e-5, accountant="prv", clip_norm=1.0, n_private=100,
                           mechanisms=[Mechanism("dp_sgd", 1.0, 0.1, 10)],
                           non_private_reasons=["The generator was trained without DP."])
    d = ledger.to_dict()
    assert d["private"] is False and d["epsilon"] == "inf"
    assert "NOT PRIVATE" in d["summary"] and "generator" in d["summary"]
