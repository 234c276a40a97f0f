"""The first thing to try when a public prior exists, at the headline's settings: pretrain on public images,
then DP fine-tune on the private ones.

``public_prior.py``'s halves of CBIS-DDSM's training patients (patient-disjoint, stratified, seed 0): one
half declared public (``synthetic.public``: its images cost nothing, and privmed checks that they share no
patient id and no identical image with the private half), the other the only private training data; the
real val and test splits are kept. Recipe: privmed's defaults at 128 px, the headline's schedule without its
search (``benchmarks/studies/cbis_dp_sgd.yaml``'s most often kept candidate: lr 0.3, 40 epochs, expected batch 128; checkpoint =
best val epoch), patient unit, secret noise. Rows: DP-SGD on the private half alone, and pretraining on the
public half's images (20 epochs) then DP fine-tuning with the head kept, at each epsilon.

    python benchmarks/public_prior_headline.py [--runs benchmarks/runs/public_prior_headline] [--seeds 10]

Writes ``benchmarks/results/public_prior_headline.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, run_facts, run_one, seed_summary, write_results
from public_prior import split_halves

EPSILONS = (1.0, 2.0, 6.0, None)
RECIPE = {"data": {"image_size": 128, "class_names": ["benign", "malignant"], "allow_outside_root": True},
          "model": {"name": "scatter_linear"},
          "training": {"batch_size": 128, "physical_batch_size": 512, "lr": 0.3, "epochs": 40}}
PRIORS = ("none", "public_images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "public_prior_headline"))
    args = parse_benchmark_args(parser, seeds=10)
    t0 = time.perf_counter()
    runs = Path(args.runs)
    public, private = split_halves(Path(args.data), runs)
    rows = []
    for epsilon in EPSILONS:
        for prior in PRIORS:
            cell = ({"strategy": "dp_sgd_real", "generator": "none", "folder": None} if prior == "none" else
                    {"strategy": "pretrain_finetune", "generator": prior, "folder": public, "public": True})
            for seed in range(args.seeds):
                row = run_one(str(private), runs, seed=seed, epsilon=epsilon, recipe=RECIPE, **cell)
                rows.append({k: v for k, v in row.items() if k != "run"} | {"target_epsilon": epsilon or "inf"})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_results(Path(args.results), "public_prior_headline", table, markdown(table, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, seconds: float) -> list[str]:
    """Mean over seeds per epsilon and prior, and the prior's gain."""
    summary = seed_summary(table, ["target_epsilon", "generator"], sort=False, total=TOTAL_EPSILON)
    lines = ["# Pretraining on declared-public images, then DP fine-tuning, at the headline's settings", "",
             "`public_prior.py`'s halves of CBIS-DDSM's training patients: 559 patches declared public, 545 private "
             "(the only private training data); real val and test. `scatter_linear` (privmed's defaults) at 128 px, "
             "lr 0.3, 40 epochs, expected batch 128, patient unit (delta 1/(10 x patients)), secret noise; "
             "`total epsilon` is the run's ledger, which counts only the private half (see the script's docstring). "
             "Test AUROC, mean over seeds (min-max). " + run_facts(seconds) + " (runs already under --runs are "
             "reused).", "",
             "| epsilon | prior | total epsilon | val AUROC | test AUROC | prior's gain, test | seeds |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    base = summary[summary["generator"] == "none"].set_index("target_epsilon")["test"]
    for _, r in summary.iterrows():
        gain = "" if r["generator"] == "none" else f"{r['test'] - base[r['target_epsilon']]:+.3f}"
        eps = "∞" if r["target_epsilon"] == "inf" else f"{float(r['target_epsilon']):g}"
        lines.append(f"| {eps} | {r['generator']} | {r['total']} | {r['val']:.3f} | {r['test']:.3f} "
                     f"({r['lo']:.3f}-{r['hi']:.3f}) | {gain} | {r['seeds']} |")
    return lines


if __name__ == "__main__":
    main()
