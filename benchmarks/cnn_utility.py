"""Free levers for privmed's default CNN on CBIS-DDSM (issue 19): augmentation multiplicity and a moving average.

The default CNN (``resnet9_small``, GroupNorm) with DP-SGD on real CBIS-DDSM mass patches at the
patient unit, the recipe of ``cnn_synthetic.py`` fixed before any result (64 px, SGD lr 0.1,
momentum 0.9, 20 epochs, expected batch 128, clip 1, PRV accountant, delta 1/(10 x patients),
flips and small rotations as augmentation, the epoch with the best val AUROC kept), with:

* ``views`` K (``training.augment_views``): K augmented views of each image per step, their
  per-sample gradients averaged before clipping (De et al. 2022); K times the compute, no privacy;
* ``ema`` (``training.ema``): the weights' exponential moving average (decay per logical step,
  about 5 steps an epoch here) validated and kept instead of the raw weights; post-processing.

Every cell at the same epsilon has the same noise multiplier (neither lever changes the sampling
or the number of steps). Choose on val; test is reported.

    python benchmarks/cnn_utility.py [--epsilons 1 2 inf] [--views 1 4] [--ema 0 0.9] [--seeds 5] [--jobs 4]

``--jobs`` runs that many trainings at once (on a GPU; keep 1 on 2 CPU cores). Writes
``benchmarks/results/cnn_utility.{csv,md}``; finished runs under ``--runs`` are reused.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from common import (MEDIAN_TRAIN_S, ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, run_facts, seed_summary,
                    summary_cells, write_results)

RECIPE = {"data": {"image_size": 64, "class_names": ["benign", "malignant"]}, "model": {"name": "resnet9_small"},
          "training": {"batch_size": 128, "lr": 0.1, "epochs": 20, "bootstrap_resamples": 100, "augment": True}}


def run_cell(data: str, runs: str, epsilon: float, views: int, ema: float, seed: int) -> dict:
    """One ``privmed train`` run (reused when finished); its val and test AUROC and ledger epsilon."""
    import json
    import warnings

    from privmed import rundir
    from privmed.config import config_from_dict
    from privmed.training.trainer import train

    warnings.filterwarnings("ignore")
    out = Path(runs) / f"eps{epsilon:g}_views{views}_ema{ema:g}_seed{seed}"
    if not (out / rundir.METRICS).is_file():
        cfg = json.loads(json.dumps(RECIPE))
        cfg["data"]["path"], cfg["out"] = data, str(out)
        cfg["training"].update(seed=seed, augment_views=views, ema=ema)
        cfg["privacy"] = {"epsilon": epsilon} if math.isfinite(epsilon) else {}
        t0 = time.perf_counter()
        train(config_from_dict(cfg))
        (out / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    splits = rundir.read_json(out / rundir.METRICS)["splits"]
    ledger = rundir.read_record(out)
    return {"epsilon": epsilon, "views": views, "ema": ema, "seed": seed,
            "total_epsilon": round(ledger.epsilon, 4) if ledger.private else math.inf,
            "val_auroc": round(splits["val"]["auroc"]["value"], 4), "test_auroc": round(splits["test"]["auroc"]["value"], 4),
            "train_seconds": float((out / "train_seconds.txt").read_text())}


def markdown(table: pd.DataFrame, seconds: float) -> list[str]:
    summary = seed_summary(table, ["epsilon", "views", "ema"], total=TOTAL_EPSILON, train_s=MEDIAN_TRAIN_S)
    lines = ["# Augmentation multiplicity and a moving average for the default CNN on CBIS-DDSM", "",
             "`resnet9_small` at 64 px, patient unit, secret noise; the recipe and the levers in the script's "
             "docstring. Mean over seeds; test AUROC (min-max). " + run_facts(seconds), "",
             "| epsilon | views | ema | total epsilon | val AUROC | test AUROC | seeds | median train s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        eps = "∞" if math.isinf(r.epsilon) else f"{r.epsilon:g}"
        lines.append(f"| {eps} | {r.views} | {r.ema:g} | {summary_cells(r)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "cnn_utility"))
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 2.0, math.inf])
    parser.add_argument("--views", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--ema", nargs="+", type=float, default=[0.0, 0.9])
    parser.add_argument("--jobs", type=int, default=1)
    args = parse_benchmark_args(parser, seeds=5)
    t0 = time.perf_counter()
    cells = list(itertools.product(args.epsilons, args.views, args.ema, range(args.seeds)))
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(run_cell, *zip(*[(args.data, args.runs, *c) for c in cells])))
    table = pd.DataFrame(rows)
    write_results(Path(args.results), "cnn_utility", table, markdown(table, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
