"""The values of a study file, each read strictly: integers that are integers (never ``true`` or ``0.7``), numbers
that are numbers (never ``one``, nor ``1e400`` overflowing to infinity), lists that are lists (``models:
scatter_linear`` is not the list of its letters), mappings that are mappings; one message naming the key."""

from __future__ import annotations

from typing import Any, Mapping

from privmed.config import MAX_SEED, integer, real
from privmed.errors import PrivmedError

NEEDS_LIST = "study key '{key}' must be a non-empty list, got {value!r}."
BAD_STUDY_VALUE = "study key '{key}' = {value!r}: {why}."


def _seeds(values: Any, key: str) -> tuple[int, ...]:
    seeds = [_integer(v, key, most=MAX_SEED) for v in _list(values, key)]
    if len(set(seeds)) != len(seeds):
        raise PrivmedError(BAD_STUDY_VALUE.format(key=key, value=list(values), why="a seed is given twice; give each "
                                                  "seed once (each names a run)"))
    return tuple(seeds)


def _integer(value: Any, key: str, *, least: int = 0, most: int = 10**9) -> int:
    try:
        number = integer(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise PrivmedError(BAD_STUDY_VALUE.format(key=key, value=value, why=f"{err}; give an integer")) from None
    if not least <= number <= most:
        raise PrivmedError(BAD_STUDY_VALUE.format(key=key, value=value, why=f"give an integer from {least} to {most}"))
    return number


def _real(value: Any, key: str) -> float:
    try:
        return real(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise PrivmedError(BAD_STUDY_VALUE.format(key=key, value=value, why=str(err))) from None


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise PrivmedError(BAD_STUDY_VALUE.format(key=key, value=value, why="give a name"))
    return value


def _section(value: Any, key: str) -> Mapping[str, Any]:
    """An optional mapping (absent or empty: {})."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PrivmedError(f"study key '{key}' must be a mapping of names to settings, got {value!r}.")
    return value


def _list(value: Any, key: str) -> list:
    if not isinstance(value, (list, tuple)) or not value:
        raise PrivmedError(NEEDS_LIST.format(key=key, value=value))
    return list(value)
