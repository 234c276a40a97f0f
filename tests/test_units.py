"""The unit of privacy: patient sampling, per-patient sensitivity, unit resolution."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from privmed.errors import PrivmedError
from privmed.models.scatter import FeatureCenter
from privmed.privacy.randomness import secret_generator
from privmed.privacy.units import UNIT_NEEDS_PATIENT_IDS, GroupPoissonSampler, PrivacyUnit, resolve_unit
from privmed.training.centre import set_center
from privmed.privacy.engine import make_private, plan_schedule


def test_patient_is_the_default_unit_when_ids_exist():
    ids = np.array(["b", "a", "b", "c", "b"])
    unit = resolve_unit(None, ids, max_images_per_patient=2, n=5)
    assert unit.name == "patient" and unit.n_units == 3
    assert unit.contributions == 2 + 1 + 1  # b has 3 images, capped at 2
    assert list(unit.groups) == [1, 0, 1, 2, 1]
    assert resolve_unit(None, None, max_images_per_patient=2, n=5).name == "image"
    assert resolve_unit("image", ids, max_images_per_patient=2, n=5).n_units == 5


def test_patient_unit_without_ids_is_refused():
    with pytest.raises(PrivmedError) as err:
        resolve_unit("patient", None, max_images_per_patient=2, n=5)
    assert str(err.value) == UNIT_NEEDS_PATIENT_IDS


def test_sampler_draws_whole_patients_and_caps_their_images():
    groups = np.repeat(np.arange(50), 4)  # 50 patients with 4 images each
    unit = PrivacyUnit("patient", groups, 3)
    sampler = GroupPoissonSampler(unit, sample_rate=0.3, steps_per_epoch=400, generator=torch.Generator().manual_seed(0))
    sizes, rows_seen = [], set()
    for batch in sampler:
        patients, counts = np.unique(groups[batch], return_counts=True)
        assert (counts == 3).all()  # every sampled patient brings exactly k = 3 of their 4 images
        sizes.append(len(patients))
        rows_seen.update(batch)
    assert len(sizes) == 400
    assert np.mean(sizes) == pytest.approx(0.3 * 50, rel=0.05)  # Poisson over patients
    assert len(rows_seen) == 200  # the surplus image is drawn afresh, so every image is used


def test_removing_one_patient_changes_the_update_by_at_most_the_clip_norm():
    """Neighbouring data sets differ by one patient with k images; with every unit sampled and
    no noise, the summed clipped gradient moves by at most the clip norm."""
    torch.manual_seed(0)
    k, clip = 3, 0.5
    x = torch.randn(12, 4) * 50  # large inputs: every per-image gradient is clipped
    x[1] = x[2] = x[0]  # patient 0's images pull the same way, so the bound is reached
    y = torch.ones(12, 1)
    groups = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 4, 5, 5])  # patient 0 has 3 images, as many as k

    def summed_update(keep: np.ndarray) -> torch.Tensor:
        net = nn.Linear(4, 1)
        with torch.no_grad():
            net.weight.zero_(), net.bias.zero_()
        _, g = np.unique(groups[keep], return_inverse=True)
        unit = PrivacyUnit("patient", g.astype(np.int64), k)
        schedule = plan_schedule(unit, batch_size=100, epochs=1)
        assert schedule.sample_rate == 1.0
        fit = make_private(net, torch.optim.SGD(net.parameters(), lr=1.0), TensorDataset(x[keep], y[keep]),
                           unit=unit, schedule=schedule, noise_multiplier=0.0, clip_norm=clip, accountant="rdp")
        fit.optimizer.expected_batch_size = 1
        (xb, yb), = list(fit.loader)
        fit.optimizer.zero_grad()
        nn.BCEWithLogitsLoss(reduction="sum")(fit.module(xb), yb).backward()
        fit.optimizer.step()
        return torch.cat([net.weight.flatten(), net.bias])

    everyone = summed_update(np.arange(12))
    without_patient_0 = summed_update(np.arange(3, 12))
    change = (everyone - without_patient_0).norm().item()
    assert change <= clip + 1e-6
    assert change == pytest.approx(clip, rel=1e-4)  # three aligned images, each clipped to clip/3: tight


def test_centre_release_sensitivity_is_one_patient_whatever_their_image_count():
    torch.manual_seed(0)
    features = torch.randn(10, 16) * 100
    groups = np.array([0, 0, 0, 0, 0, 1, 2, 3, 4, 5])  # patient 0 has five images

    def released_sum(rows: np.ndarray) -> torch.Tensor:
        centre = FeatureCenter(16)
        _, g = np.unique(groups[rows], return_inverse=True)
        set_center(centre, features[rows], noise_multiplier=1e-12, generator=torch.Generator(), groups=g)
        return centre.center.double() * (g.max() + 1)

    change = (released_sum(np.arange(10)) - released_sum(np.arange(5, 10))).norm().item()
    assert change <= math.sqrt(16) + 1e-4


def test_secret_generators_differ_and_replayable_ones_repeat():
    a = torch.randn(5, generator=secret_generator(stream=1))
    b = torch.randn(5, generator=secret_generator(stream=1))
    assert not torch.equal(a, b)
    c = torch.randn(5, generator=secret_generator(stream=1, replay_seed=3))
    d = torch.randn(5, generator=secret_generator(stream=1, replay_seed=3))
    assert torch.equal(c, d)
