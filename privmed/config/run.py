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
from .migrate import CONFIG_VERSION, UNVERSIONED, VERSION_KEY, migrate
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
        """Plain-YAML form (tuples as lists, inf as the string 'inf'), headed by its ``config_version``."""
        return {VERSION_KEY: CONFIG_VERSION, **to_plain(dataclasses.asdict(self))}

    def identity(self) -> dict[str, Any]:
        """The parts that must not change when a run is resumed (everything but ``out``, the
        evaluation-only bootstrap count, and where and in what chunks it computes, reads and caches)."""
        d = self.to_dict()
        d.pop(VERSION_KEY)
        d.pop("out")
        d["training"].pop("bootstrap_resamples")
        d["training"].pop("num_workers")
        d["training"].pop("device")
        d["training"].pop("physical_batch_size")  # memory only (lowered to what fits): never changes the result
        d["training"].pop("feature_cache")  # where computed features are kept: never changes them
        d["data"].pop("stream")  # images read per batch or at once: the same images (tests/test_streaming.py)
        return d


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "privacy": PrivacyConfig, "training": TrainingConfig,
             "synthetic": SyntheticConfig, "tune": TuneConfig}


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts; unknown keys raise :class:`PrivmedError`. A ``config_version``
    older than today's is migrated (:func:`~privmed.config.migrate.migrate`); none means today's."""
    return _build(migrate(raw))


def config_from_run_dict(raw: Mapping[str, Any]) -> RunConfig:
    """The configuration a run directory's ``config.yaml`` (``raw``) was trained with: brought from its
    ``config_version`` (none: a run written before versions were recorded) to today's by
    :func:`~privmed.config.migrate.migrate`, so every key added or default changed since takes the value the
    run was trained with."""
    return _build(migrate(raw, unversioned=UNVERSIONED))


def _build(raw: Mapping[str, Any]) -> RunConfig:
    reject_unknown(raw, {"out", *_SECTIONS}, "top-level")
    kwargs: dict[str, Any] = {name: section_from_dict(cls, raw.get(name) or {}, name)
                              for name, cls in _SECTIONS.items()}
    if "out" in raw:
        kwargs["out"] = raw["out"] if raw["out"] is None else str(raw["out"])
    return RunConfig(**kwargs)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    atomic.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
