"""The table of ``benchmarks/studies/phantom_pretrain.yaml``: privmed's phantom (no patient data, epsilon 0) as
synthetic pretraining data for CBIS-DDSM, from the study's ``results.csv``.

    privmed study benchmarks/studies/phantom_pretrain.yaml --out benchmarks/runs/phantom_pretrain
    python benchmarks/phantom_pretrain_table.py --study benchmarks/runs/phantom_pretrain

Writes ``benchmarks/results/phantom_pretrain.{csv,md}``: one row per run, and the mean over seeds per strategy and
target epsilon beside DP-SGD on real data at the same target; of the two pretraining strategies (head kept or
re-initialised after pretraining) the one with the better mean val AUROC at each epsilon is marked ``*``.
"""

from __future__ import annotations

import pandas as pd

from common import TOTAL_EPSILON, seed_summary, study_table

COLUMNS = ["strategy", "head", "epsilon", "seed", "total_epsilon", "val_auroc", "test_auroc", "test_auroc_ci_low",
           "test_auroc_ci_high", "train_seconds", "run"]
REAL = "dp_sgd_real"


def heads(table: pd.DataFrame) -> pd.DataFrame:
    """Whether a pretraining strategy keeps the pretrained head (``synthetic.reinit_head`` in the study file)."""
    strategies = table.attrs["study"]["strategies"]
    synthetic = {name: (spec or {}).get("synthetic", {}) for name, spec in strategies.items()}
    return table.assign(head=["" if synthetic[s].get("use") != "pretrain" else
                              ("re-initialised" if synthetic[s].get("reinit_head") else "kept")
                              for s in table["strategy"]])


def markdown(table: pd.DataFrame, facts: str) -> list[str]:
    """Mean over seeds per cell, beside DP-SGD on real data at the same target (total) epsilon."""
    summary = seed_summary(table, ["strategy", "head", "epsilon"], sort=False, total_epsilon=TOTAL_EPSILON)
    real = summary[summary["strategy"] == REAL].set_index("epsilon")["test"]
    pretrain = summary[summary["head"] != ""]
    chosen = set(pretrain.loc[pretrain.groupby("epsilon")["val"].idxmax()].index)
    lines = ["# privmed's phantom (no patient data, epsilon 0) as synthetic pretraining data for CBIS-DDSM", "",
             "`scatter_linear` at 64 px, 3,000 phantom patches (seed 0), the recipe in "
             "`benchmarks/studies/phantom_pretrain.yaml`; `epsilon` is the classifier's target, `total epsilon` the "
             "run's ledger (PRV accountant, unit of privacy the patient, one image of a sampled patient per step, "
             "delta 1/(10 x patients); secret noise): the phantom adds nothing to it. Pretraining with the head kept "
             "or re-initialised: both shown, `*` marks the one with the better mean val AUROC. Test AUROC, mean over "
             "seeds (min-max). " + facts, "",
             "| strategy | head | epsilon | total epsilon | val AUROC | test AUROC | vs dp_sgd_real at the same "
             "target | seeds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in summary.iterrows():
        bar = real.get(r["epsilon"])
        versus = f"{r['test'] - bar:+.3f}" if bar is not None and r["strategy"] != REAL else ""
        lines.append(f"| {r['strategy']} | {r['head']}{' *' if i in chosen else ''} | {r['epsilon']:g} | "
                     f"{r['total_epsilon']:.3g} | {r['val']:.3f} | {r['test']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | "
                     f"{versus} | {r['seeds']} |")
    return lines


def main() -> None:
    study_table("phantom_pretrain", __doc__, heads, COLUMNS, markdown)


if __name__ == "__main__":
    main()
