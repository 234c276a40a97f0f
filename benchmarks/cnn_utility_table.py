"""The table of ``benchmarks/studies/cnn_utility.yaml``: augmentation multiplicity and a moving average for the
default CNN on CBIS-DDSM, from the study's ``results.csv``.

    privmed study benchmarks/studies/cnn_utility.yaml --out benchmarks/runs/cnn_utility
    python benchmarks/cnn_utility_table.py --study benchmarks/runs/cnn_utility

Writes ``benchmarks/results/cnn_utility.{csv,md}``: one row per run, and the mean over seeds per epsilon, number
of views (``training.augment_views``) and moving-average decay (``training.ema``), read from each strategy.
"""

from __future__ import annotations

import math

import pandas as pd

from common import MEDIAN_TRAIN_S, TOTAL_EPSILON, seed_summary, study_table, summary_cells

COLUMNS = ["epsilon", "views", "ema", "seed", "total_epsilon", "val_auroc", "test_auroc", "train_seconds", "run"]


def levers(table: pd.DataFrame) -> pd.DataFrame:
    """Each run's number of views and ema decay, as its strategy in the study file sets them (defaults 1 and 0)."""
    strategies = table.attrs["study"]["strategies"]
    training = {name: (spec or {}).get("training", {}) for name, spec in strategies.items()}
    return table.assign(views=[int(training[s].get("augment_views", 1)) for s in table["strategy"]],
                        ema=[float(training[s].get("ema", 0.0)) for s in table["strategy"]])


def markdown(table: pd.DataFrame, facts: str) -> list[str]:
    summary = seed_summary(table, ["epsilon", "views", "ema"], total=TOTAL_EPSILON, train_s=MEDIAN_TRAIN_S)
    lines = ["# Augmentation multiplicity and a moving average for the default CNN on CBIS-DDSM", "",
             "`resnet9_small` at 64 px, patient unit, secret noise; the recipe and the levers in "
             "`benchmarks/studies/cnn_utility.yaml`. Mean over seeds; test AUROC (min-max); train s: the run's "
             "epochs. " + facts, "",
             "| epsilon | views | ema | total epsilon | val AUROC | test AUROC | seeds | median train s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        eps = "∞" if math.isinf(r.epsilon) else f"{r.epsilon:g}"
        lines.append(f"| {eps} | {r.views} | {r.ema:g} | {summary_cells(r)}")
    return lines


def main() -> None:
    study_table("cnn_utility", __doc__, levers, COLUMNS, markdown)


if __name__ == "__main__":
    main()
