"""Devices: --devices for study workers, shadow models on the run's device, clear refusals."""

import os

import pytest
import torch

from privmed.cli import main
from privmed.errors import PrivmedError
from privmed.training.devices import parse_devices, pin, worker_slots
from privmed.training.in_memory import shadow_device


def test_devices_parse_and_are_dealt_to_workers_in_turn():
    assert parse_devices("0, 1", available=2) == ("0", "1")
    assert worker_slots(("0", "1"), 3) == ["0", "1", "0"]
    assert worker_slots((), 3) == []
    with pytest.raises(PrivmedError, match="numbered 0 to 1"):
        parse_devices("0,2", available=2)
    with pytest.raises(PrivmedError, match="not a list of GPU indices"):
        parse_devices("cuda:0", available=2)
    with pytest.raises(PrivmedError, match="no CUDA GPU"):
        parse_devices("0", available=0)


def test_a_pinned_worker_sees_only_its_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    pin("1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    pin(None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_refused_before_anything_is_written(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("name: s\n")
    assert main(["study", str(study), "--out", str(tmp_path / "out"), "--devices", "0"]) == 2
    assert "--devices 0: this machine has no CUDA GPU" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "r").exists()


def test_shadow_models_train_where_the_run_did_when_this_machine_can():
    assert shadow_device("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert shadow_device("auto") == expected
    if not torch.cuda.is_available():
        assert shadow_device("cuda:0") == "cpu"  # a GPU run audited on a laptop


def test_predict_runs_where_the_model_is():
    from privmed.evaluation.predictions import predict

    net = torch.nn.Linear(3, 1)
    scores = predict(net, torch.zeros(5, 3))
    assert scores.shape == (5, 1)
