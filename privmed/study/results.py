"""A study's tables, gathered from its run directories (so a partial study can be reported).

* ``results.csv``: one row per run of the grid: ``strategy, model, epsilon, total_epsilon,
  private, seed``, every test metric with its CI, the same for each external test set, the
  validation AUROC of the chosen checkpoint, the membership audit's attack AUCs and epsilon lower
  bounds for audited runs, status, error and the run's directory;
* ``fairness.csv``: per finished run, attribute, label and group, the subgroup metrics with
  CIs on the test split (:func:`privmed.evaluation.fairness.subgroup_metrics`; groups under
  ``MIN_GROUP_SIZE`` patients suppressed), the group's training-set size and its parity differences;
* ``fairness_gaps.csv``: per run and attribute, fairlearn's demographic parity, equal
  opportunity and equalized odds differences;
* ``fairness_trends.csv``: across the DP-SGD runs (finite epsilon) of each strategy, Pearson's r (and p) between
  epsilon and each group's AUROC parity difference, and between a group's training-set size
  and the AUROC it lost to DP (its AUROC in the same strategy's non-private run of the same
  seed minus its AUROC in the private run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from privmed import rundir
from privmed.errors import error_kind
from privmed.evaluation.external import evaluation_dir
from privmed.evaluation.fairness import (
    fairlearn_differences,
    group_sizes,
    parity_differences,
    pearson,
    subgroup_metrics,
    suppress_complements,
)
from privmed.evaluation.metrics import MEAN_KEY, METRIC_NAMES
from privmed.evaluation.shortcut import FIGURES as SHORTCUT_FIGURES

from .config import Cell, StudyConfig, epsilon_label
from .state import CHANGED, STATUS, audit_config, config_drift, evaluated, finished

RESULTS = "results.csv"
FAIRNESS = "fairness.csv"
GAPS = "fairness_gaps.csv"
TRENDS = "fairness_trends.csv"
ID_COLUMNS = ["run", "strategy", "model", "epsilon", "total_epsilon", "private", "seed", "generator", "status"]


@dataclass(frozen=True)
class StudyTables:
    """Everything a report needs, as data frames."""

    results: pd.DataFrame
    fairness: pd.DataFrame
    gaps: pd.DataFrame
    trends: pd.DataFrame


def collect(study: StudyConfig, out: Path, *, write: bool = True) -> StudyTables:
    """Gather the study's tables from ``out`` (and write them there)."""
    out = Path(out)
    cells = study.cells(out)
    status = rundir.read_json(out / STATUS) if (out / STATUS).is_file() else {}
    results = pd.DataFrame([_result_row(c, study, out, status.get(c.run_id, {})) for c in cells])
    fairness, gaps = _fairness_tables(study, cells, results)
    trends = _trends(fairness)
    tables = StudyTables(results, fairness, gaps, trends)
    if write:
        fairness_files = (FAIRNESS, GAPS, TRENDS)
        for name, frame in ((RESULTS, results), (FAIRNESS, fairness), (GAPS, gaps), (TRENDS, trends)):
            if name in fairness_files and not study.fairness.attributes:
                continue  # no attributes asked for: no empty fairness tables
            rundir.write_csv(out / name, frame)
    return tables


# --------------------------------------------------------------------------- results.csv


def _result_row(cell: Cell, study: StudyConfig, out: Path, status: dict) -> dict:
    run = Path(cell.config.out)
    row = {"run": cell.run_id, "strategy": cell.strategy, "model": cell.model,
           "epsilon": epsilon_label(cell.epsilon), "total_epsilon": math.nan, "private": None, "seed": cell.seed,
           "generator": cell.generator or "", "status": "pending"}
    drift = config_drift(cell)
    if not finished(run) or drift:
        row["status"] = "failed" if drift or status.get("status") == "failed" else (
            "interrupted" if (run / rundir.CHECKPOINTS / rundir.LAST).is_file() else "pending")
        # the error's kind only: its text (in failed/<run>.txt) may name a patient, a file or a path
        error = CHANGED.format(run=run, changes="; ".join(drift)) if drift else status.get("error", "")
        row["error"] = error_kind(error)
        row["dir"] = str(run.relative_to(out))
        return row
    verdict = rundir.verify_run(run)  # a record whose keyed seal fails is refused
    privacy = rundir.read_record(run)
    metrics = rundir.read_json(run / rundir.METRICS)
    row.update(status="finished", private=privacy.private, seal=verdict.words(),
               total_epsilon=float(privacy.epsilon) if privacy.private else math.inf,
               unit=privacy.unit,
               not_private_because=" ".join(privacy.non_private_reasons),
               free_inputs=" ".join(f"{sentence}." for sentence in privacy.free_inputs),
               val_auroc=metrics["checkpoint"]["val_auroc"])
    row.update(_metric_columns(metrics["splits"]["test"], "test"))
    for spec in study.external:
        if evaluated(run, spec):
            record = rundir.read_json(evaluation_dir(run, spec.name, spec.split) / rundir.METRICS)
            row.update(_metric_columns(record["splits"][spec.split], spec.name))
    row.update(_audit_columns(study, run))
    history = run / rundir.HISTORY
    row["train_seconds"] = round(float(pd.read_csv(history)["seconds"].sum()), 1) if history.is_file() else math.nan
    row["error"] = ""
    row["dir"] = str(run.relative_to(out))
    return row


def _audit_columns(study: StudyConfig, run: Path) -> dict:
    """The audit's design, and per attack its AUC (with CI) and TPR at 0.1% FPR; the ε lower bound and the
    Gaussian-DP estimate only for randomised designs (``audit_<attack>_...``). The confounded train-vs-test
    diagnostic gets ``audit_<attack>_train_vs_test_...`` columns and never an ε column."""
    from privmed.audit.design import TRAIN_VS_TEST
    from privmed.audit.one_run import largest_showable_bound
    from privmed.audit.membership import audit_path

    config = audit_config(study)
    path = audit_path(run, config) if config is not None else None
    if path is None or not path.is_file():
        return {}
    result = rundir.read_json(path)
    claimed = result["claimed_epsilon"]
    columns = {"audit_claimed_epsilon": math.inf if claimed == "inf" else float(claimed),
               "audit_design": result.get("design", TRAIN_VS_TEST), "audit_canaries": result["canaries"],
               "audit_shadows": result["shadows"], "audit_bound_holds": result["bound_holds"]}
    if result["canaries"]:  # the most a perfect attack could show with this many canaries, at this delta
        columns["audit_max_showable_bound"] = largest_showable_bound(canaries=result["canaries"],
                                                                     delta=float(result["delta"]))
    for attack in result["attacks"]:
        randomised = attack.get("randomised", False)  # records written before designs existed: no bound
        name = f"audit_{attack['attack']}" + ("" if randomised else "_train_vs_test")
        columns.update({f"{name}_auc": attack["auc"], f"{name}_auc_ci_low": attack["auc_ci"][0],
                        f"{name}_auc_ci_high": attack["auc_ci"][1],
                        f"{name}_tpr_at_0.1pct_fpr": attack["tpr_at_01pct_fpr"]})
        if randomised:
            columns.update({f"{name}_eps_lower_bound": attack["eps_lower_bound"],
                            f"{name}_gdp_epsilon": attack["gdp_epsilon"]})
    return columns


def _metric_columns(split: dict, prefix: str) -> dict:
    """``prefix_metric``, ``_ci_low``, ``_ci_high`` for every metric (multi-label: the mean over labels)."""
    values = split.get(MEAN_KEY, split)
    columns = {f"{prefix}_n": split["n"]}
    for metric in METRIC_NAMES:
        ci = values[metric]
        columns.update({f"{prefix}_{metric}": ci["value"], f"{prefix}_{metric}_ci_low": ci["ci_low"],
                        f"{prefix}_{metric}_ci_high": ci["ci_high"]})
    for figure in SHORTCUT_FIGURES:  # binary tasks (privmed.evaluation.diagnostics)
        if isinstance(split.get(figure), dict):
            ci = split[figure]
            columns.update({f"{prefix}_{figure}": ci["value"], f"{prefix}_{figure}_ci_low": ci["ci_low"],
                            f"{prefix}_{figure}_ci_high": ci["ci_high"]})
    return columns


# --------------------------------------------------------------------------- fairness


def _fairness_tables(study: StudyConfig, cells: list[Cell], results: pd.DataFrame
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    spec = study.fairness
    group_rows, gap_rows = [], []
    done = results.set_index("run")
    for cell in cells:
        run = Path(cell.config.out)
        if not spec.attributes or done.loc[cell.run_id, "status"] != "finished":
            continue
        frame = pd.read_csv(run / rundir.PREDICTIONS)
        thresholds = rundir.read_json(run / rundir.METRICS)["thresholds"]
        ids = {k: done.loc[cell.run_id, k] for k in ID_COLUMNS[1:]}
        for attribute in spec.attributes:
            groups = _groups(frame, attribute, spec.bins.get(attribute))
            test = (frame["split"] == "test").to_numpy()
            train, patients = frame["split"].to_numpy() == "train", frame["patient_id"].to_numpy()
            train_sizes = pd.Series(groups[train]).value_counts()
            train_patients = group_sizes(groups=groups[train], patient_ids=patients[train])
            for label, threshold in thresholds.items():
                suffix = "" if len(thresholds) == 1 else f"_{label}"
                table = subgroup_metrics(y_true=frame[f"label{suffix}"].to_numpy()[test],
                                         scores=frame[f"score{suffix}"].to_numpy()[test], threshold=threshold,
                                         groups=groups[test], patient_ids=patients[test],
                                         n_resamples=cell.config.training.bootstrap_resamples,
                                         seed=cell.seed, min_size=spec.min_group_size)
                for metric in ("auroc", "positive_rate"):  # weighted by n, before counts are hidden
                    table[f"{metric}_parity_difference"] = parity_differences(table=table, metric=metric).to_numpy()
                table = suppress_complements(table, train_sizes=train_sizes, min_size=spec.min_group_size,
                                             train_patients=train_patients)
                head = {"run": cell.run_id, **ids, "attribute": attribute, "label": label}
                group_rows += [{**head, **r} for r in table.to_dict("records")]
                gaps = fairlearn_differences(y_true=frame[f"label{suffix}"].to_numpy()[test],
                                             scores=frame[f"score{suffix}"].to_numpy()[test], threshold=threshold,
                                             groups=groups[test], min_size=spec.min_group_size,
                                             patient_ids=patients[test])
                gap_rows.append({**head, "demographic_parity_difference": gaps.demographic_parity,
                                 "equal_opportunity_difference": gaps.equal_opportunity,
                                 "equalized_odds_difference": gaps.equalized_odds})
    return pd.DataFrame(group_rows), pd.DataFrame(gap_rows)


def _groups(frame: pd.DataFrame, attribute: str, edges: tuple[float, ...] | None) -> np.ndarray:
    values = frame[attribute]
    if edges is None:
        return np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)
    names = [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])]
    cut = pd.cut(pd.to_numeric(values, errors="coerce"), bins=list(edges), labels=names, include_lowest=True)
    return np.array([None if pd.isna(v) else str(v) for v in cut], dtype=object)


def _trends(fairness: pd.DataFrame) -> pd.DataFrame:
    """Pearson's r across the private runs of each strategy (see the module docstring)."""
    if fairness.empty:
        return pd.DataFrame(columns=["strategy", "model", "attribute", "label", "group", "x", "y", "r", "p",
                                     "n_points"])
    shown = fairness[~fairness["suppressed"].astype(bool)].copy()
    shown["eps"] = shown["epsilon"].astype(float)
    rows = []
    for (strategy, model, attribute, label), part in shown.groupby(["strategy", "model", "attribute", "label"]):
        private = part[np.isfinite(part["eps"])]  # trained with DP-SGD (private overall unless a generator is not)
        for group, g in private.groupby("group"):
            r, p = pearson(x=g["eps"].to_numpy(), y=g["auroc_parity_difference"].to_numpy())
            rows.append({"strategy": strategy, "model": model, "attribute": attribute, "label": label,
                         "group": group, "x": "epsilon", "y": "auroc_parity_difference", "r": r, "p": p,
                         "n_points": len(g)})
        lost = _auroc_lost(part, private)
        if len(lost):
            r, p = pearson(x=lost["train_n"].to_numpy(), y=lost["auroc_lost"].to_numpy())
            rows.append({"strategy": strategy, "model": model, "attribute": attribute, "label": label,
                         "group": "all", "x": "train_n", "y": "auroc_lost_to_dp", "r": r, "p": p,
                         "n_points": int(lost["auroc_lost"].notna().sum())})
    return pd.DataFrame(rows)


def _auroc_lost(part: pd.DataFrame, private: pd.DataFrame) -> pd.DataFrame:
    """Per private run and group: the group's AUROC at epsilon=inf (same seed) minus its private AUROC."""
    reference = part[np.isinf(part["eps"])].set_index(["seed", "group"])["auroc"]
    if reference.empty:
        return pd.DataFrame(columns=["train_n", "auroc_lost"])
    keys = list(zip(private["seed"], private["group"]))
    ref = np.array([reference.get(k, math.nan) for k in keys], dtype=float)
    return pd.DataFrame({"train_n": private["train_n"].to_numpy(), "auroc_lost": ref - private["auroc"].to_numpy()})
