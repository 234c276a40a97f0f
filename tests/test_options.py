"""One declaration per option: a command's table makes its argparse arguments and the config keys they set."""

import argparse
import dataclasses

import pytest

from privmed.cli import OPTION_KEYS, RUN_OPTIONS, build_parser, cli_overrides
from privmed.cli.options import Option, add_options, overrides
from privmed.cli.synth import EVOLVE_OPTIONS, SYNTH_TRAIN_OPTIONS
from privmed.config import RunConfig, config_from_dict


def _config_keys(cls) -> set[str]:
    """Every settable key of a config class, dotted (a section's whole mapping, e.g. ``tune``, counts too)."""
    keys = set()
    for f in dataclasses.fields(cls):
        keys.add(f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys |= {f"{f.name}.{key}" for key in _config_keys(type(default))}
    return keys


def _tables():
    from privmed.synth.config import EvolveConfig, GeneratorConfig

    return [(RUN_OPTIONS, RunConfig), (SYNTH_TRAIN_OPTIONS, GeneratorConfig), (EVOLVE_OPTIONS, EvolveConfig)]


def test_every_option_of_a_table_sets_a_key_its_config_has_and_no_key_twice():
    for options, config in _tables():
        keyed = [option.key for option in options if option.key is not None]
        assert set(keyed) <= _config_keys(config), set(keyed) - _config_keys(config)
        assert len(keyed) == len(set(keyed)), "two options set one key"
        flags = [option.flag for option in options]
        assert len(flags) == len(set(flags))


def test_a_new_option_is_one_entry_of_a_table():
    table = [Option("--image-size", "data.image_size", "side in pixels", int),
             Option("--stream", "data.stream", "how images are read", choices=("auto", "on", "off")),
             Option("--nproc", help="processes", type=int, default=1)]
    parser = argparse.ArgumentParser()
    add_options(parser, table)
    args = parser.parse_args(["--image-size", "48", "--stream", "on"])
    assert args.nproc == 1  # an option the command reads itself keeps its default and sets no key
    assert overrides(args, table) == {"data": {"image_size": 48, "stream": "on"}}
    assert overrides(parser.parse_args([]), table) == {}  # an option not given overrides nothing (a --config may)
    with pytest.raises(SystemExit):
        parser.parse_args(["--stream", "sometimes"])


def test_the_options_given_reach_the_run_config_as_declared():
    args = build_parser().parse_args(["train", "--stream", "off", "--feature-cache", "off", "--epsilon", "2",
                                      "--model-arg", "max_order=1", "--tune", "lr=0.1,0.3", "--replayable-noise"])
    config = config_from_dict(cli_overrides(args))
    assert (config.data.stream, config.training.feature_cache, config.privacy.epsilon) == ("off", "off", 2.0)
    assert config.model.args["max_order"] == 1 and config.tune.lr == (0.1, 0.3) and config.privacy.replayable_noise
    assert OPTION_KEYS["stream"] == ("data", "stream") and OPTION_KEYS["bootstrap"] == ("training",
                                                                                         "bootstrap_resamples")
