"""What ``privacy.json`` holds, as a frozen typed record: the one format every writer and reader shares.

A :class:`PrivacyRecord` is made by :meth:`privmed.privacy.ledger.PrivacyLedger.record` (a run's or a
generator's ledger) or by :meth:`PrivacyRecord.data_independent_origin` (synthetic images made without
patient data, e.g. the phantom). :meth:`PrivacyRecord.to_dict` gives the JSON mapping, key for key and
value for value what privmed has always written (so a ledger's seal digest stays valid), and
:meth:`PrivacyRecord.from_dict` reads one back, also one written by an older privmed, where a field
added since is absent. File IO lives in :mod:`privmed.rundir` (``write_record``, ``read_record``).

Numbers are kept as written (no coercion), so a record read and written again gives the same bytes;
a non-finite float is written as the string ``"inf"`` (``"-inf"``, ``"nan"``) and read back as a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from privmed.errors import PRIVACY_RECORD_MALFORMED, PrivmedError

_NON_FINITE = ("inf", "-inf", "nan")


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One accounted stage of a record: ``steps`` releases of a Gaussian mechanism with noise
    ``noise_multiplier`` on Poisson subsamples at ``sample_rate``, and its epsilon on its own at the
    record's delta (``None`` in records written before privmed stored it)."""

    stage: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_alone: float | None = None

    def to_dict(self) -> dict[str, Any]:
        entry = {"stage": self.stage, "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                 "steps": self.steps}
        return entry if self.epsilon_alone is None else {**entry, "epsilon_alone": _json_float(self.epsilon_alone)}


@dataclass(frozen=True, kw_only=True)
class PrivacyRecord:
    """``privacy.json``: whether the run is private, its composed ``epsilon`` (``math.inf`` when not) at
    ``delta`` (``None`` when not private), each accounted stage, and the reasons, choices and free inputs
    in words. ``noise_multiplier``/``sample_rate``/``steps`` repeat the DP-SGD stage (else the last one).

    A data-independent record (``data_independent``: images drawn from no patient data, named by
    ``source``) holds only ``private``, ``source``, ``stages`` (none) and ``summary``; the other fields
    keep their defaults and are not written.
    """

    private: bool
    summary: str
    epsilon: float = 0.0
    delta: float | None = None
    accountant: str | None = None
    noise_multiplier: float = 0.0
    sample_rate: float | None = None
    steps: int = 0
    clip_norm: float = math.inf
    n_private_samples: int = 0
    unit: str = "image"  # records before the patient unit protected one image
    protects: str | None = None
    max_images_per_patient: int | None = None
    stages: tuple[Stage, ...] = ()
    non_private_reasons: tuple[str, ...] = ()
    validation_choices: tuple[str, ...] = ()
    free_inputs: tuple[str, ...] = ()
    not_covered: tuple[str, ...] = ()  # what epsilon does not cover, in words (records before issue 32: none)
    data_independent: bool = False
    source: str | None = None
    upstream: tuple[str, ...] = ()  # the records composed into this one, each by its digest and seal, in words
    #: how the file was verified when read (``privmed.seal``): '' when not read from a file, 'seal verified',
    #: or 'unverified: why'; never written
    seal: str = field(default="", compare=False)

    @property
    def stated_summary(self) -> str:
        """The summary, with the record's seal in words when it, or a record composed into it, is unverified."""
        notes = [f"record {self.seal}"] if self.seal.startswith("unverified") else []
        notes += [f"upstream record {entry}" for entry in self.upstream if "unverified" in entry]
        return self.summary + "".join(f" [{note}]" for note in notes)

    @classmethod
    def data_independent_origin(cls, *, source: str, summary: str) -> "PrivacyRecord":
        """The record of images made by a program from no patient data: private, at no cost."""
        return cls(private=True, summary=summary, data_independent=True, source=source)

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping of ``privacy.json``, in privmed's key order."""
        stages = [s.to_dict() for s in self.stages]
        if self.data_independent:
            return {"private": self.private, "data_independent": True, "source": self.source, "stages": stages,
                    "summary": self.summary}
        return {
            "private": self.private,
            "epsilon": _json_float(self.epsilon),
            "delta": self.delta,
            "accountant": self.accountant,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "clip_norm": _json_float(self.clip_norm),
            "n_private_samples": self.n_private_samples,
            "unit": self.unit,
            "protects": self.protects,
            "max_images_per_patient": self.max_images_per_patient,
            "stages": stages,
            "non_private_reasons": list(self.non_private_reasons),
            "validation_choices": list(self.validation_choices),
            "free_inputs": list(self.free_inputs),
            **({"not_covered": list(self.not_covered)} if self.not_covered else {}),
            **({"upstream": list(self.upstream)} if self.upstream else {}),
            "summary": self.summary,
        }

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "privacy.json") -> "PrivacyRecord":
        """The record a ``privacy.json`` mapping holds; a field added since an older privmed wrote it takes its
        default. Refuses anything else with :data:`~privmed.errors.PRIVACY_RECORD_MALFORMED` naming ``where``."""
        if not isinstance(raw, dict):
            raise _malformed(where, f"a JSON {type(raw).__name__}, not an object")
        data_independent = _field(raw, "data_independent", _bool, where, default=False)
        required = _ORIGIN_REQUIRED if data_independent else _LEDGER_REQUIRED
        values = {}
        for key, read in _READERS.items():
            if key in raw:
                values[key] = _field(raw, key, read, where)
            elif key in required:
                raise _malformed(where, f"it has no '{key}'")
        return cls(**values)


def _json_float(value: float) -> float | str:
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _malformed(where: str, reason: str) -> PrivmedError:
    return PrivmedError(PRIVACY_RECORD_MALFORMED.format(path=where, reason=reason))


class _Wrong(Exception):
    """A value of the wrong kind; the message says what was expected."""


def _field(raw: dict, key: str, read: Callable[[Any], Any], where: str, default: Any = None) -> Any:
    if key not in raw:
        return default
    try:
        return read(raw[key])
    except _Wrong as err:
        shown = repr(raw[key])
        raise _malformed(where, f"'{key}' is {shown if len(shown) <= 60 else shown[:57] + '...'}, not {err}") from None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Wrong("true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Wrong("text")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Wrong("a whole number")
    return value


def _number(value: Any) -> float:
    if isinstance(value, str) and value in _NON_FINITE:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Wrong("a number")
    return value


def _optional(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else read(value)


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Wrong("a list of sentences")
    return tuple(value)


def _stages(value: Any) -> tuple[Stage, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _Wrong("a list of stages")
    return tuple(_stage(entry) for entry in value)


def _stage(entry: dict) -> Stage:
    readers = {"stage": _text, "noise_multiplier": _number, "sample_rate": _number, "steps": _count,
               "epsilon_alone": _number}
    missing = [k for k in readers if k not in entry and k != "epsilon_alone"]
    if missing:
        raise _Wrong(f"a list of stages (a stage has no '{missing[0]}')")
    try:
        return Stage(**{k: read(entry[k]) for k, read in readers.items() if k in entry})
    except _Wrong as err:
        raise _Wrong(f"a list of stages (a stage's value is not {err})") from None


#: how each field of the JSON mapping is read (every field of :class:`PrivacyRecord`)
_READERS: dict[str, Callable[[Any], Any]] = {
    "private": _bool, "summary": _text, "epsilon": _number, "delta": _optional(_number),
    "accountant": _optional(_text), "noise_multiplier": _number, "sample_rate": _optional(_number),
    "steps": _count, "clip_norm": _number, "n_private_samples": _count, "unit": _text, "protects": _optional(_text),
    "max_images_per_patient": _optional(_count), "stages": _stages, "non_private_reasons": _texts,
    "validation_choices": _texts, "free_inputs": _texts, "data_independent": _bool, "source": _optional(_text),
    "upstream": _texts, "not_covered": _texts,
}
#: the fields every ledger record has held since privmed's first version (the rest have defaults)
_LEDGER_REQUIRED = ("private", "epsilon", "delta", "accountant", "noise_multiplier", "sample_rate", "steps",
                    "clip_norm", "n_private_samples", "stages", "non_private_reasons", "validation_choices",
                    "summary")
_ORIGIN_REQUIRED = ("private", "source", "stages", "summary")
