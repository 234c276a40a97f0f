"""What every config section shares: how a mapping becomes a section (unknown keys refused, values coerced to
the fields' types), how a bad value is refused, and the YAML a config is read from and written as."""

from __future__ import annotations

import math
import numbers
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from privmed import safe_yaml
from privmed.errors import PrivmedError

UNKNOWN_KEY = "unknown {where} key(s) {keys}; known keys: {known}."
BAD_VALUE = "{where}.{key} = {value!r}: {why}."
#: the most epochs a run may train (beyond, a typo: 1e12 epochs would never end)
MAX_EPOCHS = 10_000
#: seeds are what numpy accepts: 0 to 2**32 - 1
MAX_SEED = 2**32 - 1


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into nested dicts (empty file -> {})."""
    p = Path(path)
    if not p.is_file():
        raise PrivmedError(f"config file '{p}' does not exist.")
    try:
        raw = safe_yaml.load(p.read_text(encoding="utf-8"), str(p)) or {}
    except UnicodeDecodeError as err:
        from privmed.errors import NOT_UTF8

        raise PrivmedError(NOT_UTF8.format(path=p, position=err.start, byte=hex(err.object[err.start]))) from None
    except yaml.YAMLError as err:
        raise PrivmedError(f"config file '{p}' is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise PrivmedError(f"config file '{p}' must hold a mapping of sections, got {type(raw).__name__}.")
    return raw


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge two nested dicts; values of ``override`` win."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for k, v in override.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, Mapping) else v
    return out


def section_from_dict(cls: type, section: Mapping[str, Any], where: str) -> Any:
    """Build the config dataclass ``cls`` from the mapping ``section`` (named ``where`` in messages):
    unknown keys are refused, values coerced to the fields' types; the dataclass validates the rest.
    Every config of privmed (runs, generators, studies) builds its sections through this."""
    if not isinstance(section, Mapping):
        raise PrivmedError(f"config section '{where}' must be a mapping, got {section!r}.")
    known = {f.name: f for f in fields(cls)}
    reject_unknown(section, set(known), where)
    kwargs = {k: _coerce(v, known[k].type, where, k) for k, v in section.items()}
    return cls(**kwargs)


def _coerce(value: Any, annotation: Any, where: str, key: str) -> Any:
    ann = str(annotation)
    if value is None and "None" in ann:
        return None
    try:
        if value is None:
            raise ValueError("empty (null); give a value or leave the key out")
        if ann.startswith("tuple"):
            items = [value] if isinstance(value, (str, int, float)) else list(value)
            if ann.startswith("tuple[float"):
                return tuple(real(v) for v in items)
            if ann.startswith("tuple[int"):
                return tuple(integer(v) for v in items)
            return tuple(str(v) for v in items)
        if ann.startswith("float"):
            return real(value)
        if ann.startswith("int"):
            return integer(value)
        if ann.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError("not a boolean")
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if ann.startswith("str"):
            return str(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise PrivmedError(BAD_VALUE.format(where=where, key=key, value=value, why=str(err))) from None
    return value


def integer(value: Any) -> int:
    """``value`` as an int: an int, an integral float or its text; never a boolean (``epochs: yes`` is not 1)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    number = real(value)
    if not number.is_integer():
        raise ValueError("not an integer")
    return int(number)


def real(value: Any) -> float:
    """``value`` as a float: a number or its text; never a boolean, and never a number written too large for a
    float (``1e400``), which would silently become infinity (for epsilon: not private)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(f"a {type(value).__name__}, not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number") from None
    if math.isinf(number) and isinstance(value, str) and value.strip().lstrip("+-").lower() not in ("inf", "infinity"):
        raise ValueError("overflows to infinity; give a finite number (or write inf where infinity is meant)")
    return number


def reject_unknown(section: Mapping[str, Any], known: set[str], where: str) -> None:
    """Refuse keys of ``section`` outside ``known``, naming them and the known ones (:data:`UNKNOWN_KEY`)."""
    unknown = sorted(set(section) - known)
    if unknown:
        raise PrivmedError(UNKNOWN_KEY.format(where=where, keys=unknown, known=sorted(known)))


def require(ok: bool, where: str, key: str, value: Any, why: str) -> None:
    """Refuse ``where.key = value`` unless ``ok``, saying ``why`` (:data:`BAD_VALUE`). The message names the
    config key, which is also what the CLI option sets (``--image-size`` sets ``data.image_size``)."""
    if not ok:
        raise PrivmedError(BAD_VALUE.format(where=where, key=key, value=value, why=why))


def to_plain(obj: Any) -> Any:
    """Plain-YAML form of a config's ``asdict``: tuples as lists, infinity as the string 'inf'."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    return obj
