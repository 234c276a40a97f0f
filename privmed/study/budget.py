"""What a study's ``epsilons`` bound: each run's own stages, or each run's total with its generator.

A study file's ``privacy`` section (optional)::

    privacy: {target: total, generator_share: 0.5}

* ``target: classifier`` (the default): each ``epsilons`` value is a run's ``privacy.epsilon``, its own stages
  (feature centre, DP-SGD, every search candidate); a DP generator's stages are composed on top.
* ``target: total``: each value is a run's ``privacy.total_epsilon``: its own stages *and* the recorded stages of
  its generator compose to it (:mod:`privmed.privacy.plan`). A study generator of kind ``gan`` whose own
  ``privacy`` section sets no epsilon or noise is then trained once per total, at
  ``generator_share`` x total (its epsilon alone; default :data:`GENERATOR_SHARE`), and the classifier gets the
  rest through the accountant (composition spends less than the sum, so the classifier's own epsilon is more
  than (1 - share) x total). A generator whose section sets its epsilon is trained once, at it, and the classifier
  gets what it leaves of each total.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from privmed.config import reject_unknown
from privmed.errors import PrivmedError

from .values import BAD_STUDY_VALUE, _real

TARGETS = ("classifier", "total")
#: the generator's share of a run's total epsilon (its epsilon alone), unless ``privacy.generator_share`` says
GENERATOR_SHARE = 0.5
PRIVACY_KEYS = ("target", "generator_share")
GENERATOR_SPENDS_TOTAL = ("generators.{name} is trained at epsilon {epsilon:g}, which alone reaches the total "
                          "epsilon {total:g} of strategy {strategy!r}: leave privacy.epsilon out of the generator "
                          "(it then gets privacy.generator_share of each total), or drop that total.")


@dataclass(frozen=True)
class StudyPrivacy:
    """The study's ``privacy`` section: what ``epsilons`` bound, and a generator's share of a total."""

    target: str = "classifier"
    generator_share: float = GENERATOR_SHARE

    @property
    def total(self) -> bool:
        return self.target == "total"

    def run_privacy(self, epsilon: float) -> dict[str, float]:
        """The privacy keys of a run at grid value ``epsilon`` (inf: not private)."""
        return {"total_epsilon": epsilon} if self.total and math.isfinite(epsilon) else {"epsilon": epsilon}


def study_privacy(section: Any) -> StudyPrivacy:
    """The validated ``privacy`` section of a study file (absent: the classifier's epsilon, as before)."""
    section = section or {}
    if not isinstance(section, Mapping):
        raise PrivmedError(f"study section 'privacy' must be a mapping, got {section!r}.")
    reject_unknown(section, set(PRIVACY_KEYS), "privacy")
    target = section.get("target", "classifier")
    if target not in TARGETS:
        raise PrivmedError(BAD_STUDY_VALUE.format(key="privacy.target", value=target, why=(
            "use 'classifier' (epsilons bound each run's own stages) or 'total' (each run with its generator)")))
    share = _real(section.get("generator_share", GENERATOR_SHARE), "privacy.generator_share")
    if not 0 < share < 1:
        raise PrivmedError(BAD_STUDY_VALUE.format(key="privacy.generator_share", value=share,
                                                  why="give a fraction between 0 and 1 (exclusive)"))
    return StudyPrivacy(target, share)


def generator_name(name: str, epsilon: float) -> str:
    """The generator trained for one total: ``g1__total2`` (a folder of its own)."""
    return f"{name}__total{epsilon:g}"


def shares_total(spec: Any) -> bool:
    """Whether a study generator takes its epsilon from the runs' totals: a GAN whose section sets no target."""
    p = spec.config.privacy
    return spec.kind == "gan" and not p.private


def split_generators(generators: tuple, uses: Iterable[tuple[str, str, float]], privacy: StudyPrivacy) -> tuple:
    """The study's generators with every one that shares a total replaced by one per total it is used at
    (``uses``: strategy, generator, epsilon of each cell), at ``generator_share`` x total; a non-private grid
    value (inf) keeps the generator as given."""
    if not privacy.total:
        return generators
    by_name = {g.name: g for g in generators}
    uses = list(uses)
    wanted: dict[str, Any] = {}
    for strategy, name, epsilon in uses:
        spec = by_name[name]
        if not math.isfinite(epsilon) or not shares_total(spec):
            _check_fixed(spec, strategy, epsilon)
            wanted.setdefault(name, spec)
            continue
        share = dataclasses.replace(spec.config.privacy, epsilon=privacy.generator_share * epsilon)
        wanted.setdefault(generator_name(name, epsilon), dataclasses.replace(
            spec, name=generator_name(name, epsilon), config=dataclasses.replace(spec.config, privacy=share)))
    used = {name for _, name, _ in uses}
    return tuple(wanted.values()) + tuple(g for g in generators if g.name not in used)


def _check_fixed(spec: Any, strategy: str, total: float) -> None:
    p = spec.config.privacy
    if spec.kind == "gan" and math.isfinite(total) and math.isfinite(p.epsilon) and p.epsilon >= total:
        raise PrivmedError(GENERATOR_SPENDS_TOTAL.format(name=spec.name, epsilon=p.epsilon, total=total,
                                                         strategy=strategy))


def cell_generator(name: str | None, epsilon: float, generators: tuple) -> str | None:
    """The generator a cell at ``epsilon`` uses: the one trained for its total where there is one."""
    if name is None:
        return None
    split = generator_name(name, epsilon)
    return split if any(g.name == split for g in generators) else name
