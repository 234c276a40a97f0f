"""Older runs' configurations brought to today's: ``config_version`` and the ordered steps between versions.

Every run writes ``config_version`` (:data:`CONFIG_VERSION`) at the top of its ``config.yaml``; a run
written before versions were recorded has none and is version 1 (:data:`UNVERSIONED`). Reading a run
(:func:`privmed.config.run.config_from_run_dict`) applies the steps from its version to today's, in
order (:data:`STEPS`). A step fills in, for every key added or default changed since, the value the
older run was trained with, and never overrides what the run recorded; so a run is rebuilt as it was
trained and ``--resume`` compares like with like. A version newer than this privmed knows is refused
(:data:`privmed.errors.CONFIG_VERSION_NEWER`): its keys may mean what this privmed cannot tell.

Changing a default of the run's config, or of a model argument runs record
(``ModelInfo.recorded_args``, :func:`privmed.models.registry.recorded_defaults`), means: raise
:data:`CONFIG_VERSION` and add the step that gives older runs the old value.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from privmed.errors import CONFIG_VERSION_BAD, CONFIG_VERSION_NEWER, PrivmedError

from .model import ModelConfig
from .values import integer

#: the version every new run records
CONFIG_VERSION = 2
#: the key that records it, at the top of ``config.yaml``
VERSION_KEY = "config_version"
#: the version of a run that records none (written before versions were recorded)
UNVERSIONED = 1

#: version 1 -> 2: keys added with a new default, and the value runs written before were trained with
V1_KEYS = {"privacy": {"center": "private"}}
#: version 1 -> 2: model arguments whose default changed, and the value runs written before were built with:
#: scatter_linear's dihedral (issue 19's recipe grid), max_order (cbis_utility's order rows), input_norm and
#: standardise (transfer.md, issue 31)
V1_MODEL_ARGS = {"scatter_linear": {"dihedral": False, "max_order": 2, "input_norm": "none", "standardise": True}}


def _from_1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: the values of :data:`V1_KEYS` and :data:`V1_MODEL_ARGS` where the run did not record them."""
    raw = {**raw, **{name: {**old, **(raw.get(name) or {})} for name, old in V1_KEYS.items()}}
    model = dict(raw.get("model") or {})
    model["args"] = {**V1_MODEL_ARGS.get(model.get("name", ModelConfig.name), {}), **(model.get("args") or {})}
    return {**raw, "model": model}


#: ``STEPS[v - 1]`` takes a configuration of version ``v`` to version ``v + 1``
STEPS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (_from_1,)
assert len(STEPS) == CONFIG_VERSION - 1, "one step per version"


def migrate(raw: Mapping[str, Any], *, unversioned: int = CONFIG_VERSION) -> dict[str, Any]:
    """``raw`` brought to :data:`CONFIG_VERSION`, without its version key. ``unversioned``: the version of a
    configuration that records none (a run's ``config.yaml``: :data:`UNVERSIONED`; a config file a user writes:
    today's). Refuses a version that is not a whole number from 1 up, or one newer than today's."""
    if not isinstance(raw, Mapping):
        return raw  # refused by name where it is read
    raw = dict(raw)
    version = config_version(raw.pop(VERSION_KEY, unversioned))
    for step in STEPS[version - 1:]:
        raw = step(raw)
    return raw


def config_version(value: Any) -> int:
    """A recorded ``config_version``, checked: a whole number from 1 to :data:`CONFIG_VERSION`."""
    try:
        version = integer(value)
    except (TypeError, ValueError):
        version = None
    if version is None or version < 1:
        raise PrivmedError(CONFIG_VERSION_BAD.format(value=value, current=CONFIG_VERSION))
    if version > CONFIG_VERSION:
        raise PrivmedError(CONFIG_VERSION_NEWER.format(version=version, current=CONFIG_VERSION))
    return version
