"""The table of ``benchmarks/studies/cbis_dp_sgd.yaml`` (and ``cbis_dp_sgd_caps.yaml``): DP-SGD on real CBIS-DDSM
mass patches at several epsilons and both units of privacy, beside the published row, from the studies' results.

    privmed study benchmarks/studies/cbis_dp_sgd.yaml --out benchmarks/runs/cbis_dp_sgd
    privmed study benchmarks/studies/cbis_dp_sgd_caps.yaml --out benchmarks/runs/cbis_dp_sgd_caps
    python benchmarks/cbis_dp_sgd_table.py --study benchmarks/runs/cbis_dp_sgd --caps benchmarks/runs/cbis_dp_sgd_caps

Every run's ledger is checked against an independent accountant: its stages composed by Microsoft's
``prv_accountant`` (not the Opacus code privmed calls). What each run's search kept (learning rate, epochs) is
read from its ``metrics.json``. Writes ``benchmarks/results/cbis_dp_sgd.{csv,md}``.

Published (Osuala et al. 2024, ImageNet-pretrained Swin-T at 224 px, frozen backbone, RDP accountant, delta
1e-4, unit not stated): test AUROC .525/.572/.596/.611/.622 at epsilon 1/6/12/20/60, .778 non-private. privmed
uses no pretrained weights at all.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import pandas as pd
import yaml

from common import ROOT, study_facts, study_results, write_results
from privmed import read_metrics, read_record

PUBLISHED = {1.0: .525, 6.0: .572, 12.0: .596, 20.0: .611, 60.0: .622, math.inf: .778}
UNITS = ("patient", "image")
COLUMNS = ["unit", "epsilon", "seed", "total_epsilon", "epsilon_prv_accountant", "candidates", "val_auroc",
           "test_auroc", "test_auroc_ci_low", "test_auroc_ci_high", "chosen_lr", "chosen_epochs", "noise_multiplier",
           "sample_rate", "train_seconds", "cap", "run"]


def reference_epsilon(run: Path) -> float | str:
    """The run's ledger stages composed by Microsoft's ``prv_accountant``: an independent check of its epsilon."""
    from prv_accountant import PRVAccountant
    from prv_accountant.privacy_random_variables import GaussianMechanism, PoissonSubsampledGaussianMechanism

    record = read_record(run)
    if not record.private:
        return "inf"
    prvs = [GaussianMechanism(noise_multiplier=s.noise_multiplier) if s.sample_rate == 1.0 else
            PoissonSubsampledGaussianMechanism(noise_multiplier=s.noise_multiplier, sampling_probability=s.sample_rate)
            for s in record.stages]
    steps = [s.steps for s in record.stages]
    try:
        accountant = PRVAccountant(prvs=prvs, max_self_compositions=steps, eps_error=0.01,
                                   delta_error=record.delta / 1000)
        return round(accountant.compute_epsilon(delta=record.delta, num_self_compositions=steps)[2], 4)
    except RuntimeError:  # its discretiser fails at low noise and large epsilon ("discrete mean differs")
        return "n/a"


def run_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (results.csv has its unit): its cap, the candidates its search tried, what it kept, its noise and
    sample rate, and its epsilon by the independent accountant."""
    rows = []
    for r in table.itertuples():
        config = yaml.safe_load((r.run_dir / "config.yaml").read_text())
        record, kept = read_record(r.run_dir), read_metrics(r.run_dir)["checkpoint"].get("candidate", {})
        tune = config.get("tune") or {}
        rows.append({"cap": config["privacy"].get("max_images_per_patient"),
                     "candidates": math.prod(len(v) for v in tune.values() if v) if any(tune.values()) else 1,
                     "chosen_lr": kept.get("lr", config["training"]["lr"]),
                     "chosen_epochs": kept.get("epochs", config["training"]["epochs"]),
                     "noise_multiplier": record.noise_multiplier, "sample_rate": record.sample_rate,
                     "epsilon_prv_accountant": reference_epsilon(r.run_dir)})
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def _label(epsilon: float) -> str:
    return "∞" if math.isinf(epsilon) else f"{epsilon:g}"


def _cell(rows: pd.DataFrame) -> str:
    return f"{rows['test_auroc'].mean():.3f} ({rows['test_auroc'].min():.3f}-{rows['test_auroc'].max():.3f})"


def markdown(table: pd.DataFrame, caps: pd.DataFrame | None, facts: str) -> list[str]:
    lines = ["# DP-SGD on real CBIS-DDSM mass patches, at the patient and the image unit", "",
             "privmed's default `scatter_linear` front end (no pretrained weights) with the recipe and the private "
             "search of `benchmarks/studies/cbis_dp_sgd.yaml` (its description says what epsilon covers and what "
             "was chosen on validation outside it). Patient unit: Poisson sampling of patients, delta 1/(10 x "
             "patients); image unit: delta 1/(10 x images), and a patient with m images is then protected only at "
             f"m x epsilon. Test AUROC, mean (min-max) over {table['seed'].nunique()} seeds; val: the mean val AUROC "
             "of the kept checkpoint. " + facts, "",
             "| epsilon | published (Swin-T, ImageNet) | patient unit: test AUROC, mean (min-max) | val | image unit: "
             "test AUROC, mean (min-max) | val | patient - image | patient beats published |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for eps in sorted(table["epsilon"].unique()):
        p, i = (table[(table["epsilon"] == eps) & (table["unit"] == u)] for u in UNITS)
        if p.empty or i.empty:  # a unit not run at this epsilon
            continue
        published = PUBLISHED.get(eps)
        lines.append(f"| {_label(eps)} | {f'{published:.3f}' if published else '—'} | {_cell(p)} | "
                     f"{p['val_auroc'].mean():.3f} | {_cell(i)} | {i['val_auroc'].mean():.3f} | "
                     f"{p['test_auroc'].mean() - i['test_auroc'].mean():+.3f} | "
                     f"{'—' if published is None else ('yes' if p['test_auroc'].mean() > published else 'no')} |")
    lines += ["", *_ledger_check(table), "", "Noise and what was kept (median over seeds):", "",
              "| unit | epsilon | noise multiplier | sample rate | kept lr/epochs (seeds) | median train s |",
              "|---|---|---:|---:|---|---:|"]
    for (unit, eps), rows in table.groupby(["unit", "epsilon"], sort=False):
        kept = ", ".join(f"{lr:g}/{ep}" for lr, ep in zip(rows["chosen_lr"], rows["chosen_epochs"]))
        lines.append(f"| {unit} | {_label(eps)} | {statistics.median(rows['noise_multiplier']):.3g} | "
                     f"{statistics.median(rows['sample_rate']):.3g} | {kept} | "
                     f"{statistics.median(rows['train_seconds']):.0f} |")
    if caps is not None:
        lines += ["", "Cap on a patient's images per step, k (`benchmarks/studies/cbis_dp_sgd_caps.yaml`: patient "
                  "unit, one seed, no search; chosen on validation, so not covered by epsilon either):", "",
                  "| epsilon | k | val AUROC | test AUROC |", "|---|---:|---:|---:|"]
        lines += [f"| {_label(r.epsilon)} | {r.cap} | {r.val_auroc:.3f} | {r.test_auroc:.3f} |"
                  for r in caps.sort_values(["epsilon", "cap"]).itertuples()]
    return lines


def _ledger_check(table: pd.DataFrame) -> list[str]:
    checked = table[~table["epsilon_prv_accountant"].isin(["inf", "n/a"])]
    failed = sorted(set(table.loc[table["epsilon_prv_accountant"] == "n/a", "epsilon"]))
    if checked.empty:
        return ["Independent check of the ledgers: no private run to check."]
    gap = (checked["total_epsilon"].astype(float) - checked["epsilon_prv_accountant"].astype(float)).abs().max()
    return [f"Independent check of the ledgers: each private run's epsilon (its stages composed by Opacus's PRV "
            f"accountant) against Microsoft's `prv_accountant` composing the same stages (column "
            f"`epsilon_prv_accountant`): largest difference {gap:.1e} over {len(checked)} runs"
            + (f"; at epsilon {', '.join(_label(e) for e in failed)} its discretiser fails ('n/a')."
               if failed else ".")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "benchmarks" / "runs" / "cbis_dp_sgd"),
                        help="the --out folder of studies/cbis_dp_sgd.yaml")
    parser.add_argument("--caps", default=None, help="the --out folder of studies/cbis_dp_sgd_caps.yaml (optional)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    table = run_rows(study_results(Path(args.study)))
    caps = run_rows(study_results(Path(args.caps))) if args.caps else None
    Path(args.results).mkdir(parents=True, exist_ok=True)
    write_results(Path(args.results), "cbis_dp_sgd", table[COLUMNS], markdown(table, caps, study_facts(args.study)))


if __name__ == "__main__":
    main()
