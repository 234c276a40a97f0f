"""The candidates of private evolution: phantom parameter sets, drawn from the phantom's prior, mutated, rendered.

A candidate is one image's rendering parameters of privmed's phantom simulator
(:mod:`privmed.data.phantom`): lesion radius, aspect, contour harmonics, margin, spiculation,
contrast, breast density and background texture. A population is a dict of per-candidate arrays,
the format :func:`privmed.data.phantom.draw._render` renders. Everything here is public: the
prior, the mutation and the rendering read no private data, so seeded randomness is fine
(:mod:`privmed.synth.evolve` uses it only on the DP histogram's output, as post-processing).

The variation step follows Private Evolution's (Lin et al. 2024; Sim-PE 2025): continuous
parameters take Gaussian steps of ``step`` x their prior range, integers (spicule count) move by
one, and every value is clipped to the range the prior gives its class.

What evolves is a choice (:data:`FROM_PRIOR`, ``evolve.vary``): ``all`` parameters, or only the
``appearance`` ones (lesion size and contrast, breast density, tissue texture, noise, exposure
ramp, position), every new candidate then taking its lesion's :data:`MORPHOLOGY` (shape,
contour, margin, spiculation) fresh from its class's prior: the votes can make the images look
like the private data without washing out what separates benign from malignant in the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privmed.data.phantom.draw import _render
from privmed.data.phantom.population import _draw_population
from privmed.data.phantom.spec import PhantomSpec

#: parameters that are labels or metadata, never varied (rendering does not read them)
FIXED = ("malignant", "density")
#: integer parameters: moved by -1, 0 or +1
INTEGERS = ("n_spic",)
#: the lesion's morphology: aspect, contour harmonics, orientation, margin width and spiculation, what separates
#: benign from malignant in the phantom's prior (orientation is not diagnostic; the dihedral vote cannot see it)
MORPHOLOGY = ("aspect", "orient", "amp", "phase", "edge", "n_spic", "spic_angle", "spic_len", "spic_width",
              "spic_rel")
#: ``evolve.vary`` -> the parameters every new candidate takes fresh from its class's prior instead of evolving
FROM_PRIOR: dict[str, tuple[str, ...]] = {"all": (), "appearance": MORPHOLOGY}
#: parameters summarised per round in the evolution's history (mean over the population)
SUMMARISED = ("radius", "contrast", "aspect", "edge", "n_spic", "fat", "dense_gain")
#: candidates drawn once per class to measure the prior's ranges
_RANGE_DRAWS = 2000
_RENDER_CHUNK = 128


@dataclass(frozen=True)
class CandidatePrior:
    """The phantom's prior, per class (0 benign, 1 malignant): fresh draws and each parameter's range."""

    seed: int
    low: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
    high: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]

    @classmethod
    def measured(cls, *, seed: int) -> "CandidatePrior":
        """The prior with each parameter's range per class, from :data:`_RANGE_DRAWS` draws of each class."""
        rng = np.random.default_rng([seed, 0x9E])
        ranges = [_class_draw(c, _RANGE_DRAWS, rng) for c in (0, 1)]
        low = tuple({k: v.min(axis=0) for k, v in r.items()} for r in ranges)
        high = tuple({k: v.max(axis=0) for k, v in r.items()} for r in ranges)
        return cls(seed=seed, low=low, high=high)

    def draw(self, cls: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` fresh candidates of class ``cls`` from the phantom's prior."""
        return _class_draw(cls, n, rng)

    def mutate(self, population: dict[str, np.ndarray], cls: int, *, step: float,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A copy of ``population`` with every varied parameter moved: Gaussian steps of ``step`` x the
        parameter's prior range (integers: -1/0/+1 with probability ``min(1, 2 step)`` of moving), clipped
        to the class's range."""
        out = {}
        for key, value in population.items():
            lo, hi = self.low[cls][key], self.high[cls][key]
            if key in FIXED:
                out[key] = value.copy()
            elif key in INTEGERS:
                moves = rng.integers(-1, 2, size=value.shape) * (rng.random(value.shape) < min(1.0, 2 * step))
                out[key] = np.clip(value + moves, lo, hi).astype(value.dtype)
            else:
                out[key] = np.clip(value + rng.normal(0.0, 1.0, value.shape) * step * (hi - lo), lo, hi)
        return out

    def redraw(self, population: dict[str, np.ndarray], cls: int, keys: tuple[str, ...],
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``population`` with the parameters ``keys`` replaced by those of fresh draws of class ``cls``'s prior
        (taken together from one draw per candidate, so they stay consistent with each other); the rest kept."""
        if not keys:
            return population
        fresh = self.draw(cls, size_of(population), rng)
        return {k: fresh[k] if k in keys else v for k, v in population.items()}


def _class_draw(cls: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` parameter sets of class ``cls``: a phantom population of one image per patient, half malignant,
    of which the class's rows are kept."""
    spec = PhantomSpec(n_samples=max(12, 2 * n + 6), image_size=32, seed=0, images_per_patient=1)
    _, params = _draw_population(spec, rng)
    rows = np.flatnonzero(params["malignant"] == bool(cls))[:n]
    assert len(rows) == n, "a half-malignant phantom population holds n of each class"
    return take(params, rows)


def take(population: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The candidates at ``rows`` (repeats allowed), as a new population."""
    return {k: v[rows] for k, v in population.items()}


def join(*populations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Populations one after the other."""
    return {k: np.concatenate([p[k] for p in populations]) for k in populations[0]}


def size_of(population: dict[str, np.ndarray]) -> int:
    """Number of candidates."""
    return len(next(iter(population.values())))


def render(population: dict[str, np.ndarray], *, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Every candidate's image, float32 (N, S, S) in [0, 1], rendered in chunks (fresh background texture
    and quantum noise from ``rng``)."""
    n = size_of(population)
    images = np.empty((n, image_size, image_size), dtype=np.float32)
    for start in range(0, n, _RENDER_CHUNK):
        rows = slice(start, min(start + _RENDER_CHUNK, n))
        images[rows] = _render(population, rows, image_size, rng)
    return images


def summary(population: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of the :data:`SUMMARISED` parameters over the population."""
    return {key: float(np.mean(population[key])) for key in SUMMARISED}
