"""Is a network trained from scratch the way past the frozen front end on CBIS-DDSM? (issue 19)

Issue 19 asks for test AUROC >= .75 non-privately at the patient unit with no pretrained weights;
``scatter_linear`` (the default, dihedral) gives .708. This runs, side by side, networks whose
features are learnt from the ~1,100 training patches against the default, non-privately and at
epsilon 1, 128 px, the epoch with the best val AUROC kept (choose on val, test is reported):

* ``scatter_linear``: the default recipe (SGD lr .1, 30 epochs, expected batch 128);
* ``scatter_cnn``: ScatterNet+CNN (Tramer & Boneh 2021), the scattering's 16x16 maps into a
  two-layer tanh CNN; non-private with Adam (lr 1e-3, batch 32, 60 epochs), at epsilon 1 with the
  default recipe;
* ``resnet9_small``: ResNet9 (GroupNorm) at 1/4 width from scratch, flips and small rotations,
  Adam (lr 1e-3, batch 32, 80 epochs); non-private only (``cnn_utility`` has it under DP at 64 px).

Each a ``privmed train`` run (reused when finished); patient unit, secret noise.

    python benchmarks/cbis_from_scratch.py [--seeds 3] [--jobs 1] [--device auto]

On 2 CPU cores a ``scatter_linear`` run takes seconds once its features are cached, a ``scatter_cnn``
run about a minute and the CNN about 27 min (so its committed row has 1 seed:
``--recipes resnet9_small --seeds 1``); on one H100 GPU, through the CLI, a CNN run took 44 s (3 seeds:
test .670). Writes ``benchmarks/results/cbis_from_scratch.{csv,md}`` from every finished run under
``--runs``, this invocation's and earlier ones' (so recipes can have different ``--seeds``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from common import (MEDIAN_TRAIN_S, ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, run_facts, seed_summary,
                    summary_cells, write_results)

ADAM = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32}
RECIPES = {  # name: (model, training keys over the defaults, epsilon)
    "scatter_linear": ("scatter_linear", {}, math.inf),
    "scatter_cnn": ("scatter_cnn", {**ADAM, "epochs": 60}, math.inf),
    "resnet9_small": ("resnet9_small", {**ADAM, "epochs": 80}, math.inf),
    "scatter_linear eps1": ("scatter_linear", {}, 1.0),
    "scatter_cnn eps1": ("scatter_cnn", {}, 1.0),
}


def slug(recipe: str) -> str:
    return recipe.replace(" ", "_")


def cell_dir(runs: str, recipe: str, seed: int) -> Path:
    return Path(runs) / f"{slug(recipe)}_seed{seed}"


def run_cell(data: str, runs: str, device: str, recipe: str, seed: int) -> None:
    """One ``privmed train`` run, skipped when already finished."""
    import warnings

    import torch

    from privmed import config_from_dict, run_finished, train

    warnings.filterwarnings("ignore")
    torch.set_num_threads(min(2, torch.get_num_threads()))  # a spawned worker starts with every core's thread
    out = cell_dir(runs, recipe, seed)
    if run_finished(out):
        return
    model, training, epsilon = RECIPES[recipe]
    cfg = {"data": {"path": data, "image_size": 128, "class_names": ["benign", "malignant"]},
           "model": {"name": model}, "out": str(out),
           "training": {**training, "seed": seed, "bootstrap_resamples": 100, "device": device},
           "privacy": {"epsilon": epsilon} if math.isfinite(epsilon) else {}}
    t0 = time.perf_counter()
    train(config_from_dict(json.loads(json.dumps(cfg))))
    (out / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")


def finished_cells(runs: str) -> pd.DataFrame:
    """Every finished run under ``runs`` (this invocation's and earlier ones'): val and test AUROC, ledger epsilon."""
    from privmed import read_metrics, read_record, run_finished

    rows = []
    for recipe, (model, _, epsilon) in RECIPES.items():
        for out in sorted(Path(runs).glob(f"{slug(recipe)}_seed*")):
            if not run_finished(out):
                continue
            splits = read_metrics(out)["splits"]
            ledger = read_record(out)
            rows.append({"recipe": recipe, "model": model, "epsilon": epsilon, "seed": int(out.name.rsplit("seed", 1)[1]),
                         "total_epsilon": round(ledger.epsilon, 4) if ledger.private else math.inf,
                         "val_auroc": round(splits["val"]["auroc"]["value"], 4),
                         "test_auroc": round(splits["test"]["auroc"]["value"], 4),
                         "train_seconds": float((out / "train_seconds.txt").read_text())})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, seconds: float) -> list[str]:
    summary = seed_summary(table, "recipe", sort=False, total=TOTAL_EPSILON, train_s=MEDIAN_TRAIN_S)
    lines = ["# Networks trained from scratch against the frozen front end on CBIS-DDSM", "",
             "128 px, patient unit, secret noise; the recipes in the script's docstring. Mean over seeds; "
             "test AUROC (min-max); each run's training time in the last column. The last invocation (finished runs are "
             "reused): " + run_facts(seconds), "",
             "| recipe | total epsilon | val AUROC | test AUROC | seeds | median train s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        lines.append(f"| {r.recipe} | {summary_cells(r)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "cbis_from_scratch"))
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1)
    args = parse_benchmark_args(parser, seeds=3)
    t0 = time.perf_counter()
    cells = [(r, s) for r in args.recipes for s in range(args.seeds)]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(run_cell, *zip(*[(args.data, args.runs, args.device, *c) for c in cells])))
    table = finished_cells(args.runs)
    write_results(Path(args.results), "cbis_from_scratch", table, markdown(table, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
