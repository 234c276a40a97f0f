"""``--model-arg KEY=VALUE``: a network's keyword arguments from the command line (imports no torch).

Values are read as YAML scalars or flow collections, as in a config file: ``width=0.5`` is a
float, ``block_config=[6,12,24,16]`` a list, ``norm=instance`` a string. They land in
``model.args`` (over the config file's), where :func:`privmed.models.registry.check_model_args`
checks them against the network's signature.
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from privmed import safe_yaml
from privmed.errors import PrivmedError


def parse_model_arg(text: str) -> tuple[str, Any]:
    """``width=32`` -> ("width", 32); the config checks the name against the model."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. width=0.5), got {text!r}")
    try:
        parsed = safe_yaml.load(value, f"--model-arg {text}")
    except PrivmedError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed
