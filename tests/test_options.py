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
    from privmed.audit.config import AuditConfig
    from privmed.cli.audit import AUDIT_OPTIONS
    from privmed.synth.config import EvolveConfig, GeneratorConfig

    return [(RUN_OPTIONS, RunConfig), (SYNTH_TRAIN_OPTIONS, GeneratorConfig), (EVOLVE_OPTIONS, EvolveConfig),
            (AUDIT_OPTIONS, AuditConfig)]


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


def _subcommands(parser, name="privmed"):
    """Every command's parser below ``parser``, with its name (``privmed synth train``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield f"{name} {sub_name}", sub
                yield from _subcommands(sub, f"{name} {sub_name}")


def _outside_the_tables(parser) -> list[str]:
    """The arguments of ``parser`` (their ``dest``) that none of the option tables it was made from declared."""
    from privmed.cli.options import declared_options

    declared = {option.dest for option in declared_options(parser)}
    kept = (argparse._HelpAction, argparse._SubParsersAction)  # -h, and the commands below
    return [action.dest for action in parser._actions if not isinstance(action, kept) and action.dest not in declared]


def test_every_argument_of_every_command_comes_from_an_option_table():
    """An argument added with ``add_argument`` (a second declaration beside the tables) fails here."""
    commands = dict(_subcommands(build_parser()))
    assert {"privmed audit", "privmed study", "privmed synth evolve", "privmed phantom"} <= set(commands)
    outside = {name: _outside_the_tables(parser) for name, parser in commands.items()}
    assert not {name: dests for name, dests in outside.items() if dests}


def test_an_argument_added_beside_the_table_is_found():
    from privmed.cli.options import add_command

    sub = argparse.ArgumentParser().add_subparsers()
    parser = add_command(sub, "cmd", [Option("run", help="run directory"), Option("--n", help="n", type=int)],
                         handler=lambda args: 0)
    raw = sub.add_parser("raw")
    assert _outside_the_tables(parser) == [] and _outside_the_tables(raw) == []
    parser.add_argument("--extra")
    raw.add_argument("path")
    assert _outside_the_tables(parser) == ["extra"] and _outside_the_tables(raw) == ["path"]


def test_the_audit_config_is_built_from_the_audit_options_given():
    from privmed.audit.config import AuditConfig
    from privmed.cli.audit import AUDIT_OPTIONS, audit_config

    keyed = [option.key for option in AUDIT_OPTIONS if option.key is not None]
    assert set(keyed) == {f.name for f in dataclasses.fields(AuditConfig)} and len(keyed) == len(set(keyed))
    parser = build_parser()
    assert audit_config(parser.parse_args(["audit", "run"])) == AuditConfig()  # nothing given: the config's defaults
    given = audit_config(parser.parse_args(["audit", "run", "--canaries", "0", "--confidence", "0.9", "--shadows",
                                            "4", "--canary-kind", "mislabeled", "--workers", "2", "--seed", "7",
                                            "--bootstrap", "200"]))
    assert given == AuditConfig(canaries=0, alpha=1 - 0.9, shadows=4, canary_kind="mislabeled", workers=2, seed=7,
                                bootstrap=200)


def test_the_privacy_options_of_a_vote_stage_have_no_dp_sgd_settings_and_the_same_keys_otherwise():
    from privmed.cli.options import SGD_ONLY, privacy_options

    sgd, votes = privacy_options(epsilon_of="a"), privacy_options(epsilon_of="b", votes=True)
    assert [o.flag for o in sgd if o.flag not in SGD_ONLY] == [o.flag for o in votes]
    assert {o.key for o in sgd} == {o.key for o in votes} | {"privacy.clip_norm", "privacy.max_images_per_patient"}
    assert sgd[0].help.startswith("target epsilon of a;") and votes[0].help.startswith("target epsilon of b;")
