"""How far the DP-SGD head's schedule can move CBIS-DDSM at the patient unit (issue 19): a grid of recipes.

``scatter_linear``'s front end at 128 px, plain (``base``) and averaged over each image's 8 dihedral views
(``dihedral``), centred by the mean features of 1,000 phantom patches (privmed's default centre: free, all of
epsilon to DP-SGD); the DP-SGD head of ``cbis_utility.py`` (``train_in_memory``: Poisson sampling of the 578
training patients, one image of a sampled patient per step, clip 1, SGD momentum 0.9, secret noise, PRV
accountant, delta = 1/(10 x 578); the epoch with the best val AUROC kept, as in every privmed run) with every
schedule of the grid: expected batch ``BATCHES`` patients, ``EPOCHS`` epochs, learning rate ``LRS``. Each cell is
one recipe at one epsilon, 5 seeds; nothing is chosen inside a cell, so its test AUROC is an honest figure for
that recipe. The summary says what the grid can and cannot buy: the best cell by val, the best cell by test
(an oracle choice that is NOT a result, only a ceiling for this family of recipes), and the paired gain of
dihedral over plain features, recipe by recipe.

    python benchmarks/cbis_recipe_grid.py [--seeds 5] [--epsilons 1 2]

Writes ``benchmarks/results/cbis_recipe_grid.{csv,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cbis_utility import SIZE, dp_sgd_head, features, front_end, phantom_features, split_images
from common import SHARED, TOTAL_EPSILON, parse_benchmark_args, run_facts, seed_summary, write_results

FRONT_ENDS = ("base", "dihedral")
BATCHES = (32, 64, 128)
EPOCHS = (40, 100, 200)
LRS = (0.1, 0.3)
#: the schedule ``cbis_utility.py`` measures every lever with
TODAY = (128, 40, 0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 2.0])
    args = parse_benchmark_args(parser, seeds=5)
    t0 = time.perf_counter()
    images, labels, patients = split_images(args.data)
    rows = []
    for name in FRONT_ENDS:
        x = features(front_end(name), images, augment=False)
        centre = phantom_features(name)[0].mean(0)
        for epsilon, (batch, epochs, lr), seed in itertools.product(
                args.epsilons, itertools.product(BATCHES, EPOCHS, LRS), range(args.seeds)):
            recipe = {"batch_size": batch, "epochs": epochs, "lr": lr}
            aurocs, spent, kept = dp_sgd_head(x, labels, patients["train"], epsilon=epsilon, seed=seed,
                                              centre=centre, recipe=recipe)
            rows.append({"features": name, "epsilon": epsilon, **recipe, "seed": seed,
                         "total_epsilon": round(spent, 4), "val_auroc": round(aurocs["val"], 4),
                         "test_auroc": round(aurocs["test"], 4),
                         "shifted_test_auroc": round(aurocs["shifted_test"], 4), "kept": kept})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_results(Path(args.results), "cbis_recipe_grid", table, markdown(table, time.perf_counter() - t0))


def cells(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per front end, epsilon and schedule."""
    return seed_summary(table, ["epsilon", "features", "batch_size", "epochs", "lr"], total=TOTAL_EPSILON,
                        shifted=("shifted_test_auroc", "mean"))


def summary_lines(grid: pd.DataFrame) -> list[str]:
    """Per epsilon and front end: today's schedule, the val-best and the test-best (oracle) cells, the grid's
    mean; then dihedral's gain over plain features, paired by schedule."""
    lines = ["| epsilon | features | today's schedule (test) | best by val: schedule, val, test | "
             "oracle best by test | mean over the grid (test) |", "|---:|---|---:|---|---:|---:|"]
    for (eps, name), g in grid.groupby(["epsilon", "features"]):
        today = g[(g.batch_size == TODAY[0]) & (g.epochs == TODAY[1]) & (g.lr == TODAY[2])]["test"]
        by_val = g.loc[g["val"].idxmax()]
        lines.append(f"| {eps:g} | {name} | {today.iloc[0]:.3f} | B{by_val.batch_size} E{by_val.epochs} "
                     f"lr{by_val.lr:g}: {by_val.val:.3f}, {by_val.test:.3f} | {g['test'].max():.3f} | "
                     f"{g['test'].mean():.3f} |")
    paired = grid.pivot_table(index=["epsilon", "batch_size", "epochs", "lr"], columns="features", values="test")
    if set(FRONT_ENDS) <= set(paired.columns):
        gain = (paired["dihedral"] - paired["base"]).groupby(level="epsilon")
        lines += ["", "Dihedral minus plain features, test AUROC paired by schedule: " + "; ".join(
            f"epsilon {eps:g}: mean {g.mean():+.3f}, dihedral ahead in {int((g > 0).sum())} of {len(g)} schedules"
            for eps, g in gain)]
    return lines


def markdown(table: pd.DataFrame, seconds: float) -> list[str]:
    grid = cells(table)
    head = ["# The DP-SGD head's schedule on CBIS-DDSM at the patient unit: a grid", "",
            __doc__.split("\n\n")[1].replace("\n", " ") + f" {SIZE} px. Mean over seeds; test AUROC (min-max). "
            + run_facts(seconds), "", "## Summary", "", *summary_lines(grid), "", "## Every cell", "",
            "| epsilon | features | batch | epochs | lr | total epsilon | val AUROC | test AUROC | shifted test | seeds |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    body = [f"| {r.epsilon:g} | {r.features} | {r.batch_size} | {r.epochs} | {r.lr:g} | {r.total:.3g} | "
            f"{r.val:.3f} | {r.test:.3f} ({r.lo:.3f}-{r.hi:.3f}) | {r.shifted:.3f} | {r.seeds} |"
            for r in grid.itertuples()]
    return head + body


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
