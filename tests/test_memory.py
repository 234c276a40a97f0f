"""The physical batch is chosen from a measured step before training, never found by running out of memory."""

import dataclasses

import numpy as np
import pytest
import torch

from privmed import rundir
from privmed.config import config_from_dict
from privmed.errors import PrivmedError
from privmed.models import build_model
from privmed.training import memory
from privmed.training.memory import MemoryPlan, choose_physical_batch, measure
from privmed.training.trainer import train


def _volumes(size: int, n: int = 4):
    x = torch.rand(n, 1, size, size, size)
    return x, torch.ones(n, 1)


def test_measured_need_grows_with_the_volume_and_with_dp():
    net = build_model("resnet9_small", spatial_dims=3, image_size=16)
    small = measure(net, *_volumes(8), private=False, device="cpu")
    large = measure(net, *_volumes(16), private=False, device="cpu")
    private = measure(net, *_volumes(16), private=True, device="cpu")
    assert large.per_sample > 4 * small.per_sample  # activations: 8x the voxels
    params = sum(p.numel() * 4 for p in net.parameters())
    assert private.per_sample - large.per_sample == pytest.approx(memory.GRAD_SAMPLE_COPIES * params)  # DP
    assert large.available > 0


def test_the_batch_is_lowered_to_what_fits_or_refused_with_what_one_sample_needs():
    plan = MemoryPlan(per_sample=100e6, fixed=50e6, available=2.5e9)  # half of it: 1.25 GB -> 12 samples
    assert choose_physical_batch(plan, 128, what="m") == 12
    assert choose_physical_batch(plan, 8, what="m") == 8
    with pytest.raises(PrivmedError, match=r"resnet9_small at 64 px \(3D\): one training sample needs about 2\.84 GB"):
        choose_physical_batch(MemoryPlan(3e9, 50e6, 4e9), 8, what="resnet9_small at 64 px (3D)")


@pytest.mark.slow
def test_a_3d_dp_run_trains_with_the_physical_batch_that_fits(tmp_path, monkeypatch, caplog):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 12, 12, 12), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(tmp_path / "vol.npz", **arrays)
    config = config_from_dict({
        "out": str(tmp_path / "run"), "data": {"path": str(tmp_path / "vol.npz"), "image_size": 16, "spatial_dims": 3},
        "model": {"name": "resnet9_small"}, "privacy": {"epsilon": 8},
        "training": {"epochs": 1, "batch_size": 16, "physical_batch_size": 16, "augment": False,
                     "bootstrap_resamples": 100}})
    net = build_model("resnet9_small", spatial_dims=3, image_size=16)
    need = measure(net, *_volumes(16), private=True, device="cpu")
    room_for_five = (need.fixed + 5.5 * need.per_sample) / memory.MEMORY_SHARE
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": room_for_five)
    out = train(config)
    assert rundir.read_config_dict(out)["training"]["physical_batch_size"] == 5
    assert "training with physical batches of 5 instead" in caplog.text  # logged; the CLI shows it
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": need.fixed)
    with pytest.raises(PrivmedError, match="one training sample needs about"):
        train(dataclasses.replace(config, out=str(tmp_path / "refused")))
    assert not (tmp_path / "refused").exists()
