"""Optional MLflow tracking (issue 18), against a local file store read back with MLflow's client."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from privmed.errors import PrivmedError

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow-skinny is not installed (pip install 'privmed[tracking]')")

FAST = ["--image-size", "32", "--model", "resnet9_small", "--epochs", "2", "--batch-size", "32", "--bootstrap", "100",
        "--augment", "false", "--noise-multiplier", "1"]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, phantom_root):
    """One `privmed train --mlflow-uri` run: (store folder, run directory)."""
    from privmed.cli import main

    tmp = tmp_path_factory.mktemp("tracked")
    store, run = tmp / "mlruns", tmp / "study" / "runs" / "dp"
    assert main(["train", "--data", str(phantom_root), *FAST, "--out", str(run), "--mlflow-uri", str(store)]) == 0
    return store, run


def _client(store, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(store.absolute().as_uri())
    return client, client.get_experiment_by_name("privmed")


@needs_mlflow
def test_a_run_logs_config_epochs_final_metrics_and_ledger(tracked, monkeypatch):
    store, run = tracked
    client, experiment = _client(store, monkeypatch)
    (logged,) = client.search_runs([experiment.experiment_id])
    params, metrics = logged.data.params, logged.data.metrics
    assert params["privacy.noise_multiplier"] == "1.0" and params["model.name"] == "resnet9_small"
    epsilons = [m.value for m in client.get_metric_history(logged.info.run_id, "epsilon")]
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1]
    assert len(client.get_metric_history(logged.info.run_id, "val_auroc")) == 2
    final = json.loads((run / "metrics.json").read_text())["splits"]["test"]["auroc"]
    assert metrics["splits.test.auroc.value"] == pytest.approx(final["value"])
    assert metrics["splits.test.auroc.ci_low"] == pytest.approx(final["ci_low"])
    ledger = json.loads((run / "privacy.json").read_text())
    assert metrics["epsilon_total"] == pytest.approx(ledger["epsilon"]) == pytest.approx(epsilons[-1])
    assert not any(k.endswith(".n") or k.endswith("_n") for k in metrics)  # counts stay in the run directory
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"privacy.json", "metrics.json", "config.yaml", "history.csv"} <= artifacts


@needs_mlflow
def test_a_study_logs_each_run_nested_in_its_own(tracked, tmp_path, monkeypatch):
    from privmed.tracking import MlflowTracker

    _, run = tracked
    store = tmp_path / "mlruns"
    (run.parents[1] / "report.md").write_text("# report\n")
    with MlflowTracker(uri=str(store), run_name="study", params={"name": "s"}) as parent:
        parent.log_study(run.parents[1], [run, run.parent / "unfinished"])
    client, experiment = _client(store, monkeypatch)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"study", "dp"}
    assert runs["dp"].data.tags["mlflow.parentRunId"] == runs["study"].info.run_id
    assert len(client.get_metric_history(runs["dp"].info.run_id, "loss")) == 2
    assert "report.md" in {a.path for a in client.list_artifacts(runs["study"].info.run_id)}


def test_without_the_option_nothing_is_tracked_and_without_mlflow_the_message_says_what_to_install(monkeypatch):
    from argparse import Namespace

    from privmed.errors import MLFLOW_MISSING
    from privmed.tracking import Tracker, tracker_from_args

    assert type(tracker_from_args(Namespace(mlflow=False, mlflow_uri=None))) is Tracker
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(PrivmedError) as err:
        tracker_from_args(Namespace(mlflow=True, mlflow_uri=None))
    assert str(err.value) == MLFLOW_MISSING
