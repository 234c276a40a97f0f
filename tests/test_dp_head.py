"""The one-shot private head: a patient's bounded contribution, the accountant's epsilon, a head that learns."""

import math

import numpy as np
import pytest
import torch

from privmed.config import PrivacyConfig
from privmed.privacy.accounting import Mechanism, epsilon_for
from privmed.privacy.plan import make_plan
from privmed.privacy.units import PrivacyUnit
from privmed.training import dp_head


def _crafted():
    """Patient 0 has one huge row, patient 1 many rows of both labels, the rest one row each."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    x[0] *= 100.0
    y = torch.tensor([1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0])
    groups = np.array([0, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7])
    return x, y, groups


@pytest.mark.parametrize("removed", range(8))
def test_removing_a_patient_moves_each_statistic_by_at_most_the_bound(removed):
    x, y, groups = _crafted()
    bound = 0.7
    full = dp_head.unit_statistics(x, y, bound=bound, groups=groups)
    keep = groups != removed
    without = dp_head.unit_statistics(x[torch.from_numpy(keep)], y[torch.from_numpy(keep)], bound=bound,
                                      groups=groups[keep])
    assert without.n_units == full.n_units - 1
    assert torch.linalg.matrix_norm(full.gram - without.gram) <= bound**2 + 1e-12
    assert torch.linalg.vector_norm(full.moment - without.moment) <= bound + 1e-12
    if removed == 0:  # the huge row is clipped: its patient moves the Gram matrix by exactly bound^2
        assert torch.linalg.matrix_norm(full.gram - without.gram) == pytest.approx(bound**2)


def test_rows_without_groups_are_their_own_units():
    x, y, _ = _crafted()
    stats = dp_head.unit_statistics(x, y, bound=1.0)
    clipped = dp_head.clip_rows(x, 1.0)
    assert stats.n_units == len(x)
    assert torch.allclose(stats.gram, clipped.T @ clipped)


def test_release_noise_has_the_stated_scale_and_a_symmetric_gram():
    d, sigma, bound = 60, 2.0, 0.5
    zero = dp_head.Statistics(torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), 10)
    noisy, mechanisms = dp_head.release(zero, noise_multiplier=sigma, bound=bound,
                                        generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy.gram, noisy.gram.T)
    assert noisy.gram.std().item() == pytest.approx(sigma * bound**2, rel=0.05)
    assert noisy.moment.std().item() == pytest.approx(sigma * bound, rel=0.3)
    assert [m.stage for m in mechanisms] == [dp_head.GRAM_STAGE, dp_head.MOMENT_STAGE]
    assert all(m.sample_rate == 1.0 and m.steps == 1 and m.noise_multiplier == sigma for m in mechanisms)


def test_the_calibrated_noise_composes_with_the_centre_to_the_target_by_the_accountant():
    delta, target = 1e-4, 1.0
    centre = [Mechanism("feature_centering", 5.0, 1.0, 1)]
    unit = PrivacyUnit("patient", np.arange(2000) // 2, 2)
    plan = make_plan(PrivacyConfig(epsilon=target, delta=delta), unit=unit, seed=0,
                     stages=dp_head.head_stages(centre_noise=5.0))
    assert [m.stage for m in plan.stages] == ["feature_centering", dp_head.GRAM_STAGE, dp_head.MOMENT_STAGE]
    assert plan.stages[0].noise_multiplier == 5.0
    sigma = plan.noise_multiplier
    _, releases = dp_head.release(dp_head.Statistics(torch.zeros(2, 2, dtype=torch.float64),
                                                     torch.zeros(2, dtype=torch.float64), 3),
                                  noise_multiplier=sigma, bound=1.0)
    spent = epsilon_for(centre + releases, delta=delta)
    assert spent <= target and spent == pytest.approx(target, rel=0.02)
    assert epsilon_for(releases, delta=delta) < target  # the centre is part of the budget
    # two releases at sigma compose like one Gaussian at sigma / sqrt(2) (an exact identity for Gaussians)
    one = epsilon_for(centre + [Mechanism("x", sigma / math.sqrt(2), 1.0, 1)], delta=delta)
    assert spent == pytest.approx(one, rel=0.01)


def test_a_lightly_noised_head_separates_the_classes():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(400, generator=g) < 0.5).long()
    x = torch.randn(400, 8, generator=g, dtype=torch.float64) + 0.8 * (2.0 * y.double() - 1).unsqueeze(1)
    stats, _ = dp_head.release(dp_head.unit_statistics(x, y, bound=3.0), noise_multiplier=0.5, bound=3.0,
                               generator=g)
    w = dp_head.ridge_weights(stats, ridge=dp_head.ridge_scale(noise_multiplier=0.5, bound=3.0, dims=8))
    score = x @ w
    assert (score[y == 1].mean() - score[y == 0].mean()) > 0
    assert ((score > 0).long() == y).double().mean() > 0.85
