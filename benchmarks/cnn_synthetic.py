"""Synthetic pretraining for privmed's default CNN on CBIS-DDSM, at a composed total epsilon of 2.

``cbis_synthetic.py`` measures the synthetic routes with ``scatter_linear``, whose frozen
scattering front end leaves synthetic pretraining nothing to hand on but the feature centre.
A CNN learns its features, which is where the paper's pretraining gain came from; this asks
whether the default model (``resnet9_small``, ~0.4M parameters, GroupNorm) gains from
pretraining on synthetic images before DP fine-tuning, at the bar of issue 3:

* ``dp_sgd_real`` at epsilon 2;
* ``pretrain_finetune`` on privmed's phantom (3,000 patches at 64 px, seed 0; no patient
  data, epsilon 0), then DP fine-tuning at epsilon 2;
* ``pretrain_finetune`` on ``--samples`` (``privmed synth sample`` of an epsilon-1 DP
  generator), then DP fine-tuning at the classifier noise that makes the composed total
  exactly 2 (``calibrate_noise`` with the generator's stage as prior).

One recipe, fixed before any result (``run_one`` of ``cbis_synthetic.py``): 64 px, SGD lr
0.1, momentum 0.9, 20 epochs, expected batch 128, clip 1, PRV accountant, delta 1/(10 x patients), the patient as the unit of privacy;
pretraining 10 epochs on the synthetic images, then the whole model fine-tuned with its
pretrained head (privmed's defaults); the checkpoint is the epoch with the best val AUROC.
Nothing else is chosen. About 22 min a seed on 2 cores.

    python benchmarks/cnn_synthetic.py --samples SAMPLES/privmed_dp_eps1 [--seeds 3]

Writes ``benchmarks/results/cnn_synthetic.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import (MEDIAN_TRAIN_S, ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, phantom_folder, run_facts,
                    run_one, seed_summary, TOTAL_TWO, write_results)
from privmed import read_record

RECIPE = {"data": {"image_size": 64, "class_names": ["benign", "malignant"]}, "model": {"name": "resnet9_small"},
          "training": {"batch_size": 128, "lr": 0.1, "epochs": 20, "bootstrap_resamples": 100}}
PRETRAIN_EPOCHS = 10


def cells(phantom: Path, samples: Path, data: str) -> list[dict]:
    return [{"strategy": "dp_sgd_real", "generator": "none", "folder": None, "epsilon": 2.0},
            {"strategy": "pretrain_finetune", "generator": "phantom", "folder": phantom, "epsilon": 2.0},
            {"strategy": "pretrain_finetune", "generator": "privmed_dp_eps1", "folder": samples,
             "total_epsilon": TOTAL_TWO}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--samples", required=True, help="`privmed synth sample` folder of an epsilon-1 DP generator")
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "cnn_synthetic"))
    args = parse_benchmark_args(parser)
    t0 = time.perf_counter()
    runs, samples = Path(args.runs), Path(args.samples)
    rows = []
    for cell in cells(phantom_folder(runs / "phantom"), samples, args.data):
        for seed in range(args.seeds):
            row = run_one(args.data, runs, seed=seed, recipe=RECIPE, pretrain_epochs=PRETRAIN_EPOCHS, **cell)
            rows.append({k: v for k, v in row.items() if k != "run"})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_results(Path(args.results), "cnn_synthetic", table, markdown(table, samples, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, samples: Path, seconds: float) -> list[str]:
    """Mean over seeds per cell, beside DP-SGD on real data."""
    summary = seed_summary(table, ["strategy", "generator"], sort=False, epsilon=("epsilon", "first"),
                           total=TOTAL_EPSILON, seconds=MEDIAN_TRAIN_S)
    real = float(summary.loc[summary["strategy"] == "dp_sgd_real", "test"].iloc[0])
    generator = read_record(samples).summary.rstrip(".")
    lines = ["# Synthetic pretraining for the default CNN (`resnet9_small`) at a composed total epsilon of 2", "",
             f"64 px; recipe fixed in advance (see the script's docstring); `epsilon` is the classifier's DP-SGD "
             f"alone, `total epsilon` the run's ledger. The DP generator's samples: `{samples.name}` ({generator}). "
             f"Test AUROC, mean over seeds (min-max). Median train s is one whole run (pretraining included); the "
             f"runs' train time sums to {table['train_seconds'].sum() / 60:.0f} min (finished runs under --runs are "
             "reused, so this invocation may have trained fewer). " + run_facts(seconds), "",
             "| strategy | generator | epsilon | total epsilon | val AUROC | test AUROC | vs dp_sgd_real | seeds | "
             "median train s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in summary.iterrows():
        versus = "" if r["strategy"] == "dp_sgd_real" else f"{r['test'] - real:+.3f}"
        lines.append(f"| {r['strategy']} | {r['generator']} | {r['epsilon']} | {r['total']} | {r['val']:.3f} | "
                     f"{r['test']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | {versus} | {r['seeds']} | "
                     f"{r['seconds']:.0f} |")
    return lines


if __name__ == "__main__":
    main()
