"""Options shared by several ``privmed`` commands, and how given options become config overrides.

Every argument of every command is declared once, as an :class:`Option` in the command's table
(``RUN_OPTIONS`` of ``train``, ``SYNTH_TRAIN_OPTIONS``, ``EVOLVE_OPTIONS``, ``AUDIT_OPTIONS``, ...): its flag,
the config key it sets (if any), its help and type. :func:`add_command` makes a command of a table,
:func:`add_options` the argparse arguments and :func:`overrides` the config overrides of the options given,
so adding an option is one entry; :func:`declared_options` says which table each argument came from (a test
holds every argument to a table). Options with a key are left unset (``None``) by default, so that a
``--config`` file (or the config's own default) sets the key; the defaults their help shows are the config
dataclasses' own, and their choices the configs' (:mod:`privmed.config`). Options that several commands
share are made here: :func:`label_options`, :func:`privacy_options`, :data:`TRACKING_OPTIONS`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from weakref import WeakKeyDictionary

from privmed.config import ACCOUNTANTS, PRIVACY_UNITS, DataConfig, PrivacyConfig, TrainingConfig
from privmed.errors import OUT_EMPTY, PATH_MISSING, PrivmedError
from privmed.tracking import DEFAULT_EXPERIMENT, DEFAULT_URI


@dataclass(frozen=True)
class Option:
    """One command-line option and the config key it sets: the one declaration of both.

    ``flag``: ``--name``, or the name of a positional argument. ``key``: ``section.key`` (or ``out``, or a field
    of a flat config such as ``AuditConfig``) the option's value overrides; None for an option the command reads
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
        if self.key is not None or self.default is not None:  # a keyed option stays None (unset) unless given
            kwargs["default"] = self.default
        parser.add_argument(self.flag, help=self.help, **kwargs)


#: each parser's options, in the order :func:`add_options` added them
_DECLARED: WeakKeyDictionary[argparse.ArgumentParser, list[Option]] = WeakKeyDictionary()


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """The arguments of a table of options, in its order."""
    for option in options:
        option.add_to(parser)
        _DECLARED.setdefault(parser, []).append(option)


def declared_options(parser: argparse.ArgumentParser) -> list[Option]:
    """The options :func:`add_options` gave ``parser``: every argument it has, unless one was added otherwise."""
    return list(_DECLARED.get(parser, ()))


def add_command(sub, name: str, options: Iterable[Option], handler: Callable[[argparse.Namespace], int],
                **about: Any) -> argparse.ArgumentParser:
    """The command ``name`` of the subparsers ``sub``: the arguments of the table ``options``, run by ``handler``;
    ``about``: what ``add_parser`` takes besides (its ``help``, ``description``)."""
    parser = sub.add_parser(name, **about)
    add_options(parser, options)
    parser.set_defaults(handler=handler)
    return parser


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


P = PrivacyConfig
#: privacy options of DP-SGD steps that a stage of noisy votes does not have
SGD_ONLY = ("--clip-norm", "--max-images-per-patient")


def privacy_options(*, epsilon_of: str, votes: bool = False) -> list[Option]:
    """The ``privacy`` options of a stage that reads the private data: the guarantee, whom it protects and the
    randomness it rests on. ``epsilon_of``: what --epsilon bounds; ``votes``: the stage releases noisy vote
    histograms (``synth evolve``) instead of DP-SGD steps, so it has none of :data:`SGD_ONLY`."""
    if votes:
        noise, randomness, patient = ("Gaussian noise of the votes", "the vote noise",
                                      "one vote per patient, split over their images")
    else:
        noise, randomness, patient = ("DP-SGD noise", "DP noise and Poisson batches",
                                      "one patient and all of their images")
    options = [
        Option("--epsilon", "privacy.epsilon", f"target epsilon of {epsilon_of}; omit or inf = non-private "
               f"(default {P.epsilon})", number),
        Option("--delta", "privacy.delta", "delta (default 1/(10 N) for N patients (or images); must be < 1/N)",
               number),
        Option("--noise-multiplier", "privacy.noise_multiplier", f"fixed {noise} instead of a target epsilon "
               "(default: calibrated to --epsilon)", number),
        Option("--clip-norm", "privacy.clip_norm", f"per-sample gradient clipping norm (default {P.clip_norm})",
               number),
        Option("--accountant", "privacy.accountant", f"default {P.accountant}", choices=ACCOUNTANTS),
        Option("--privacy-unit", "privacy.unit", f"unit of privacy: patient ({patient}; the default when the data "
               "has patient ids) or image (the default otherwise)", choices=PRIVACY_UNITS),
        Option("--max-images-per-patient", "privacy.max_images_per_patient", "at most this many images of a "
               f"sampled patient enter one step (default {P.max_images_per_patient}, one image drawn afresh per "
               "step; public)", int),
        Option("--replayable-noise", "privacy.replayable_noise", f"derive {randomness} from --seed (debugging, "
               "exact reproduction): the run is then NOT private, and its ledger says so", action="store_true"),
    ]
    return [option for option in options if not (votes and option.flag in SGD_ONLY)]


#: ``--bootstrap`` of a command that measures what exists (``evaluate``, ``synth evaluate``, ...): read by the command
BOOTSTRAP = Option("--bootstrap", help="bootstrap resamples for the CIs (default "
                   f"{TrainingConfig.bootstrap_resamples})", type=int, default=TrainingConfig.bootstrap_resamples)

#: ``--mlflow`` and its settings: the run (or study) logged to MLflow (:mod:`privmed.tracking`)
TRACKING_OPTIONS = [
    Option("--mlflow", help=f"log the run to MLflow (a local {DEFAULT_URI} store unless --mlflow-uri is given); "
           "needs pip install 'privmed[tracking]'", action="store_true"),
    Option("--mlflow-uri", help="MLflow tracking URI (a folder, file:///..., http://...); implies --mlflow "
           f"(default {DEFAULT_URI} with --mlflow)", metavar="URI"),
    Option("--mlflow-experiment", help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})", metavar="NAME"),
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
