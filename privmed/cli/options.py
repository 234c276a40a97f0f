"""Options shared by several ``privmed`` commands, and how given options become config overrides.

Every option that sets a config key is declared once, as an :class:`Option` in a command's table
(``RUN_OPTIONS`` of ``train``, ``SYNTH_TRAIN_OPTIONS``, ``EVOLVE_OPTIONS``): its flag, the key it sets,
its help and type. :func:`add_options` makes the argparse arguments of a table and
:func:`overrides` the config overrides of the options given, so adding an option is one entry.
Such options are left unset (``None``) by default, so that a ``--config`` file can set the same keys;
the defaults their help shows are the config dataclasses' own, and their choices the configs'
(:mod:`privmed.config`).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from privmed.config import PRIVACY_UNITS, DataConfig, PrivacyConfig
from privmed.errors import OUT_EMPTY, PATH_MISSING, PrivmedError


@dataclass(frozen=True)
class Option:
    """One command-line option and the config key it sets: the one declaration of both.

    ``key``: ``section.key`` (or ``out``) the option's value overrides; None for an option the command reads
    itself (its ``default`` then applies). ``to_config`` turns the parsed value into the config's (e.g. the
    ``(key, value)`` pairs of a repeated option into a mapping). The rest is what ``add_argument`` of
    :class:`argparse.ArgumentParser` takes. An option with a key is unset (None) unless given, so a ``--config``
    file can set the key.
    """

    flag: str
    key: str | None = None
    help: str | None = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    action: str | None = None
    nargs: int | str | None = None
    default: Any = None
    required: bool = False
    to_config: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments: ``--image-size`` -> ``image_size``."""
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """This option as an argument of ``parser``."""
        given = {"type": self.type, "choices": self.choices, "metavar": self.metavar, "action": self.action,
                 "nargs": self.nargs}
        kwargs = {name: value for name, value in given.items() if value is not None}
        if self.required:
            kwargs["required"] = True
        parser.add_argument(self.flag, help=self.help, default=self.default, **kwargs)


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """The arguments of a table of options, in its order."""
    for option in options:
        option.add_to(parser)


def option_keys(options: Iterable[Option]) -> dict[str, tuple[str, ...]]:
    """Option (its ``dest``) -> the config key it sets, split at the dots, for the options of a table that set one."""
    return {option.dest: tuple(option.key.split(".")) for option in options if option.key is not None}


POSITIVE_CLASS_HELP = ("the positive class: a class name or a label value (e.g. 0); scores and thresholds follow it "
                       "(default: label 1 of 0/1 labels; 'malignant' when the classes are named and one is)")
CLASS_NAMES_HELP = ("names of the label values 0 and 1, in that order, e.g. malignant,benign (default: from the data, "
                    "else neutral label=0/label=1)")


def names(text: str) -> list[str]:
    """``--class-names``: two different names separated by a comma."""
    parts = [n.strip() for n in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise argparse.ArgumentTypeError(f"expected two different names separated by a comma, got {text!r}")
    return parts


def boolean(text: str) -> bool:
    """An option that takes true or false (also yes/no, 1/0)."""
    if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "yes", "1")


def number(text: str) -> float | str:
    """A float option; its text when it overflows to infinity without saying inf (``--epsilon 1e400`` is not
    "not given"), for the config to refuse by name."""
    value = float(text)
    if math.isinf(value) and text.strip().lstrip("+-").lower() not in ("inf", "infinity"):
        return text
    return value


def tune_option(text: str) -> tuple[str, list[str]]:
    """``lr=0.1,0.3`` -> ("lr", ["0.1", "0.3"]); the config checks the key and the values."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2,... (e.g. lr=0.1,0.3), got {text!r}")
    return key.strip(), [v.strip() for v in values.split(",") if v.strip()]


def label_options(*, default: str = "", single: bool = False) -> list[Option]:
    """``--label-column``, ``--positive-class`` and ``--class-names`` (``data`` section); ``default`` ends their
    help (e.g. "; default: the run's"); ``single``: exactly one label column."""
    column = ("the binary label column of a manifest" if single
              else "label column(s) of a manifest; several = multi-label")
    column += default or f" (default {DataConfig.label_columns[0]})"
    return [Option("--label-column", "data.label_columns", column, nargs=1 if single else "+"),
            Option("--positive-class", "data.positive_class", POSITIVE_CLASS_HELP + default),
            Option("--class-names", "data.class_names", CLASS_NAMES_HELP + default, names, metavar="NAME0,NAME1")]


#: whom the guarantee protects, and the randomness it rests on (``privacy`` section)
UNIT_OPTIONS = [
    Option("--privacy-unit", "privacy.unit", "unit of privacy: patient (one patient and all of their images; the "
           "default when the data has patient ids) or image (the default otherwise)", choices=PRIVACY_UNITS),
    Option("--max-images-per-patient", "privacy.max_images_per_patient", "at most this many images of a sampled "
           f"patient enter one step (default {PrivacyConfig.max_images_per_patient}, one image drawn afresh per "
           "step; public)", int),
    Option("--replayable-noise", "privacy.replayable_noise", "derive DP noise and Poisson batches from --seed "
           "(debugging, exact reproduction): the run is then NOT private, and its ledger says so",
           action="store_true"),
]


def overrides(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, Any]:
    """Nested config overrides from the options of the table ``options`` that were given (not None)."""
    result: dict[str, Any] = {}
    for option in options:
        value = getattr(args, option.dest, None)
        if option.key is None or value is None:
            continue
        if option.key == "out" and not value.strip():
            raise PrivmedError(OUT_EMPTY)
        *sections, key = option.key.split(".")
        target = result
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = option.to_config(value) if option.to_config else value
    return result


def existing_synthetic(path: str) -> Path:
    """The SYNTHETIC argument of ``synth evaluate`` / ``audit-synthetic``, refused by name when missing."""
    target = Path(path)
    if not target.exists():
        raise PrivmedError(PATH_MISSING.format(what="synthetic image folder or generator", path=target,
                                               cwd=Path.cwd()))
    return target
