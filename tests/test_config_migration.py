"""Older runs' configurations: ``config_version`` in every new run, ordered steps to today's, a newer version
refused."""

import pytest
import yaml

from privmed.config import CONFIG_VERSION, config_from_dict, config_from_run_dict, save_config
from privmed.config.migrate import STEPS, UNVERSIONED, V1_MODEL_ARGS, VERSION_KEY, migrate
from privmed.errors import CONFIG_VERSION_NEWER, PrivmedError


def test_every_new_run_records_todays_version_first(tmp_path):
    save_config(config_from_dict({}), tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith(f"{VERSION_KEY}: {CONFIG_VERSION}\n")
    assert yaml.safe_load(text)[VERSION_KEY] == CONFIG_VERSION


def test_a_run_of_todays_version_reads_as_written_and_resumes_as_itself():
    config = config_from_dict({"privacy": {"epsilon": 2}, "training": {"epochs": 3}})
    again = config_from_run_dict(config.to_dict())
    assert again == config and again.identity() == config.identity()
    assert VERSION_KEY not in config.identity()  # the version is not a setting a resume compares


def test_an_unversioned_run_gets_the_values_it_was_trained_with_and_a_versioned_one_does_not():
    old = config_from_run_dict({"model": {"name": "scatter_linear"}})
    assert old.privacy.center == "private" and old.model.args == V1_MODEL_ARGS["scatter_linear"]
    new = config_from_run_dict({VERSION_KEY: CONFIG_VERSION, "model": {"name": "scatter_linear"}})
    assert new.privacy.center == "channels" and new.model.args == config_from_dict({}).model.args
    # what a run recorded wins over the step's old values
    kept = config_from_run_dict({"privacy": {"center": "phantom"}, "model": {"args": {"dihedral": True}}})
    assert kept.privacy.center == "phantom" and kept.model.args["dihedral"] is True


def test_a_config_file_without_a_version_is_todays():
    assert config_from_dict({}).privacy.center == "channels"
    assert config_from_dict({VERSION_KEY: UNVERSIONED}).privacy.center == "private"


def test_one_step_per_version_and_the_steps_never_override():
    assert len(STEPS) == CONFIG_VERSION - 1
    recorded = {"privacy": {"center": "channels"}, "model": {"name": "scatter_linear", "args": {"max_order": 1}}}
    migrated = migrate({**recorded, VERSION_KEY: UNVERSIONED})
    assert migrated["privacy"]["center"] == "channels" and migrated["model"]["args"]["max_order"] == 1


@pytest.mark.parametrize("version", [CONFIG_VERSION + 1, 99])
def test_a_newer_version_is_refused_with_what_to_do(version):
    for read in (config_from_dict, config_from_run_dict):
        with pytest.raises(PrivmedError) as err:
            read({VERSION_KEY: version})
        assert str(err.value) == CONFIG_VERSION_NEWER.format(version=version, current=CONFIG_VERSION)
        assert "Upgrade privmed" in str(err.value)


@pytest.mark.parametrize("value", [0, -1, "two", True, 1.5, None])
def test_a_version_that_is_not_a_whole_number_from_1_is_refused(value):
    with pytest.raises(PrivmedError, match=f"config_version {value!r}: give the whole number"):
        config_from_run_dict({VERSION_KEY: value})


def test_train_with_a_config_file_of_a_newer_version_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    from privmed.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(f"{VERSION_KEY}: {CONFIG_VERSION + 1}\ntraining: {{epochs: 1}}\n")
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("privmed: error:")]
    newer = CONFIG_VERSION_NEWER.format(version=CONFIG_VERSION + 1, current=CONFIG_VERSION)
    assert code == 2 and lines == [f"privmed: error: {newer}"]
    assert not (tmp_path / "run").exists()
