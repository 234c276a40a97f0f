"""Should pretraining images' mean features be corrected per channel by the private data? Side by side.

With ``--synthetic`` images (``augment`` or ``pretrain``), a feature model's head centre is their mean
features; ``privacy.center: channels`` (the default) corrects it by the private training data's
per-channel mean, released with noise and composed into epsilon, as it corrects the phantom's mean
when there are no synthetic images; ``auto`` keeps their mean alone and spends all of epsilon on
DP-SGD. This runs both on ``public_prior.py``'s halves of CBIS-DDSM's training patients (one
half public, one private; real val and test) at privmed's default image size, 128 px:

* none: DP-SGD on the private half alone (``auto``: the phantom's centre; ``channels``: corrected);
* ``public_images``: pretraining on the public half's own images (declared public; same archive, so
  their mean is close to the private one's);
* ``phantom``: pretraining on 1,000 phantom patches (no patient data; their mean is farther off).

``scatter_linear`` at 128 px, SGD lr 0.3, momentum 0.9, 40 epochs, expected batch 128, clip 1
(``cbis_utility.py``'s head schedule), pretraining 20 epochs with the head kept, then DP
fine-tuning on the private half at epsilon 2 (PRV, patient unit, secret noise); the epoch with
the best val AUROC is kept.

    python benchmarks/synthetic_centre.py [--runs benchmarks/runs/synthetic_centre] [--seeds 5]

Writes ``benchmarks/results/synthetic_centre.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import ROOT, SHARED, parse_benchmark_args, run_facts, run_one, seed_summary, summary_cells, write_results
from privmed import rundir
from privmed.data.phantom import PhantomSpec, write_phantom_dataset
from public_prior import split_halves

EPSILON = 2.0
CENTRES = ("auto", "channels")
RECIPE = {"data": {"image_size": 128, "class_names": ["benign", "malignant"], "allow_outside_root": True},
          "model": {"name": "scatter_linear"},
          "training": {"batch_size": 128, "physical_batch_size": 512, "lr": 0.3, "epochs": 40}}
PHANTOM = PhantomSpec(n_samples=1000, image_size=128, seed=0)


def phantom_once(folder: Path) -> Path:
    """``folder`` holding the phantom patches of :data:`PHANTOM`, written unless its record (written last) is there."""
    if not (folder / rundir.PRIVACY).is_file():
        write_phantom_dataset(folder, PHANTOM)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "synthetic_centre"))
    args = parse_benchmark_args(parser, seeds=5)
    t0 = time.perf_counter()
    runs = Path(args.runs)
    public, private = split_halves(Path(args.data), runs)
    cells = [{"strategy": "dp_sgd_real", "generator": "none", "folder": None},
             {"strategy": "pretrain_finetune", "generator": "public_images", "folder": public, "public": True},
             {"strategy": "pretrain_finetune", "generator": "phantom", "folder": phantom_once(runs / "phantom")}]
    rows = []
    for centre in CENTRES:
        for cell in cells:
            for seed in range(args.seeds):
                row = run_one(str(private), runs / centre, seed=seed, epsilon=EPSILON, recipe=RECIPE,
                              privacy={"center": centre}, **cell)
                rows.append({"center": centre, **{k: v for k, v in row.items() if k != "run"}})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_results(Path(args.results), "synthetic_centre", table, markdown(table, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, seconds: float) -> list[str]:
    """Mean over seeds per prior and centre."""
    summary = seed_summary(table.assign(total_epsilon=table["total_epsilon"].astype(float)),
                           ["generator", "center"], sort=False)
    lines = ["# The head's centre beside pretraining images: their mean alone (auto) or corrected per channel "
             "(channels)", "",
             f"`public_prior.py`'s halves of CBIS-DDSM's training patients; `scatter_linear` at 128 px, DP fine-tuning "
             f"on the private half at a total epsilon of {EPSILON:g} (PRV, patient unit, secret noise; `channels` "
             "composes its centre release into that total). Val and test AUROC, mean over seeds (test min-max). "
             + run_facts(seconds) + " (runs already under --runs are reused).", "",
             "| prior | center | total epsilon | val AUROC | test AUROC | seeds | train s (median) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {row.generator} | {row.center} | {summary_cells(row)}" for row in summary.itertuples()]
    return lines


if __name__ == "__main__":
    main()
