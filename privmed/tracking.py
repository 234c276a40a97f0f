"""Optional experiment tracking in MLflow (``pip install privmed[tracking]``, i.e. ``mlflow-skinny``).

``privmed train --mlflow`` (a local ``./mlruns`` store) or ``--mlflow-uri URI`` logs one MLflow
run: the resolved configuration as parameters, per-epoch ``loss``, ``val_auroc`` and
``epsilon`` (epsilon spent so far; not logged for non-private runs), the final metrics of
every split with their bootstrap CIs, and the run directory's ledger (``privacy.json``),
``metrics.json``, ``config.yaml`` and ``history.csv`` as artifacts. ``privmed study`` logs the
study as a parent run (its report as artifacts) and each run as a nested run.

The trainer only calls the :class:`Tracker` interface (``log_epoch``; the run directory is
logged after training), so a run without tracking pays nothing and needs no MLflow.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Mapping

from privmed.errors import MLFLOW_MISSING, MLFLOW_UNAVAILABLE, PrivmedError

DEFAULT_URI = "./mlruns"
DEFAULT_EXPERIMENT = "privmed"
#: run-directory files logged as artifacts (those that exist)
ARTIFACTS = ("privacy.json", "metrics.json", "config.yaml", "history.csv", "train.log")
EPOCH_METRICS = ("loss", "val_auroc", "epsilon")
#: study-folder files logged as the parent run's artifacts
STUDY_ARTIFACTS = ("results.csv", "report.html", "report.md")


class Tracker:
    """Does nothing: what a run without tracking gets. Subclasses log somewhere."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        """One finished epoch (the trainer's ``on_epoch_end`` callback)."""

    def log_run_dir(self, out: Path) -> None:
        """A finished run's final metrics and files."""

    def log_study(self, out: Path, runs: list[Path]) -> None:
        """A study's finished runs (each its own nested run) and its report."""


def tracker_from_args(args: argparse.Namespace, *, params: Mapping[str, Any] | None = None,
                      run_name: str | None = None) -> Tracker:
    """An :class:`MlflowTracker` when ``--mlflow`` or ``--mlflow-uri`` was given, else a no-op :class:`Tracker`.
    ``params``: the resolved configuration (a run's) or the study file (a study's)."""
    uri = getattr(args, "mlflow_uri", None)
    if not uri and not getattr(args, "mlflow", False):
        return Tracker()
    experiment = getattr(args, "mlflow_experiment", None) or DEFAULT_EXPERIMENT
    return MlflowTracker(uri=uri or DEFAULT_URI, experiment=experiment, run_name=run_name, params=params)


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise PrivmedError(MLFLOW_MISSING) from None
    return mlflow


class MlflowTracker(Tracker):
    """One MLflow run (nested in the active one when ``nested``)."""

    def __init__(self, *, uri: str, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, nested: bool = False) -> None:
        self.mlflow = _mlflow()
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.params, self.nested = dict(params or {}), nested
        self.run_id: str | None = None

    def __enter__(self) -> "MlflowTracker":
        try:
            if not self.nested:
                uri = _as_uri(self.uri)
                if uri.startswith("file:"):  # MLflow 3 keeps its folder store behind an opt-in; a folder is asked for
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                self.mlflow.set_tracking_uri(uri)
                self.mlflow.set_experiment(self.experiment)
            run = self.mlflow.start_run(run_name=self.run_name, nested=self.nested)
        except self.mlflow.exceptions.MlflowException as err:
            raise PrivmedError(MLFLOW_UNAVAILABLE.format(uri=self.uri, reason=str(err).splitlines()[0][:300])) from None
        self.run_id = run.info.run_id
        if self.params:
            self.mlflow.log_params(flatten(self.params))
        return self

    def __exit__(self, exc_type, *exc: Any) -> None:
        self.mlflow.end_run(status="FAILED" if exc_type is not None else "FINISHED")

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        metrics = {k: float(row[k]) for k in EPOCH_METRICS if k in row and _finite(row[k])}
        if metrics:
            self.mlflow.log_metrics(metrics, step=int(epoch))

    def log_run_dir(self, out: Path) -> None:
        from privmed import rundir

        out = Path(out)
        if (out / rundir.METRICS).is_file():
            self.mlflow.log_metrics(final_metrics(rundir.read_json(out / rundir.METRICS)))
        if (out / rundir.PRIVACY).is_file():
            ledger = rundir.read_record(out)
            self.mlflow.set_tags({"privmed/private": str(ledger.private),
                                  "privmed/privacy_summary": ledger.stated_summary[:4000], "privmed/seal": ledger.seal})
            if _finite(ledger.epsilon):
                self.mlflow.log_metric("epsilon_total", float(ledger.epsilon))
        for name in ARTIFACTS:
            if (out / name).is_file():
                self.mlflow.log_artifact(str(out / name))

    def log_study(self, out: Path, runs: list[Path]) -> None:
        """Each finished run of a study as a run nested in this one (its configuration, per-epoch history,
        final metrics and ledger), then the study's results table and report as this run's artifacts."""
        import pandas as pd

        from privmed import rundir

        for run in map(Path, runs):
            if not (run / rundir.METRICS).is_file():
                continue
            with MlflowTracker(uri=self.uri, experiment=self.experiment, run_name=run.name,
                               params=rundir.read_config_dict(run), nested=True) as child:
                if (run / rundir.HISTORY).is_file():
                    child.log_history(pd.read_csv(run / rundir.HISTORY).to_dict("records"))
                child.log_run_dir(run)
        for name in STUDY_ARTIFACTS:
            if (Path(out) / name).is_file():
                self.mlflow.log_artifact(str(Path(out) / name))

    def log_history(self, history: list[Mapping[str, Any]]) -> None:
        """Per-epoch rows of a run trained elsewhere (a study's worker), read from its ``history.csv``."""
        for row in history:
            self.log_epoch(int(row["epoch"]), row)


def final_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number of ``metrics.json`` as an MLflow metric: ``test.auroc``, ``test.auroc_ci.0``, ..."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if key == "n" or key.endswith("_n"):  # counts stay in the run directory: no small count leaves it
            continue
        if isinstance(value, Mapping):
            out.update(final_metrics(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)) and len(value) <= 4:
            out.update({f"{name}.{i}": float(v) for i, v in enumerate(value) if _finite(v)})
        elif _finite(value):
            out[name] = float(value)
    return {_clean(k): v for k, v in out.items()}


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested configuration -> ``{"privacy.epsilon": "2.0", ...}`` (MLflow parameters are flat strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[_clean(name)] = str(value)[:500]
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clean(name: str) -> str:
    """MLflow names allow letters, digits, and _ - . / space."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _as_uri(uri: str) -> str:
    """A plain folder becomes a ``file://`` URI (absolute), so a relative path means the same everywhere."""
    if "://" in uri or uri.startswith(("databricks", "sqlite")):
        return uri
    return Path(uri).absolute().as_uri()
