"""``privmed synth evolve``: private evolution (PE) of the phantom simulator.

Private Evolution (Lin et al. 2024, "Differentially Private Synthetic Data via Foundation Model
APIs"; its simulator variant Sim-PE, 2025) with privmed's phantom as the simulator:

1. per class, a population of phantom parameter sets drawn from the phantom's prior
   (:mod:`privmed.synth.candidates`; public);
2. every candidate is rendered at the private data's image size and placed in a fixed,
   data-independent feature space (:func:`feature_space`: wavelet scattering, as
   ``scatter_linear`` uses it, each image's grey levels standardised, averaged over its 8
   rotations and reflections); the private training images are placed there once;
3. each private unit (a patient, when the data has patient ids) casts one vote in total, split
   equally over its images, each image voting for the nearest candidate of its own class. A
   unit's contribution to the joint (class, candidate) histogram therefore has L2 norm at most 1,
   and the Gaussian mechanism with noise ``sigma`` releases it (:func:`noisy_histogram`, noise
   from :mod:`privmed.privacy.randomness`, never from the seed);
4. the noisy votes above ``threshold`` x sigma pick the next population: candidates resampled in
   proportion to their votes, mutated by a step that shrinks each round, and a share replaced
   by fresh prior draws (with ``vary: appearance``, every new candidate takes its lesion's morphology
   fresh from its class's prior: only the appearance parameters evolve); steps 2-4 repeat ``rounds`` times;
5. the last histogram picks the written images' parameters (:mod:`privmed.synth.evolve_output`).

The ``rounds`` releases are one accounted stage, ``Mechanism(STAGE, sigma, 1.0, rounds)``
(every unit votes in every round: sample rate 1), whose sigma is calibrated by the accountant
for the target epsilon. Everything after the histograms is post-processing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from privmed import rundir
from privmed.data.sources import Dataset, load_dataset
from privmed.errors import FOLDER_NOT_EMPTY, PrivmedError
from privmed.models.invariance import InvariantFeatures
from privmed.models.scatter import ScatterFeatures
from privmed.privacy.accounting import MAX_NOISE_MULTIPLIER, Mechanism, epsilon_for
from privmed.privacy.ledger import epsilon_text, shown_epsilon
from privmed.privacy.mechanisms import gaussian_release
from privmed.privacy.plan import PrivacyPlan, StageSpec, delta_for, make_plan, protected_unit
from privmed.privacy.randomness import REPLAYABLE_NOT_PRIVATE, secret_generator
from privmed.privacy.units import PrivacyUnit
from privmed.progress import progress

from . import candidates as cand
from .config import EvolveConfig

#: name of the evolution's stage in every ledger that uses its images
STAGE = "private_evolution"
#: how a patient enters the evolution, for the ledger (every image votes; DP-SGD's per-step cap does not apply)
VOTE_CONTRIBUTION = "every round, one vote in all, split over all of the patient's images"
#: keeps a replayable run's vote noise apart from its other streams
VOTES_STREAM = 0x3B7A
#: images are compared at this size at most (a 128 px mass keeps its shape at 64 px; scattering costs 7x less)
FEATURE_SIZE = 64
_FEATURE_BATCH = 64
EVOLVE_EPSILON_UNREACHABLE = ("epsilon={epsilon:g} cannot be reached by {rounds} vote histogram(s) at delta={delta:g}: "
                              "even a noise multiplier of {sigma:g} spends more. Raise --epsilon or use fewer --rounds.")


@dataclass
class Round:
    """What one round released and chose (all of it public: DP output and its post-processing)."""

    number: int
    noisy_votes: tuple[float, float]  # noisy vote total per class
    winners: tuple[int, int]  # candidates with votes above the threshold, per class
    epsilon: float | str  # spent so far ("not private" with replayable noise)
    summary: dict[str, float]  # mean parameters of the voted population (both classes)


def feature_space(image_size: int) -> torch.nn.Module:
    """The fixed feature space votes are cast in: scattering (4x4 pooled, log, per-sample standardised, as
    ``scatter_linear``), each image's grey levels z-scored first and the features averaged over its 8 dihedral
    views; images above :data:`FEATURE_SIZE` px are area-averaged down to it first. No parameters and no data
    statistics: it is the same whatever the private data."""
    size = min(image_size, FEATURE_SIZE)
    inner = ScatterFeatures(1, size, pool_size=4, log_scale=True, norm_groups=1)
    resize = torch.nn.AdaptiveAvgPool2d(size) if size < image_size else torch.nn.Identity()
    return torch.nn.Sequential(resize, InvariantFeatures(inner, input_norm="zscore", dihedral=True)).eval()


@torch.no_grad()
def features(space: torch.nn.Module, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Flat feature vectors (N, D) of images (N, H, W) in [0, 1]."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    return torch.cat([space(x[i:i + _FEATURE_BATCH, None]).flatten(1) for i in range(0, len(x), _FEATURE_BATCH)])


def vote_histogram(private: torch.Tensor, labels: np.ndarray, groups: np.ndarray,
                   candidates: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """The exact (2, P) histogram of votes: each private image votes for the nearest candidate of its class
    (Euclidean, in the feature space) with weight 1 / (its unit's images), so each unit's votes sum to 1 and
    have L2 norm at most 1: the Gaussian mechanism's sensitivity."""
    weights = 1.0 / np.bincount(groups)[groups]
    hist = np.zeros((2, len(candidates[0])), dtype=np.float64)
    for cls in (0, 1):
        rows = np.flatnonzero(labels == cls)
        if len(rows):
            nearest = torch.cdist(private[rows], candidates[cls]).argmin(dim=1).numpy()
            np.add.at(hist[cls], nearest, weights[rows])
    return hist


def noisy_histogram(hist: np.ndarray, *, sigma: float, generator: torch.Generator) -> np.ndarray:
    """The Gaussian mechanism: ``hist`` (sensitivity 1) plus N(0, sigma^2) noise per bin, from a secret generator,
    released by :func:`~privmed.privacy.mechanisms.gaussian_release` (the plan's stage accounts every round)."""
    released, _ = gaussian_release(torch.from_numpy(hist), sensitivity=1.0, noise_multiplier=sigma,
                                   generator=generator, stage=STAGE)
    return released.numpy()


def winners(noisy: np.ndarray, *, threshold: float) -> np.ndarray:
    """Votes above ``threshold`` (PE's count threshold), the rest 0: the resampling weights."""
    return np.clip(noisy - threshold, 0.0, None)


def resample(population: dict, weights: np.ndarray, n: int, rng: np.random.Generator) -> dict:
    """``n`` candidates drawn with replacement in proportion to ``weights`` (uniformly when none is positive)."""
    total = weights.sum()
    p = weights / total if total > 0 else None
    return cand.take(population, rng.choice(len(weights), size=n, p=p))


def offspring(prior: cand.CandidatePrior, population: dict, cls: int, weights: np.ndarray, n: int, *,
              step: float, redrawn: tuple[str, ...], rng: np.random.Generator) -> dict:
    """``n`` winners of class ``cls`` resampled and mutated, their ``redrawn`` parameters fresh from the prior."""
    mutated = prior.mutate(resample(population, weights, n, rng), cls, step=step, rng=rng)
    return prior.redraw(mutated, cls, redrawn, rng)


def next_population(prior: cand.CandidatePrior, population: dict, cls: int, weights: np.ndarray, *,
                    step: float, fresh: float, rng: np.random.Generator, redrawn: tuple[str, ...] = ()) -> dict:
    """The next round's candidates of class ``cls``: the winners resampled and mutated (their ``redrawn``
    parameters fresh from the prior), plus fresh prior draws."""
    size = cand.size_of(population)
    n_fresh = int(round(fresh * size))
    kept = offspring(prior, population, cls, weights, size - n_fresh, step=step, redrawn=redrawn, rng=rng)
    return cand.join(kept, prior.draw(cls, n_fresh, rng)) if n_fresh else kept


def plan_votes(config: EvolveConfig, unit: PrivacyUnit) -> PrivacyPlan:
    """The evolution's privacy plan: ``rounds`` full releases (every unit votes every round: sample rate 1), their
    noise the given noise multiplier or calibrated by the plan to the target; delta checked."""
    p, rounds = config.privacy, config.evolve.rounds
    stage = StageSpec(STAGE, 1.0, rounds)
    if p.noise_multiplier is None:
        target = p.epsilon if p.total_epsilon is None else p.total_epsilon
        delta = delta_for(unit, p.delta, check=True)
        if epsilon_for([Mechanism(STAGE, MAX_NOISE_MULTIPLIER, 1.0, rounds)], delta=delta,
                       accountant=p.accountant) > target:
            raise PrivmedError(EVOLVE_EPSILON_UNREACHABLE.format(epsilon=target, rounds=rounds, delta=delta,
                                                                 sigma=MAX_NOISE_MULTIPLIER))
    return make_plan(p, unit=unit, stages=[stage], seed=config.evolve.seed, check_delta=True)


def load_private(config: EvolveConfig) -> tuple[Dataset, PrivacyPlan]:
    """The private training split (val and test never vote) and its privacy plan (unit, delta checked, noise)."""
    real = load_dataset(config.data, require_splits=("train",)).split("train")
    unit = protected_unit(config.privacy, patient_ids=real.patient_ids, n=len(real))
    unit = dataclasses.replace(unit, max_per_unit=int(np.bincount(unit.groups).max()))  # every image votes
    return real, plan_votes(config, unit)


def evolve(config: EvolveConfig) -> Path:
    """Run private evolution as ``config`` says and write its folder (:mod:`.evolve_output`); returns its path."""
    from .evolve_output import class_names, write_output

    out, e, p = Path(config.out), config.evolve, config.privacy
    if not rundir.is_new_or_empty(out):
        raise PrivmedError(FOLDER_NOT_EMPTY.format(path=out, what="evolved images", option="--out"))
    real, plan = load_private(config)
    rundir.check_folder_names(class_names(real), "the data's class names, which name the output's folders")
    unit, sigma = plan.unit, plan.noise_multiplier
    size = config.data.image_size
    space = feature_space(size)
    private = features(space, real.images)
    labels = real.labels[:, 0].astype(int)
    prior = cand.CandidatePrior.measured(seed=e.seed)
    rng = np.random.default_rng([e.seed, 0xE7])  # public: candidates only, never the votes' noise
    noise = secret_generator(stream=VOTES_STREAM, replay_seed=plan.replay_seed)
    population = [prior.draw(c, e.population, rng) for c in (0, 1)]
    history: list[Round] = []
    redrawn = cand.FROM_PRIOR[e.vary]
    bar = progress(range(e.rounds), desc="private evolution", unit="round")
    for t in bar:
        voted = population
        shown = tuple(features(space, cand.render(pop, image_size=size, rng=rng)) for pop in voted)
        noisy = noisy_histogram(vote_histogram(private, labels, unit.groups, shown), sigma=sigma, generator=noise)
        weights = winners(noisy, threshold=e.threshold * sigma)
        spent = shown_epsilon(plan.epsilon([plan.spent(STAGE, t + 1)]), private=not p.replayable_noise)
        history.append(Round(t + 1, tuple(float(v) for v in noisy.sum(axis=1)),
                             tuple(int(v) for v in (weights > 0).sum(axis=1)), spent, cand.summary(cand.join(*voted))))
        bar.set_postfix(votes="/".join(f"{v:.0f}" for v in history[-1].noisy_votes),
                        winners="/".join(map(str, history[-1].winners)), eps=epsilon_text(spent))
        step = e.step * e.decay ** t
        population = [next_population(prior, voted[c], c, weights[c], step=step, fresh=e.fresh, rng=rng,
                                      redrawn=redrawn) for c in (0, 1)]
    bar.close()
    final = [offspring(prior, voted[c], c, weights[c], e.n // 2, step=e.step * e.decay ** e.rounds,
                       redrawn=redrawn, rng=rng) for c in (0, 1)]
    ledger = plan.start_ledger(n_private=len(real), clip_norm=1.0, contribution=VOTE_CONTRIBUTION)
    ledger.mechanisms.append(plan.stage(STAGE))
    if p.replayable_noise:
        ledger.non_private_reasons.append(REPLAYABLE_NOT_PRIVATE)
    return write_output(config, final, ledger=ledger, history=history, real=real, rng=rng)


def prior_means(*, seed: int, n: int = 2000) -> dict[str, float]:
    """Mean parameters of the phantom's prior (both classes): what an evolved population is compared with."""
    prior = cand.CandidatePrior.measured(seed=seed)
    rng = np.random.default_rng([seed, 0xF0])
    return cand.summary(cand.join(*(prior.draw(c, n, rng) for c in (0, 1))))


def epsilon_of(folder: str | Path) -> float:
    """The composed epsilon an evolved folder's record states (``math.inf`` when not private)."""
    record = rundir.read_record(Path(folder))
    return record.epsilon if record.private else math.inf
