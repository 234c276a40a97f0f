"""Properties of the privacy core that every input must keep, checked by Hypothesis on drawn inputs:

* the clipping bound: after Opacus's per-sample clipping in privmed's DP step, each unit's (each patient's, or
  each image's) contribution to the summed gradient has norm at most the clip bound, whatever the data, the
  number of images a patient has and the cap k on their images per step;
* the patient sampler: a batch holds whole units only (all of a sampled patient's images up to k, each of them
  theirs) and includes each unit at the sample rate, within a binomial bound;
* composition: the accountant's epsilon grows with the steps and as the noise falls, a stage composed with no
  prior (or with a stage of no steps) is the stage alone, and noise calibrated with an empty prior spends at most
  its target.

Examples are fixed (``derandomize``), so a failure repeats; ``PRIVMED_FUZZ_EXAMPLES=N`` draws N fresh ones.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from privmed import Mechanism, calibrate_noise, epsilon_for
from privmed.privacy.units import GroupPoissonSampler, PrivacyUnit
from privmed.privacy.engine import make_private, plan_schedule

HUNT = int(os.environ.get("PRIVMED_FUZZ_EXAMPLES", "0"))


def examples(n: int):
    return settings(max_examples=HUNT or n, deadline=None, derandomize=not HUNT, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


#: images per unit: 1 to 5 images for each of 1 to 12 patients
images_per_unit = st.lists(st.integers(1, 5), min_size=1, max_size=12)


def groups_of(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts).astype(np.int64)


# --------------------------------------------------------------------------- the clipping bound


def unit_contributions(fit, x: torch.Tensor, y: torch.Tensor, groups: np.ndarray, batch: list[int]
                       ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Each unit's clipped contribution to one batch's summed gradient (Opacus's ``clip_and_accumulate`` over its
    rows alone: clipping is per sample, so the batch's sum is the sum of these), and the batch's own sum."""
    def summed(rows: list[int]) -> torch.Tensor:
        fit.optimizer.zero_grad()
        fit.criterion(fit.module(x[rows]), y[rows]).backward()  # the mean loss training uses: Opacus's per-sample
        # gradients are then each sample's own, whatever the batch's size
        fit.optimizer.clip_and_accumulate()
        return torch.cat([p.summed_grad.flatten() for p in fit.optimizer.params])

    by_unit = {int(u): summed([i for i in batch if groups[i] == u]) for u in np.unique(groups[batch])}
    return by_unit, summed(batch)


@examples(10)
@given(counts=images_per_unit, k=st.integers(1, 4), clip=st.floats(0.01, 10.0),
       scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16), patient=st.booleans())
def test_every_units_clipped_contribution_is_at_most_the_clip_bound(counts, k, clip, scale, seed, patient):
    torch.manual_seed(seed)
    groups = groups_of(counts) if patient else np.arange(sum(counts), dtype=np.int64)
    unit = PrivacyUnit("patient" if patient else "image", groups, k if patient else 1)
    x = torch.randn(len(groups), 3) * scale
    y = torch.randint(0, 2, (len(groups), 1)).float()
    net = nn.Linear(3, 1)
    schedule = plan_schedule(unit, batch_size=len(groups), epochs=1)  # every unit in every step
    fit = make_private(net, torch.optim.SGD(net.parameters(), lr=0.1), TensorDataset(x, y), unit=unit,
                       schedule=schedule, noise_multiplier=0.0, clip_norm=clip, accountant="rdp")
    try:
        batch = next(iter(fit.loader.batch_sampler))
        by_unit, whole = unit_contributions(fit, x, y, groups, batch)
    finally:
        fit.close()
    assert set(by_unit) == set(np.unique(groups).tolist())  # sample rate 1: every unit is in the batch
    for u, contribution in by_unit.items():
        assert contribution.norm().item() <= clip * (1 + 1e-5), (u, contribution.norm().item(), clip)
    assert torch.allclose(sum(by_unit.values()), whole, atol=1e-5 * max(1.0, clip * len(by_unit)))


# --------------------------------------------------------------------------- the patient sampler


@examples(30)
@given(counts=images_per_unit, k=st.integers(1, 4), rate=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_batches_hold_whole_units_and_include_each_at_the_sample_rate(counts, k, rate, seed):
    groups = groups_of(counts)
    unit = PrivacyUnit("patient", groups, k)
    steps = 200
    sampler = GroupPoissonSampler(unit, sample_rate=rate, steps_per_epoch=steps,
                                  generator=torch.Generator().manual_seed(seed))
    included = 0
    for batch in sampler:
        assert len(batch) == len(set(batch))  # no image twice in a step
        sampled, taken = np.unique(groups[batch], return_counts=True) if batch else (np.array([], int), [])
        for u, n in zip(sampled, taken):
            assert n == min(counts[u], k), "a sampled patient brings all of their images, up to k, never part"
        included += len(sampled)
    trials = steps * unit.n_units
    spread = math.sqrt(trials * rate * (1 - rate))
    assert abs(included - trials * rate) <= 5 * spread + 1, (included, trials * rate)


# --------------------------------------------------------------------------- composition

DELTA = 1e-5
noise = st.floats(0.6, 8.0)
rate = st.floats(0.001, 0.2)
steps = st.integers(1, 2000)


@examples(8)
@given(sigma=noise, q=rate, n=steps, more=st.integers(1, 2000))
def test_epsilon_grows_with_the_steps(sigma, q, n, more):
    fewer = epsilon_for([Mechanism("s", sigma, q, n)], delta=DELTA)
    assert fewer <= epsilon_for([Mechanism("s", sigma, q, n + more)], delta=DELTA) * (1 + 1e-6) + 1e-9


@examples(8)
@given(sigma=noise, q=rate, n=steps, factor=st.floats(1.05, 3.0))
def test_epsilon_grows_as_the_noise_falls(sigma, q, n, factor):
    noisier = epsilon_for([Mechanism("s", sigma * factor, q, n)], delta=DELTA)
    assert noisier <= epsilon_for([Mechanism("s", sigma, q, n)], delta=DELTA) * (1 + 1e-6) + 1e-9


@examples(6)
@given(sigma=noise, q=rate, n=steps)
def test_a_stage_composed_with_no_prior_is_the_stage_alone(sigma, q, n):
    stage = Mechanism("s", sigma, q, n)
    alone = epsilon_for([stage], delta=DELTA)
    assert epsilon_for([*(), stage], delta=DELTA) == alone
    assert epsilon_for([Mechanism("empty", 1.0, q, 0), stage], delta=DELTA) == alone  # a stage of no steps
    assert epsilon_for([], delta=DELTA) == 0.0


@examples(3)
@given(target=st.floats(0.5, 8.0), q=rate, n=st.integers(10, 1000))
def test_noise_calibrated_with_an_empty_prior_spends_at_most_the_target_alone(target, q, n):
    sigma = calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=q, steps=n, prior=())
    assert epsilon_for([Mechanism("dp_sgd", sigma, q, n)], delta=DELTA) <= target * (1 + 1e-6)
