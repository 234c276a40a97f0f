"""Where frozen features are cached is the run's setting (``training.feature_cache``), recorded in config.yaml;
``PRIVMED_CACHE`` only names the default folder."""

import pytest
import torch

from privmed import rundir
from privmed.cli import main
from privmed.config import TrainingConfig, config_from_dict
from privmed.errors import FEATURE_CACHE_ENV_OFF, PrivmedError
from privmed.models import build_model
from privmed.training import inputs


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A scattering model, new images, no features in this process's memory, and a default folder of its own."""
    monkeypatch.setattr(inputs, "_FEATURE_CACHE", type(inputs._FEATURE_CACHE)())
    monkeypatch.setenv("PRIVMED_CACHE", str(tmp_path / "default"))
    model = build_model("scatter_linear", spatial_dims=2, in_channels=1, num_outputs=1, image_size=32, norm="group")
    return model, torch.rand(3, 1, 32, 32)


def test_the_setting_names_the_folder_or_turns_the_cache_off(fresh, tmp_path):
    model, images = fresh
    inputs.model_inputs(model, images, cache=str(tmp_path / "mine"))
    assert len(list((tmp_path / "mine").glob("*.pt"))) == 1 and not (tmp_path / "default").exists()
    inputs._FEATURE_CACHE.clear()
    inputs.model_inputs(model, images, cache="off")
    assert not (tmp_path / "default").exists()
    inputs._FEATURE_CACHE.clear()
    inputs.model_inputs(model, images)  # unset: the default folder, $PRIVMED_CACHE
    assert len(list((tmp_path / "default").glob("*.pt"))) == 1


def test_privmed_cache_is_a_location_never_a_switch(fresh, monkeypatch):
    model, images = fresh
    monkeypatch.setenv("PRIVMED_CACHE", "off")
    with pytest.raises(PrivmedError) as err:
        inputs.model_inputs(model, images)
    assert str(err.value) == FEATURE_CACHE_ENV_OFF and "--feature-cache off" in str(err.value)
    assert inputs.feature_cache_dir("off") is None  # the run's own setting is what turns it off


def test_the_setting_is_recorded_validated_and_not_part_of_a_runs_identity():
    config = config_from_dict({"training": {"feature_cache": "off"}})
    assert config.to_dict()["training"]["feature_cache"] == "off"
    assert "feature_cache" not in config.identity()["training"]  # where features are kept never changes them
    with pytest.raises(PrivmedError, match="training.feature_cache = ' ': give a folder"):
        TrainingConfig(feature_cache=" ")


def test_train_with_feature_cache_keeps_the_features_there_and_records_it(phantom_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    code = main(["train", "--data", str(phantom_root), "--out", str(tmp_path / "run"), "--image-size", "32",
                 "--epochs", "1", "--batch-size", "32", "--bootstrap", "100", "--model-arg", "dihedral=false",
                 "--feature-cache", str(cache)])
    assert code == 0, capsys.readouterr().err
    assert rundir.read_config_dict(tmp_path / "run")["training"]["feature_cache"] == str(cache)
    assert list(cache.glob("*.pt"))  # the splits' features, in the run's folder of choice
