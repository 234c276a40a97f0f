"""Streaming data: images decoded per batch from disk, training identical to in-memory data."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from privmed import rundir
from privmed.config import DataConfig, config_from_dict
from privmed.data.lazy import LazyImages, LazyImageTensor, streams
from privmed.data.sources import load_dataset
from privmed.errors import PrivmedError
from privmed.training.trainer import train


def test_streamed_data_holds_paths_and_decodes_what_is_asked(phantom_root):
    config = DataConfig(path=str(phantom_root), image_size=32)
    eager = load_dataset(config)
    lazy = load_dataset(config, stream=True)
    assert isinstance(lazy.images, LazyImages) and lazy.images.shape == eager.images.shape
    train_eager, train_lazy = eager.split("train"), lazy.split("train")
    assert isinstance(train_lazy.images, LazyImages)
    x = train_lazy.image_tensor
    assert isinstance(x, LazyImageTensor) and x.shape == train_eager.image_tensor.shape
    assert torch.equal(x[3], train_eager.image_tensor[3])
    assert torch.equal(x[2:7], train_eager.image_tensor[2:7])
    assert torch.equal(x[torch.tensor([5, 1])], train_eager.image_tensor[[5, 1]])
    assert x.fingerprint() == train_lazy.image_tensor.fingerprint() != lazy.split("val").image_tensor.fingerprint()


def test_the_stream_setting(monkeypatch):
    monkeypatch.setenv("PRIVMED_STREAM", "on")  # once a switch outside the config: now nothing reads it
    assert not streams(1000, image_size=64, spatial_dims=2)
    assert streams(200_000, image_size=128, spatial_dims=2)  # 13 GB decoded
    assert streams(10, image_size=8, spatial_dims=2, setting="on")
    assert not streams(200_000, image_size=128, spatial_dims=2, setting="off")
    assert DataConfig().stream == "auto" and DataConfig(stream="on").stream == "on"
    with pytest.raises(PrivmedError, match="data.stream = 'sometimes': use auto"):
        DataConfig(stream="sometimes")


def test_the_stream_setting_is_recorded_and_reaches_the_loader(phantom_root):
    from privmed.cli import build_parser, cli_overrides

    args = build_parser().parse_args(["train", "--data", str(phantom_root), "--stream", "on", "--image-size", "32"])
    config = config_from_dict(cli_overrides(args))
    assert config.to_dict()["data"]["stream"] == "on"  # what config.yaml records
    assert "stream" not in config.identity()["data"]  # a resume may read the same images the other way
    assert isinstance(load_dataset(config.data, stream=None).images, LazyImages)
    off = dataclasses.replace(config.data, stream="off")
    assert isinstance(load_dataset(off, stream=None).images, np.ndarray)


def test_training_on_streamed_images_equals_training_in_memory(phantom_root, tmp_path):
    def config(stream):
        return config_from_dict({
            "out": str(tmp_path / stream), "data": {"path": str(phantom_root), "image_size": 32, "stream": stream},
            "model": {"name": "resnet9_small"},
            "privacy": {"noise_multiplier": 0.0, "clip_norm": math.inf, "replayable_noise": True},
            "training": {"epochs": 1, "batch_size": 32, "physical_batch_size": 16, "augment": False,
                         "bootstrap_resamples": 100, "seed": 1, "device": "cpu"}})

    memory = train(config("off"))  # data.stream: the run's config, not the environment, says how images are read
    streamed = train(config("on"))
    assert [rundir.read_config_dict(out)["data"]["stream"] for out in (memory, streamed)] == ["off", "on"]
    a, b = (torch.load(out / rundir.CHECKPOINTS / rundir.LAST, weights_only=False)["engine"]["module"] for out in (memory, streamed))
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    scores = [pd.read_csv(out / rundir.PREDICTIONS)["score"].to_numpy() for out in (memory, streamed)]
    assert len(scores[0]) > 0 and np.allclose(scores[0], scores[1], atol=1e-5)  # every split predicted from disk
