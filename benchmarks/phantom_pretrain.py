"""Synthetic images that cost no privacy: privmed's in-silico phantom as pretraining data for CBIS-DDSM.

A generator that never sees patient data is differentially private with epsilon 0.
privmed's phantom (``privmed phantom --dataset DIR``) is one: round, sharp-edged benign
masses and irregular or spiculated malignant ones on a power-law tissue background,
drawn by a fixed program from a seed (its constants are set by hand from published
descriptions of mammograms; no code fits them to CBIS-DDSM, and the file has not changed
since the project's first commit). Its folder carries a record that says so, and
``privmed train --synthetic`` then adds no stage to the ledger: the run's epsilon is the
classifier's own, and its privacy summary names the phantom as a free input.

Cells (``cbis_synthetic.py``'s recipe and ``run_one``: ``scatter_linear`` at 64 px, SGD lr
0.1, momentum 0.9, 15 epochs, expected batch 128, clip 1, PRV accountant; pretraining 20
epochs; checkpoint = best val epoch), 3,000 phantom patches at 64 px (seed 0), 10 seeds
(the committed table; the script's default is 3):

* ``dp_sgd_real`` at epsilon 1, 2, 6 (its feature centre released privately, inside epsilon);
* ``pretrain_finetune`` on the phantom, then DP fine-tuning at epsilon 1, 2, 6, with the
  pretrained head kept and re-initialised (both shown; the choice on val is marked);
* ``augment`` (real + phantom under DP-SGD) at epsilon 2; ``synthetic_only`` (no real data).

    python benchmarks/phantom_pretrain.py --seeds 10 [--runs benchmarks/runs/phantom_pretrain]

Writes ``benchmarks/results/phantom_pretrain.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import (PHANTOM, ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, phantom_folder, run_facts, run_one,
                    seed_summary, write_results)

EPSILONS = (1.0, 2.0, 6.0)




def cells(phantom: Path) -> list[dict]:
    out = [{"strategy": "dp_sgd_real", "generator": "none", "folder": None, "epsilon": e} for e in EPSILONS]
    out += [{"strategy": "pretrain_finetune", "generator": "phantom", "folder": phantom, "epsilon": e,
             "reinit_head": reinit} for e in EPSILONS for reinit in (False, True)]
    out += [{"strategy": "augment", "generator": "phantom", "folder": phantom, "epsilon": 2.0},
            {"strategy": "synthetic_only", "generator": "phantom", "folder": phantom}]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "phantom_pretrain"))
    args = parse_benchmark_args(parser)
    t0 = time.perf_counter()
    runs = Path(args.runs)
    rows = []
    for cell in cells(phantom_folder(runs / "phantom")):
        for seed in range(args.seeds):
            row = run_one(args.data, runs, seed=seed, **cell)
            rows.append({"target_epsilon": cell.get("epsilon", "none"), **{k: v for k, v in row.items() if k != "run"}})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_results(Path(args.results), "phantom_pretrain", table, markdown(table, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, seconds: float) -> list[str]:
    """Mean over seeds per cell, beside DP-SGD on real data at the same target (total) epsilon."""
    table = table.assign(head=table["reinit_head"].map({False: "kept", True: "re-initialised"}).where(
        table["strategy"] == "pretrain_finetune", ""))
    summary = seed_summary(table, ["strategy", "head", "target_epsilon"], sort=False, epsilon=("epsilon", "first"),
                           total_epsilon=TOTAL_EPSILON)
    real = summary[summary["strategy"] == "dp_sgd_real"].set_index("target_epsilon")["test"]
    pretrain = summary[summary["strategy"] == "pretrain_finetune"]
    chosen = set(pretrain.loc[pretrain.groupby("target_epsilon")["val"].idxmax()].index)
    lines = ["# privmed's phantom (no patient data, epsilon 0) as synthetic pretraining data for CBIS-DDSM", "",
             f"`scatter_linear` at 64 px, {PHANTOM.n_samples} phantom patches (seed {PHANTOM.seed}); `epsilon` is "
             "the classifier's DP-SGD alone, `total epsilon` the run's ledger (PRV accountant, unit of privacy the "
             "patient: 578 training patients, one image of a sampled patient per step, delta 1/(10 x patients); "
             "secret noise); "
             "pretraining with the head kept or re-initialised: both shown, `*` marks the one with the better "
             "mean val AUROC. Test AUROC, mean over seeds (min-max). " + run_facts(seconds), "",
             "| strategy | head | epsilon | total epsilon | val AUROC | test AUROC | vs dp_sgd_real at the same "
             "target | seeds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in summary.iterrows():
        bar = real.get(r["target_epsilon"])
        versus = f"{r['test'] - bar:+.3f}" if bar is not None and r["strategy"] != "dp_sgd_real" else ""
        lines.append(f"| {r['strategy']} | {r['head']}{' *' if i in chosen else ''} | {r['epsilon']} | "
                     f"{r['total_epsilon']} | {r['val']:.3f} | {r['test']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | "
                     f"{versus} | {r['seeds']} |")
    return lines


if __name__ == "__main__":
    main()
