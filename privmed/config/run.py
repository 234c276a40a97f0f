"""A whole run's configuration: its sections together, built from nested dicts, and written as ``config.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from privmed import atomic
from privmed.errors import PrivmedError

from .data import DataConfig
from .model import ModelConfig
from .privacy import PrivacyConfig
from .synthetic import SyntheticConfig
from .training import TrainingConfig
from .tune import TuneConfig
from .values import reject_unknown, require, section_from_dict, to_plain


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``privmed train`` run needs."""

    out: str = "runs/latest"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def __post_init__(self) -> None:
        from privmed.models.registry import check_model_choice, recorded_defaults  # fails in a second, before data

        require(isinstance(self.out, str) and self.out.strip() != "", "run", "out", self.out,
                "give the run's folder (--out DIR)")
        check_model_choice(self.model.name, spatial_dims=self.data.spatial_dims, norm=self.model.norm,
                           args=self.model.args)
        for arg, value in recorded_defaults(self.model.name).items():  # in config.yaml even at their default
            self.model.args.setdefault(arg, value)
        if self.synthetic.path is not None and self.synthetic.use == "only" and self.privacy.private:
            raise PrivmedError("synthetic.use = 'only' trains on synthetic images alone and never touches the "
                               "private training split, so DP-SGD has nothing to protect: leave out --epsilon / "
                               "--noise-multiplier. The run's epsilon is then the generator's.")

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML form (tuples as lists, inf as the string 'inf')."""
        return to_plain(dataclasses.asdict(self))

    def identity(self) -> dict[str, Any]:
        """The parts that must not change when a run is resumed (everything but ``out``, the
        evaluation-only bootstrap count, and where and in what chunks it computes)."""
        d = self.to_dict()
        d.pop("out")
        d["training"].pop("bootstrap_resamples")
        d["training"].pop("num_workers")
        d["training"].pop("device")
        d["training"].pop("physical_batch_size")  # memory only (lowered to what fits): never changes the result
        return d


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "privacy": PrivacyConfig, "training": TrainingConfig,
             "synthetic": SyntheticConfig, "tune": TuneConfig}


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts; unknown keys raise :class:`PrivmedError`."""
    reject_unknown(raw, {"out", *_SECTIONS}, "top-level")
    kwargs: dict[str, Any] = {name: section_from_dict(cls, raw.get(name) or {}, name)
                              for name, cls in _SECTIONS.items()}
    if "out" in raw:
        kwargs["out"] = raw["out"] if raw["out"] is None else str(raw["out"])
    return RunConfig(**kwargs)


#: keys added with a new default, and the value a run written before the key existed was trained with
PREDATING_KEYS = {"privacy": {"center": "private"}}


def config_from_run_dict(raw: Mapping[str, Any]) -> RunConfig:
    """The configuration a run directory's ``config.yaml`` (``raw``) was trained with: a key added with a new
    default (:data:`PREDATING_KEYS`) or a model argument recorded since its default changed
    (:func:`privmed.models.registry.predating_args`) takes its old value where the run predates it."""
    from privmed.models.registry import predating_args

    raw = {**raw, **{name: {**old, **(raw.get(name) or {})} for name, old in PREDATING_KEYS.items()}}
    model = dict(raw.get("model") or {})
    model["args"] = {**predating_args(model.get("name", ModelConfig.name)), **(model.get("args") or {})}
    return config_from_dict({**raw, "model": model})


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    atomic.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
