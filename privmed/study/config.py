"""A study file: one data set, a grid of runs, the attributes whose fairness to analyse.

Every cell of the grid is an ordinary ``privmed train`` run; the study file only says how
the cells differ. Unknown keys are an error, and every cell's run configuration is built
(and so validated) when the study is loaded, before anything trains::

    name: cbis-paper
    base:                        # a run configuration (data/model/privacy/training/synthetic)
      data: {path: ../shared/data/cbis-ddsm-masses, image_size: 128}
      training: {epochs: 40, lr: 0.3}
    strategies:                  # name -> how its runs differ from the base
      dp_sgd_real: {}
      pretrain_finetune: {synthetic: {path: ../shared/data/mcgan-synthetic, use: pretrain}}
      dp_generator_pretrain: {generator: g1, synthetic: {use: pretrain}}
      synthetic_only: {synthetic: {path: ../shared/data/mcgan-synthetic, use: only}, epsilons: [inf]}
    generators:                  # optional: trained once with `privmed synth train`, then sampled
      g1: {data: {image_size: 64}, privacy: {epsilon: 1}, gan: {discriminator: scatter}, samples: 3000}
      phantom: {kind: phantom, samples: 3000}   # privmed's phantom: no patient data, costs no privacy
    epsilons: [1, 6, inf]        # the classifier's target epsilon (a generator's is composed on top)
    privacy: {target: total, generator_share: 0.5}   # optional: epsilons are each run's total with its generator
    seeds: [0, 1, 2]
    models: [scatter_linear]     # optional; default: the base's model
    external: [{name: bcdr, path: data/bcdr, split: test}]
    audit: {canaries: 500, shadows: 8, strategies: [dp_sgd_real], epsilons: [1, inf]}   # one-run audit (+ LiRA)
    fairness: {attributes: [breast_density, view], bins: {age: [0, 50, 65, 120]}, privileged: {view: CC}}
    workers: 2
    tune: {lr: [0.1, 0.3], epochs: [15, 40]}   # optional: a private search in every run, composed into its epsilon
    validation_choices: ["The learning rate was chosen on the validation split in ..."]

Paths are relative to the directory the command runs in, as for ``privmed train``.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from privmed.audit.config import AuditConfig
from privmed.config import MAX_SEED, RunConfig, config_from_dict, load_yaml, merge, reject_unknown
from privmed.errors import PrivmedError
from privmed.evaluation.fairness import MIN_GROUP_SIZE
from privmed.synth.config import GeneratorConfig, generator_config_from_dict

from .budget import StudyPrivacy, cell_generator, split_generators, study_privacy
from .values import BAD_STUDY_VALUE, NEEDS_LIST, _integer, _list, _real, _section, _seeds, _text

STUDY_KEYS = ("name", "description", "base", "strategies", "generators", "epsilons", "seeds", "models", "external",
              "fairness", "audit", "workers", "validation_choices", "tune", "privacy")
AUDIT_KEYS = ("shadows", "canaries", "canary_kind", "strategies", "epsilons", "seeds")
AUDIT_SYNTHETIC = ("audit.strategies: {strategy!r} trains with synthetic images, and membership audits of such runs "
                   "are not supported; leave it out (audit its generator with `privmed audit-synthetic`).")
STRATEGY_KEYS = ("data", "model", "privacy", "training", "synthetic", "generator", "epsilons", "tune")
GENERATOR_KEYS = ("kind", "data", "privacy", "gan", "samples", "sample_seed")
#: ``gan``: ``privmed synth train`` on the private training split; ``phantom``: privmed's phantom (no data)
GENERATOR_KINDS = ("gan", "phantom")
UNKNOWN_KIND = "generators.{name}.kind {kind!r} is not one of {kinds}."
PHANTOM_TRAINS_NOTHING = ("generators.{name}: the phantom is drawn by a fixed program from no patient data, so it "
                          "takes no {keys}; leave {them} out (it writes 'samples' images of the study's image size, "
                          "or data.image_size, from 'sample_seed').")
FAIRNESS_KEYS = ("attributes", "bins", "privileged")
EXTERNAL_KEYS = ("name", "path", "split")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
BAD_NAME = "{what} name {name!r} must be letters, digits, '_', '.', '-' (it names folders)."
CELL_INVALID = "study cell {cell}: {error}"
UNKNOWN_GENERATOR = "strategy {strategy!r} uses generator {generator!r}, but the study's generators are {known}."
GENERATOR_AND_PATH = ("strategy {strategy!r} gives both a generator and synthetic.path; the generator's samples are "
                      "the synthetic data, so leave out synthetic.path.")


@dataclass(frozen=True)
class GeneratorSpec:
    """A generator made once for the study and sampled once: a GAN trained on the private training
    split (``kind='gan'``, ``privmed synth train``), or privmed's phantom (``kind='phantom'``), which
    sees no patient data and costs no privacy; for the phantom only ``config.data.image_size`` is used."""

    name: str
    config: GeneratorConfig
    samples: int = 3000
    sample_seed: int = 0
    kind: str = "gan"


@dataclass(frozen=True)
class StrategySpec:
    """How a strategy's runs differ from the base run configuration."""

    name: str
    overrides: Mapping[str, Any]
    generator: str | None = None
    epsilons: tuple[float, ...] | None = None  # None: the study's


@dataclass(frozen=True)
class ExternalSpec:
    """A data set every finished run is also evaluated on (thresholds from the run's validation split)."""

    name: str
    path: str
    split: str = "test"


@dataclass(frozen=True)
class FairnessSpec:
    """Attribute columns to analyse; ``bins`` cut numeric ones (edges, right-inclusive);
    ``privileged`` names the reference group of a two-group attribute."""

    attributes: tuple[str, ...] = ()
    bins: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    privileged: Mapping[str, str] = field(default_factory=dict)
    min_group_size: int = MIN_GROUP_SIZE


@dataclass(frozen=True)
class AuditSpec:
    """Which runs to attack after training (``privmed audit``), and how hard. ``None`` lists mean
    every strategy trained on real data only, every epsilon, the study's first seed."""

    shadows: int = AuditConfig.shadows
    canaries: int = AuditConfig.canaries
    canary_kind: str = AuditConfig.canary_kind
    strategies: tuple[str, ...] | None = None
    epsilons: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    run_id: str
    strategy: str
    model: str
    epsilon: float
    seed: int
    generator: str | None
    config: RunConfig


@dataclass(frozen=True)
class StudyConfig:
    """A whole study, validated: every cell's run configuration already built."""

    name: str
    base: Mapping[str, Any]
    strategies: tuple[StrategySpec, ...]
    epsilons: tuple[float, ...]
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    generators: tuple[GeneratorSpec, ...] = ()
    external: tuple[ExternalSpec, ...] = ()
    fairness: FairnessSpec = field(default_factory=FairnessSpec)
    audit: AuditSpec | None = None
    workers: int = 1
    description: str = ""
    validation_choices: tuple[str, ...] = ()
    privacy: StudyPrivacy = field(default_factory=StudyPrivacy)  # what epsilons bound (privmed.study.budget)

    def cells(self, out: Path) -> list[Cell]:
        """Every run of the grid, with its run directory under ``out/runs``."""
        cells = []
        for strategy in self.strategies:
            for model in self.models:
                for epsilon in strategy.epsilons or self.epsilons:
                    for seed in self.seeds:
                        cells.append(_cell(self, strategy, model, epsilon, seed, out))
        return cells

    def generator(self, name: str) -> GeneratorSpec:
        return next(g for g in self.generators if g.name == name)

    def audited(self, cell: Cell) -> bool:
        """Whether the study's audit attacks this run."""
        a = self.audit
        if a is None:
            return False
        strategies = a.strategies or tuple(s.name for s in self.strategies if not _uses_synthetic(s))
        return (cell.strategy in strategies and cell.epsilon in (a.epsilons or self.epsilons)
                and cell.seed in (a.seeds or self.seeds[:1]))


def load_study(path: str | Path) -> tuple[StudyConfig, dict[str, Any]]:
    """The validated study and the raw dictionary it came from."""
    raw = load_yaml(path)
    return study_from_dict(raw), raw


def study_from_dict(raw: Mapping[str, Any]) -> StudyConfig:
    """Validate a study dictionary; every cell is built once here so that a bad cell fails now."""
    _reject(raw, STUDY_KEYS, "study")
    for key in ("name", "base", "strategies", "epsilons", "seeds"):
        if key not in raw:
            raise PrivmedError(f"the study file needs '{key}' (see `privmed study --help` for the layout).")
    name = _name(raw["name"], "study")
    base = dict(_section(raw["base"], "base"))
    if "out" in base:
        raise PrivmedError("the study's base must not set 'out': every run's directory is OUT/runs/<run id>.")
    if raw.get("tune"):  # a private search in every run (a strategy's tune keys override these)
        base = merge(base, {"tune": _mapping(raw["tune"], "tune")})
    generators = tuple(_generator(n, spec or {}, base) for n, spec in _section(raw.get("generators"), "generators").items())
    strategies = tuple(_strategy(n, spec or {}, {g.name for g in generators})
                       for n, spec in _mapping(raw["strategies"], "strategies").items())
    models = (tuple(_text(m, "models") for m in _list(raw["models"], "models")) if raw.get("models") is not None
              else (config_from_dict(base).model.name,))
    epsilons, privacy = _epsilons(raw["epsilons"], "epsilons"), study_privacy(raw.get("privacy"))
    generators = split_generators(generators, [(s.name, s.generator, e) for s in strategies if s.generator
                                               for e in s.epsilons or epsilons], privacy)
    study = StudyConfig(
        name=name, base=base, strategies=strategies, epsilons=epsilons, privacy=privacy,
        seeds=_seeds(raw["seeds"], "seeds"), models=models, generators=generators,
        external=tuple(_external(spec) for spec in (_list(raw["external"], "external") if raw.get("external")
                                                    else [])),
        fairness=_fairness(raw.get("fairness") or {}),
        audit=_audit(raw["audit"] or {}, strategies) if "audit" in raw else None, workers=_integer(raw.get("workers", 1), "workers"),
        description=str(raw.get("description", "")),
        validation_choices=tuple(str(s) for s in (_list(raw["validation_choices"], "validation_choices")
                                                  if raw.get("validation_choices") else [])))
    if study.workers < 1:
        raise PrivmedError(f"study key 'workers' must be >= 1, got {study.workers}.")
    study.cells(Path("OUT"))  # builds every cell: configuration errors surface before anything runs
    return study


def epsilon_label(epsilon: float) -> str:
    """``1``, ``0.5``, ``inf``: as in run ids and tables."""
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


def _cell(study: StudyConfig, strategy: StrategySpec, model: str, epsilon: float, seed: int, out: Path) -> Cell:
    parts = [strategy.name] + ([model] if len(study.models) > 1 else []) + [f"eps{epsilon_label(epsilon)}",
                                                                             f"seed{seed}"]
    run_id = "__".join(parts)
    raw = merge(copy.deepcopy(dict(study.base)), {k: v for k, v in strategy.overrides.items()})
    raw = merge(raw, {"model": {"name": model}, "privacy": study.privacy.run_privacy(epsilon),
                      "training": {"seed": seed}, "out": str(out / "runs" / run_id)})
    generator = cell_generator(strategy.generator, epsilon, study.generators)
    if generator is not None:
        raw = merge(raw, {"synthetic": {"path": str(generator_samples(out, generator))}})
    try:
        config = config_from_dict(raw)
    except PrivmedError as err:
        hint = (" (a strategy that trains on synthetic images only takes `epsilons: [inf]`)"
                if "synthetic.use = 'only'" in str(err) else "")
        raise PrivmedError(CELL_INVALID.format(cell=run_id, error=f"{err}{hint}")) from None
    return Cell(run_id, strategy.name, model, epsilon, seed, generator, config)


def generator_dir(out: Path, name: str) -> Path:
    return Path(out) / "generators" / name


def generator_samples(out: Path, name: str) -> Path:
    return generator_dir(out, name) / "samples"


def _generator(name: str, spec: Mapping[str, Any], base: Mapping[str, Any]) -> GeneratorSpec:
    _name(name, "generator")
    _reject(spec, GENERATOR_KEYS, f"generators.{name}")
    kind = spec.get("kind", "gan")
    if kind not in GENERATOR_KINDS:
        raise PrivmedError(UNKNOWN_KIND.format(name=name, kind=kind, kinds=list(GENERATOR_KINDS)))
    trained_keys = [k for k in ("privacy", "gan") if k in spec]
    if kind == "phantom" and trained_keys:
        raise PrivmedError(PHANTOM_TRAINS_NOTHING.format(name=name, keys=" or ".join(f"'{k}'" for k in trained_keys),
                                                         them="it" if len(trained_keys) == 1 else "them"))
    raw = {"data": merge(dict(base.get("data") or {}), dict(spec.get("data") or {})),
           "privacy": dict(spec.get("privacy") or {}),
           "gan": dict(spec.get("gan") or {})}
    return GeneratorSpec(name, generator_config_from_dict(raw), _integer(spec.get("samples", 3000), f"generators.{name}.samples"),
                         _integer(spec.get("sample_seed", 0), f"generators.{name}.sample_seed", most=MAX_SEED), kind)


def _strategy(name: str, spec: Mapping[str, Any], generators: set[str]) -> StrategySpec:
    _name(name, "strategy")
    _reject(spec, STRATEGY_KEYS, f"strategies.{name}")
    generator = spec.get("generator")
    if generator is not None and generator not in generators:
        raise PrivmedError(UNKNOWN_GENERATOR.format(strategy=name, generator=generator, known=sorted(generators)))
    if generator is not None and (spec.get("synthetic") or {}).get("path") is not None:
        raise PrivmedError(GENERATOR_AND_PATH.format(strategy=name))
    overrides = {k: v for k, v in spec.items() if k not in ("generator", "epsilons")}
    epsilons = _epsilons(spec["epsilons"], f"strategies.{name}.epsilons") if "epsilons" in spec else None
    return StrategySpec(name, overrides, generator, epsilons)


def _uses_synthetic(strategy: StrategySpec) -> bool:
    return strategy.generator is not None or (strategy.overrides.get("synthetic") or {}).get("path") is not None


def _audit(spec: Mapping[str, Any], strategies: tuple[StrategySpec, ...]) -> AuditSpec:
    _reject(spec, AUDIT_KEYS, "audit")
    chosen = tuple(str(s) for s in spec["strategies"]) if spec.get("strategies") else None
    by_name = {s.name: s for s in strategies}
    for name in chosen or ():
        if name not in by_name:
            raise PrivmedError(f"audit.strategies: {name!r} is not a strategy of the study ({sorted(by_name)}).")
        if _uses_synthetic(by_name[name]):
            raise PrivmedError(AUDIT_SYNTHETIC.format(strategy=name))
    audit = AuditSpec(shadows=_integer(spec.get("shadows", AuditSpec.shadows), "audit.shadows", least=0),
                      canaries=_integer(spec.get("canaries", AuditSpec.canaries), "audit.canaries", least=0),
                      canary_kind=str(spec.get("canary_kind", AuditSpec.canary_kind)), strategies=chosen,
                      epsilons=_epsilons(spec["epsilons"], "audit.epsilons") if spec.get("epsilons") else None,
                      seeds=_seeds(spec["seeds"], "audit.seeds") if spec.get("seeds") else None)
    AuditConfig(shadows=audit.shadows, canaries=audit.canaries, canary_kind=audit.canary_kind)  # validates
    return audit


def _external(spec: Mapping[str, Any]) -> ExternalSpec:
    _reject(spec, EXTERNAL_KEYS, "external")
    if "name" not in spec or "path" not in spec:
        raise PrivmedError("each external test set needs a 'name' and a 'path'.")
    from privmed.evaluation.external import check_split_name

    return ExternalSpec(_name(spec["name"], "external test set"), str(spec["path"]),
                        check_split_name(str(spec.get("split", "test"))))


def _fairness(spec: Mapping[str, Any]) -> FairnessSpec:
    _reject(spec, FAIRNESS_KEYS, "fairness")
    attributes = tuple(str(a) for a in spec.get("attributes") or [])
    bins = {str(k): tuple(_real(e, f"fairness.bins.{k}") for e in _list(v, f"fairness.bins.{k}"))
            for k, v in _section(spec.get("bins"), "fairness.bins").items()}
    privileged = {str(k): str(v) for k, v in _section(spec.get("privileged"), "fairness.privileged").items()}
    for key in list(bins) + list(privileged):
        if key not in attributes:
            raise PrivmedError(f"fairness: {key!r} has bins or a privileged group but is not in fairness.attributes "
                               f"{list(attributes)}.")
    for key, edges in bins.items():
        if len(edges) < 3 or list(edges) != sorted(set(edges)):
            raise PrivmedError(f"fairness.bins.{key} = {list(edges)}: give at least 3 increasing edges "
                               f"(two or more bins).")
    return FairnessSpec(attributes, bins, privileged)


def _epsilons(values: Any, key: str) -> tuple[float, ...]:
    out: dict[str, Any] = {}
    for value in _list(values, key):
        eps = _real(value, key)
        if not eps > 0:
            raise PrivmedError(f"study key '{key}': epsilon {value!r} must be > 0 (or inf for non-private).")
        label = epsilon_label(eps)
        if label in out:  # one run id, one run folder: the second would be taken for the first
            raise PrivmedError(BAD_STUDY_VALUE.format(key=key, value=list(values), why=(
                f"{out[label]!r} and {value!r} both give run ids 'eps{label}' (ids keep 6 significant digits); "
                f"give each epsilon once, differing in its first 6 digits")))
        out[label] = value
    return tuple(_real(v, key) for v in out.values())


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise PrivmedError(f"study key '{key}' must map names to settings, got {value!r}.")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise PrivmedError(BAD_NAME.format(what=what, name=value))
    return value


def _reject(section: Any, known: tuple[str, ...], where: str) -> None:
    if not isinstance(section, Mapping):
        raise PrivmedError(f"study section '{where}' must be a mapping, got {section!r}.")
    reject_unknown(section, set(known), where)
