"""Private evolution of the phantom on CBIS-DDSM: does a DP vote of the patients make the phantom more useful?

``privmed synth evolve`` (issue 19; Lin et al. 2024 Private Evolution, its simulator variant Sim-PE
2025): phantom parameter sets evolved under DP nearest-neighbour votes of the CBIS-DDSM training
patients (one vote per patient, split over their images; Gaussian noise; ``rounds`` releases composed
by the PRV accountant at the patient unit). Its images are used as ``benchmarks/studies/phantom_pretrain.yaml`` uses the
phantom, beside the phantom's prior (the same simulator, no votes: epsilon 0) and DP-SGD alone:

* ``synthetic_only``: ``scatter_linear`` trained without DP on the synthetic images alone (no real image
  touched; the run's epsilon is the evolution's), tested on the real test split;
* ``pretrain_finetune``: pretraining on the synthetic images, then DP fine-tuning on the real training
  split with the noise that makes evolution + fine-tuning compose to a total epsilon of 2 (the prior's
  phantom is free: its fine-tuning alone spends 2);
* ``dp_sgd_real``: DP-SGD on the real training split alone at epsilon 2;
* a diagnostic, NOT private: the same evolution with noiseless votes, to tell what the noise costs from
  what the votes themselves do.

Each evolution twice: ``evolved_*`` evolves all the phantom's parameters (``--vary all``),
``evolved_appearance_*`` only the appearance ones, every candidate's lesion morphology (shape, margin,
spiculation) fresh from its class's prior (``--vary appearance``); same votes, same accounting.

``cbis_synthetic.py``'s recipe (``common.run_one``: 64 px, 15 epochs, expected batch 128, lr 0.1, clip 1,
pretraining 20 epochs, head kept, checkpoint = best val epoch); 3,000 images per synthetic folder.
Evolution: 4 rounds, 32 candidates per class, at epsilon_PE 0.5 and 1 (one evolution per seed; the one
with the better mean val AUROC is marked). Test AUROC, mean and median over seeds.

    OMP_NUM_THREADS=1 python benchmarks/private_evolution.py --seeds 5 [--runs benchmarks/runs/private_evolution]

Writes ``benchmarks/results/private_evolution.{csv,md}``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import (IMAGE_SIZE, ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, phantom_folder, run_facts, run_one,
                    seed_summary, TOTAL_TWO, write_results)
from privmed import evolve, evolve_config_from_dict, read_record
from privmed.synth import candidates as cand  # measured on purpose: the evolution's candidate prior
from privmed.synth.evolve import prior_means

PE_EPSILONS = (0.5, 1.0)
NOISELESS = "noiseless"  # a diagnostic: the votes without noise (NOT private), to separate PE's limits from DP's
EVOLUTION = {"rounds": 4, "population": 32, "n": 3000}
#: source name prefix -> ``evolve.vary``
VARIANTS = {"evolved": "all", "evolved_appearance": "appearance"}


def evolved_once(data: str, out: Path, *, epsilon: float | None, seed: int, vary: str) -> Path:
    """``out`` holding an evolution at ``epsilon`` (None: noiseless votes, not private; candidates' seed ``seed``),
    run unless its record, written last, is there already (a folder without it is an interrupted run and is
    cleared)."""
    if not (out / "privacy.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        evolve(evolve_config_from_dict({
            "out": str(out), "data": {"path": data, "image_size": IMAGE_SIZE, "class_names": ["benign", "malignant"]},
            "privacy": {"epsilon": epsilon} if epsilon is not None else {"noise_multiplier": 0.0},
            "evolve": {**EVOLUTION, "seed": seed, "vary": vary}}))
    return out


def evolution_facts(folder: Path) -> dict:
    """What the evolution released and where it went: last round's winners, mean radius and contrast written,
    and the written images' mean spicule count, malignant minus benign (the prior's class signal)."""
    last = pd.read_csv(folder / "history.csv").iloc[-1]
    written = np.load(folder / "population.npz")
    return {"winners": int(last["winners_0"] + last["winners_1"]), "radius": float(written["radius"].mean()),
            "contrast": float(written["contrast"].mean()), "spicule_gap": spicule_gap(written),
            "pe_epsilon": read_record(folder).epsilon}


def spicule_gap(population) -> float:
    """Mean spicule count of the malignant candidates minus that of the benign ones."""
    label = np.asarray(population["label"] if "label" in population else population["malignant"]).astype(bool)
    return float(population["n_spic"][label].mean() - population["n_spic"][~label].mean())


def rows_for_seed(data: str, runs: Path, phantom: Path, seed: int) -> list[dict]:
    rows = [{**run_one(data, runs, strategy="dp_sgd_real", generator="none", folder=None, seed=seed,
                       epsilon=2.0), "pe_epsilon": 0.0},
            {**run_one(data, runs, strategy="synthetic_only", generator="phantom", folder=phantom, seed=seed),
             "pe_epsilon": 0.0},
            {**run_one(data, runs, strategy="pretrain_finetune", generator="phantom", folder=phantom, seed=seed,
                       epsilon=2.0), "pe_epsilon": 0.0}]
    for prefix, vary in VARIANTS.items():
        rows += variant_rows(data, runs, prefix, vary, seed)
    for row in rows:
        row["source"] = row["generator"].split("_seed")[0]
        print({k: v for k, v in row.items() if k != "run"}, flush=True)
    return rows


def variant_rows(data: str, runs: Path, prefix: str, vary: str, seed: int) -> list[dict]:
    """One variant's evolutions at each epsilon and noiseless, each used synthetic-only and for pretraining."""
    rows = []
    for eps in (*PE_EPSILONS, None):
        name = f"{prefix}_{f'eps{eps:g}' if eps is not None else NOISELESS}_seed{seed}"
        folder = evolved_once(data, runs / name, epsilon=eps, seed=seed, vary=vary)
        facts = evolution_facts(folder)
        # a private evolution and the classifier compose to 2; a noiseless one is not private, the classifier at 2
        finetune = {"total_epsilon": TOTAL_TWO} if eps is not None else {"epsilon": 2.0}
        rows.append({**run_one(data, runs, strategy="synthetic_only", generator=name, folder=folder, seed=seed),
                     **facts})
        rows.append({**run_one(data, runs, strategy="pretrain_finetune", generator=name, folder=folder, seed=seed,
                               **finetune), **facts})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "private_evolution"))
    args = parse_benchmark_args(parser, seeds=5)
    t0 = time.perf_counter()
    runs = Path(args.runs)
    phantom = phantom_folder(runs / "phantom")
    rows = [row for seed in range(args.seeds) for row in rows_for_seed(args.data, runs, phantom, seed)]
    table = pd.DataFrame(rows).drop(columns=["run"])
    write_results(Path(args.results), "private_evolution", table, markdown(table, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, seconds: float) -> list[str]:
    """Mean and median over seeds per (source, strategy), DP-SGD alone at epsilon 2 beside them."""
    summary = seed_summary(table, ["source", "strategy"], sort=False, total=TOTAL_EPSILON,
                           median=("test_auroc", "median"), winners=("winners", "mean"), radius=("radius", "mean"),
                           contrast=("contrast", "mean"), spicules=("spicule_gap", "mean"))
    bar = summary.loc[summary["strategy"] == "dp_sgd_real", "test"].iloc[0]
    evolved = summary[summary["source"].str.startswith("evolved") & ~summary["source"].str.endswith(NOISELESS)]
    variant = evolved["source"].str.rsplit("_", n=1).str[0]
    chosen = set(evolved.loc[evolved.groupby([variant, "strategy"])["val"].idxmax()].index)
    prior = prior_means(seed=0)
    rng = np.random.default_rng(0)
    gap = spicule_gap(cand.join(*(cand.CandidatePrior.measured(seed=0).draw(c, 2000, rng) for c in (0, 1))))
    lines = ["# Private evolution of the phantom on CBIS-DDSM (train-on-synthetic; pretraining + DP fine-tuning)", "",
             f"`scatter_linear` at {IMAGE_SIZE} px; evolution {EVOLUTION['rounds']} rounds x "
             f"{EVOLUTION['population']} candidates per class, {EVOLUTION['n']} images written; the phantom prior: "
             "3000 patches of the un-evolved simulator (epsilon 0). `total epsilon` is the run's ledger (PRV "
             "accountant, unit of privacy the patient: 578 training patients, delta 1/(10 x patients), secret "
             "noise): the evolution's histograms composed with the fine-tuning's DP-SGD. `*`: the evolution "
             "epsilon with the better mean val AUROC for that variant and strategy. `evolved_*`: every parameter evolves "
             "(`--vary all`); `evolved_appearance_*`: only the appearance parameters (lesion size and contrast, "
             "density, texture, noise), each candidate's lesion morphology (shape, margin, spiculation) fresh from its "
             "class's prior (`--vary appearance`). `*_noiseless`: a diagnostic, the same "
             "evolution with noiseless votes (NOT private; its fine-tuning runs at epsilon 2). Winners: candidates (both classes) above "
             "the vote threshold in the last round; radius / contrast: mean of the written images' parameters "
             f"(prior: {prior['radius']:.3f} / {prior['contrast']:.3f}); spicule gap: the written images' mean "
             f"spicule count, malignant minus benign (prior: {gap:.2f}). " + run_facts(seconds), "",
             "| source | strategy | total epsilon | val AUROC | test AUROC mean | median (min-max) | vs dp_sgd_real "
             "eps 2 | winners | radius | contrast | spicule gap | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in summary.iterrows():
        versus = f"{r['test'] - bar:+.3f}" if r["strategy"] != "dp_sgd_real" else ""
        facts = (f"{r['winners']:.1f} | {r['radius']:.3f} | {r['contrast']:.3f} | {r['spicules']:.2f}"
                 if r["source"].startswith("evolved") else " | | | ")
        lines.append(f"| {r['source']}{' *' if i in chosen else ''} | {r['strategy']} | {r['total']} | "
                     f"{r['val']:.3f} | {r['test']:.3f} | {r['median']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | "
                     f"{versus} | {facts} | {r['seeds']} |")
    return lines


if __name__ == "__main__":
    main()
