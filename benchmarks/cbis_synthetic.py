"""Synthetic data on CBIS-DDSM: three ways to use it, four generators, one composed epsilon.

Generators: ``paper`` (the authors' MCGAN patches, trained WITHOUT DP: unknown privacy
cost), ``privmed_nondp``, ``privmed_dp_eps1`` and ``privmed_dp_eps10`` (``privmed synth
train`` at 64 px on the training split by ``benchmarks/train_generators.sh GENS``). Each privmed
generator is sampled (3,000 images, seed 0) and measured (``privmed synth evaluate``).

Strategies (``privmed train --synthetic ... --synthetic-use ...``), classifier
``scatter_linear`` at 64 px, one fixed recipe chosen before looking at any result
(SGD lr 0.1, momentum 0.9, 15 epochs, expected batch 128, clip 1, PRV accountant;
pretraining 20 epochs on synthetic; synthetic-only 30 epochs); the checkpoint is the
epoch with the best validation AUROC (stated in each run's ledger); for pretraining, keeping
or re-initialising the head is chosen on validation (seed 0):

* ``dp_sgd_real`` at epsilon 2 (the bar to beat);
* ``pretrain_finetune`` and ``augment`` at classifier epsilon 1 and 6 with every generator
  but ``privmed_dp_eps10``, plus ``pretrain_finetune`` with ``privmed_dp_eps1`` at the
  classifier noise that makes the composed total exactly 2 (``calibrate_noise`` with the
  generator's stage as prior);
* ``synthetic_only`` with every generator.

    python benchmarks/cbis_synthetic.py --gens ../gens [--seeds 3]

Writes ``benchmarks/results/cbis_synthetic.{csv,md}`` and ``synthetic_quality.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from common import (IMAGE_SIZE, MEDIAN_TRAIN_S, ROOT, SHARED, patient_delta, run_one, samples_once, seed_summary,
                    TOTAL_TWO)
from privmed import DataConfig, dcr_membership, evaluate_synthetic, load_dataset, read_record, synthetic_images

GENERATORS = ("paper", "privmed_nondp", "privmed_dp_eps1", "privmed_dp_eps10")
PUBLISHED = {("pretrain_finetune", 1.0): .661, ("pretrain_finetune", 6.0): .677, ("augment", 1.0): .553,
             ("augment", 6.0): .617, ("synthetic_only", None): .639}
COLUMNS = ["strategy", "generator", "epsilon", "total_epsilon", "seed", "val_auroc", "test_auroc",
           "test_auroc_ci_low", "test_auroc_ci_high", "train_seconds", "reinit_head"]


#: generator name -> candidate folders under --gens (discriminator variants); the one with the best
#: train-on-synthetic AUROC on the real validation split is used (a choice made on private val data)
CANDIDATES = {"privmed_nondp": ("privmed_nondp", "da_s0", "da_s1", "da_s2"),
              "privmed_dp_eps1": ("privmed_dp_eps1", "dp1_da"),
              "privmed_dp_eps10": ("privmed_dp_eps10", "pixel_dp_eps10")}


def quality_rows(gens: Path, paper: Path, data: str, out: Path) -> list[dict]:
    """Measure the paper's patches and every candidate generator (3,000 images, seed 0)."""
    real = load_dataset(DataConfig(path=data, image_size=IMAGE_SIZE, class_names=("benign", "malignant")))
    rows = []
    candidates = [("paper", "paper")] + [(name, folder) for name, folders in CANDIDATES.items()
                                         for folder in folders if (gens / folder / "generator.pt").is_file()]
    for name, folder in candidates:
        images, labels, _, _ = synthetic_images(paper if name == "paper" else gens / folder, n=3000,
                                                image_size=IMAGE_SIZE)
        if name == "paper":
            private, eps, disc = False, math.inf, "pixel (MCGAN)"
        else:
            record = read_record(gens / folder)
            private, eps = record.private, record.epsilon
            gan = yaml.safe_load((gens / folder / "config.yaml").read_text())["gan"]  # the generator's settings
            disc = " + ".join([gan.get("discriminator", "pixel")] + [name for key, name in (
                ("minibatch_std", "minibatch std"), ("diff_augment", "DiffAugment")) if gan.get(key)])
        t0 = time.perf_counter()
        q = evaluate_synthetic(synthetic=images, labels=labels, real=real, out=out / "quality" / folder,
                               class_names=("benign", "malignant"))
        minutes = (pd.read_csv(gens / folder / "history.csv")["seconds"].sum() / 60) if name != "paper" else math.nan
        dcr, _ = dcr_membership(synthetic=images, members=real.split("train").images,
                                non_members=real.split("test").images, delta=patient_delta(data))
        rows.append({"generator": name, "folder": folder, "discriminator": disc, "train_minutes": round(minutes, 1),
                     "generator_epsilon": eps if private else "inf", "tos_val_auroc": round(q.tos_val_auroc, 4),
                     "tos_auroc": round(q.tos_auroc, 4), "tos_auroc_ci_low": round(q.tos_auroc_ci[0], 4),
                     "tos_auroc_ci_high": round(q.tos_auroc_ci[1], 4),
                     "frechet_distance": round(q.frechet_distance, 3),
                     "frechet_real_vs_real": round(q.frechet_real_vs_real, 3),
                     "diversity": round(float(np.mean(q.diversity)), 4),
                     "diversity_real": round(float(np.mean(q.diversity_real)), 4),
                     "near_copy_share": round(q.near_copy_share, 4), "near_copy_expected": q.near_copy_expected,
                     "median_nn_distance_synthetic": round(q.median_nn_distance_synthetic, 2),
                     "median_nn_distance_heldout": round(q.median_nn_distance_heldout, 2),
                     "dcr_attack_auc": round(dcr.auc, 4),  # train vs test: confounded, no eps bound
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    best = frame.groupby("generator")["tos_val_auroc"].idxmax()
    return [{**row, "chosen": i in set(best)} for i, row in enumerate(rows)]




def synthetic_folders(gens: Path, runs: Path, paper: Path, quality: pd.DataFrame) -> dict[str, Path]:
    """generator name -> folder of synthetic images (the chosen privmed generators, sampled once)."""
    folders = {"paper": paper}
    for _, row in quality[quality["chosen"] & (quality["generator"] != "paper")].iterrows():
        folders[row["generator"]] = samples_once(gens / row["folder"], runs / "samples" / row["folder"])
    return folders








def plan(folders: dict[str, Path], data: str) -> list[dict]:
    cells = [{"strategy": "dp_sgd_real", "generator": "none", "folder": None, "epsilon": 2.0}]
    for strategy in ("pretrain_finetune", "augment"):
        for eps in (1.0, 6.0):
            for gen in ("paper", "privmed_nondp", "privmed_dp_eps1"):
                cells.append({"strategy": strategy, "generator": gen, "folder": folders[gen], "epsilon": eps})
    # the classifier calibrated so that it and the generator (its samples carry its record) compose to 2
    cells.append({"strategy": "pretrain_finetune", "generator": "privmed_dp_eps1",
                  "folder": folders["privmed_dp_eps1"], "total_epsilon": TOTAL_TWO})
    cells += [{"strategy": "synthetic_only", "generator": gen, "folder": folders[gen]} for gen in GENERATORS]
    return cells


def markdown(table: pd.DataFrame, quality: pd.DataFrame, choices: pd.DataFrame, wall: float, delta: float) -> str:
    summary = seed_summary(table, ["strategy", "generator", "epsilon", "total_epsilon"], sort=False,
                           seconds=MEDIAN_TRAIN_S)
    bar = summary[summary["strategy"] == "dp_sgd_real"]["test"].mean()
    lines = ["# Synthetic data on CBIS-DDSM: augment, pretrain then DP fine-tune, synthetic only", "",
             f"Classifier `scatter_linear` at {IMAGE_SIZE} px; recipe fixed in advance (see the script's docstring); "
             f"generators 64 px; unit of privacy the patient (privmed's default: one image of a sampled patient per step, "
             f"secret noise), delta = 1/(10 x patients) = {delta:.2e}; `epsilon` is the classifier's own "
             f"(DP-SGD), `total_epsilon` the composition of every stage through the PRV accountant (`inf`: not "
             f"private, e.g. the paper's generator was trained without DP). Test AUROC, mean over seeds "
             f"(min-max); the checkpoint of every run is chosen on validation AUROC. {platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; this invocation {wall / 60:.1f} min "
             f"(runs already finished under --runs are reused, so only a first invocation times them all; the "
             f"generators' training times are in the quality table).",
             "", "| strategy | generator | epsilon | total epsilon | test AUROC | published | vs dp_sgd_real eps 2 "
             "| val AUROC | seeds | median s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in summary.iterrows():
        eps = None if r["strategy"] == "synthetic_only" else (float(r["epsilon"]) if r["epsilon"] != "inf" else None)
        pub = PUBLISHED.get((r["strategy"], eps if eps in (1.0, 6.0) else None))
        lines.append(f"| {r['strategy']} | {r['generator']} | {r['epsilon']} | {r['total_epsilon']} | "
                     f"{r['test']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | {pub if pub else ''} | "
                     f"{r['test'] - bar:+.3f} | {r['val']:.3f} | {r['seeds']} | {r['seconds']:.0f} |")
    lines += ["", "Generator quality (`privmed synth evaluate`, 3,000 images; paper: its 3,000 patches at 64 px). "
              "Where a generator name has several candidates (discriminator variants, training recipes, seeds), the "
              "one with the best train-on-synthetic AUROC on the real validation split was used in the runs above "
              "(`chosen`; a choice made on private validation data, and for a DP generator one whose privacy cost "
              "is not accounted). Diversity: per-pixel standard deviation across images, mean of the two classes "
              "(real training images in brackets):", "",
              "| generator | folder | discriminator | chosen | generator epsilon | train min | TOS val AUROC "
              "| train-on-synthetic test AUROC [95% CI] | Frechet (real vs real) | diversity (real) "
              "| near-copies (expected) | median NN distance synthetic / held-out | DCR AUC train vs test (confounded, no ε bound) |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, q in quality.iterrows():
        eps = q["generator_epsilon"]
        lines.append(f"| {q['generator']} | {q['folder']} | {q['discriminator']} | {'yes' if q['chosen'] else 'no'} "
                     f"| {eps if eps == 'inf' else f'{float(eps):.3g}'} | {q['train_minutes']:.1f} "
                     f"| {q['tos_val_auroc']:.3f} | {q['tos_auroc']:.3f} "
                     f"[{q['tos_auroc_ci_low']:.3f}, {q['tos_auroc_ci_high']:.3f}] | {q['frechet_distance']:.2f} "
                     f"({q['frechet_real_vs_real']:.2f}) | {q['diversity']:.3f} ({q['diversity_real']:.3f}) "
                     f"| {100 * q['near_copy_share']:.1f}% "
                     f"({100 * q['near_copy_expected']:.0f}%) | {q['median_nn_distance_synthetic']:.1f} / "
                     f"{q['median_nn_distance_heldout']:.1f} | {q['dcr_attack_auc']:.3f} |")
    lines += ["", "Pretrain then fine-tune: keep the pretrained head or re-initialise it, chosen on validation AUROC "
              "(seed 0). For `scatter_linear` the scattering front end is fixed, so with a re-initialised head what "
              "carries over from the synthetic images is the feature centre (their exact mean, free of privacy "
              "cost), which replaces the private centring release of `dp_sgd_real`:", "",
              "| generator | epsilon | val AUROC, head kept | val AUROC, head re-initialised | chosen |",
              "|---|---:|---:|---:|---|"]
    lines += [f"| {c['generator']} | {c['epsilon']} | {c['val_keep']:.3f} | {c['val_reinit']:.3f} | "
              f"{'re-initialised' if c['reinit_head'] else 'kept'} |" for _, c in choices.iterrows()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--paper", default=str(SHARED / "mcgan-synthetic"))
    parser.add_argument("--gens", required=True, help="folder with privmed_nondp, privmed_dp_eps1, privmed_dp_eps10")
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "cbis_synthetic"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    gens, runs, results = Path(args.gens), Path(args.runs), Path(args.results)
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    quality = pd.DataFrame(quality_rows(gens, Path(args.paper), args.data, runs))
    quality.to_csv(results / "synthetic_quality.csv", index=False)
    grids = results / "synthetic_grids"
    grids.mkdir(exist_ok=True)
    for folder in quality["folder"]:
        for png in ("samples", "closest_pairs"):
            shutil.copyfile(runs / "quality" / folder / f"{png}.png", grids / f"{folder}_{png}.png")
    folders = synthetic_folders(gens, runs, Path(args.paper), quality)
    rows, choices = [], []
    for cell in plan(folders, args.data):
        kwargs = {"strategy": cell["strategy"], "generator": cell["generator"], "folder": cell["folder"],
                  "epsilon": cell.get("epsilon"), "noise": cell.get("noise")}
        reinit = False
        if cell["strategy"] == "pretrain_finetune":  # keep or re-initialise the head: chosen on val, seed 0
            trials = {r: run_one(args.data, runs, seed=0, reinit_head=r, **kwargs) for r in (False, True)}
            reinit = max(trials, key=lambda r: trials[r]["val_auroc"])
            choices.append({**{k: trials[reinit][k] for k in ("strategy", "generator", "epsilon")},
                            "reinit_head": reinit, "val_keep": trials[False]["val_auroc"],
                            "val_reinit": trials[True]["val_auroc"]})
        for seed in range(args.seeds):
            rows.append(run_one(args.data, runs, seed=seed, reinit_head=reinit, **kwargs))
            print(json.dumps({k: rows[-1][k] for k in COLUMNS}), flush=True)
    table = pd.DataFrame(rows)
    table[COLUMNS].to_csv(results / "cbis_synthetic.csv", index=False)
    text = markdown(table, quality, pd.DataFrame(choices), time.perf_counter() - t0, patient_delta(args.data))
    (results / "cbis_synthetic.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
