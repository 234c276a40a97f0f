"""Options shared by several ``privmed`` commands, and how given options become config overrides.

Options of ``train`` and ``synth train`` are left unset (``None``) by default, so that a
``--config`` file can set the same keys; the defaults their help shows are the config
dataclasses' own, and their choices the configs' (:mod:`privmed.config`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from privmed.config import PRIVACY_UNITS, DataConfig, PrivacyConfig, merge
from privmed.model_options import model_arg_overrides
from privmed.errors import OUT_EMPTY, PATH_MISSING, PrivmedError

#: ``train`` option -> (config section, key). Options left unset do not override the YAML file.
OPTION_KEYS: dict[str, tuple[str, str]] = {
    "model_weights": ("model", "weights"),
    "freeze": ("model", "freeze"),
    "replace_batchnorm": ("model", "replace_batchnorm"),
    "data": ("data", "path"),
    "label_column": ("data", "label_columns"),
    "positive_class": ("data", "positive_class"),
    "allow_outside_data_root": ("data", "allow_outside_root"),
    "class_names": ("data", "class_names"),
    "image_size": ("data", "image_size"),
    "lesion_fraction": ("data", "lesion_fraction"),
    "spatial_dims": ("data", "spatial_dims"),
    "model": ("model", "name"),
    "epsilon": ("privacy", "epsilon"),
    "total_epsilon": ("privacy", "total_epsilon"),
    "delta": ("privacy", "delta"),
    "noise_multiplier": ("privacy", "noise_multiplier"),
    "clip_norm": ("privacy", "clip_norm"),
    "accountant": ("privacy", "accountant"),
    "privacy_unit": ("privacy", "unit"),
    "center": ("privacy", "center"),
    "max_images_per_patient": ("privacy", "max_images_per_patient"),
    "replayable_noise": ("privacy", "replayable_noise"),
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "physical_batch_size": ("training", "physical_batch_size"),
    "lr": ("training", "lr"),
    "optimizer": ("training", "optimizer"),
    "seed": ("training", "seed"),
    "augment": ("training", "augment"),
    "ema": ("training", "ema"),
    "augment_views": ("training", "augment_views"),
    "device": ("training", "device"),
    "bootstrap": ("training", "bootstrap_resamples"),
    "synthetic": ("synthetic", "path"),
    "synthetic_use": ("synthetic", "use"),
    "finetune": ("synthetic", "finetune"),
    "reinit_head": ("synthetic", "reinit_head"),
    "pretrain_epochs": ("synthetic", "pretrain_epochs"),
    "pretrain_lr": ("synthetic", "pretrain_lr"),
    "synthetic_public": ("synthetic", "public"),
}

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


def add_label_options(parser: argparse.ArgumentParser, *, default: str = "", single: bool = False) -> None:
    """``--label-column``, ``--positive-class`` and ``--class-names``; ``default`` ends their help
    (e.g. "; default: the run's"); ``single``: exactly one label column."""
    parser.add_argument("--label-column", nargs=1 if single else "+",
                        help=("the binary label column of a manifest" if single
                              else "label column(s) of a manifest; several = multi-label")
                        + (default or f" (default {DataConfig.label_columns[0]})"))
    parser.add_argument("--positive-class", help=POSITIVE_CLASS_HELP + default)
    parser.add_argument("--class-names", type=names, metavar="NAME0,NAME1", help=CLASS_NAMES_HELP + default)


def add_unit_options(parser: argparse.ArgumentParser) -> None:
    """Whom the guarantee protects, and the randomness it rests on (``privacy`` section)."""
    parser.add_argument("--privacy-unit", choices=PRIVACY_UNITS,
                        help="unit of privacy: patient (one patient and all of their images; the default when the "
                             "data has patient ids) or image (the default otherwise)")
    parser.add_argument("--max-images-per-patient", type=int,
                        help="at most this many images of a sampled patient enter one step (default "
                             f"{PrivacyConfig.max_images_per_patient}, one image drawn afresh per step; public)")
    parser.add_argument("--replayable-noise", action="store_true", default=None,
                        help="derive DP noise and Poisson batches from --seed (debugging, exact reproduction): the "
                             "run is then NOT private, and its ledger says so")


def cli_overrides(args: argparse.Namespace, keys: dict[str, tuple[str, str]] = OPTION_KEYS) -> dict[str, Any]:
    """Nested config overrides from the options actually given (``keys``: option -> section, key)."""
    overrides: dict[str, Any] = {}
    for option, (section, key) in keys.items():
        value = getattr(args, option, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    for key, values in getattr(args, "tune", None) or []:
        overrides.setdefault("tune", {})[key] = values
    if getattr(args, "model_arg", None):
        overrides = merge(overrides, model_arg_overrides(args.model_arg))
    if getattr(args, "out", None) is not None:
        if not args.out.strip():
            raise PrivmedError(OUT_EMPTY)
        overrides["out"] = args.out
    return overrides


def existing_synthetic(path: str) -> Path:
    """The SYNTHETIC argument of ``synth evaluate`` / ``audit-synthetic``, refused by name when missing."""
    target = Path(path)
    if not target.exists():
        raise PrivmedError(PATH_MISSING.format(what="synthetic image folder or generator", path=target,
                                               cwd=Path.cwd()))
    return target
