"""What the feature centre is worth to a DP linear model on scattering features, and what it costs.

``scatter_linear`` subtracts a centre (the training-feature mean) before its linear head;
DP-SGD on uncentred features barely learns. privmed releases the centre with the
Gaussian mechanism (``privacy.center_noise_multiplier``, default 5) and composes it with
DP-SGD into the run's epsilon; ``--synthetic-use pretrain`` takes it, for free, from the
synthetic images instead. This measures, at a composed total epsilon of 2 (the bar of
issue 3), how test AUROC moves with the centre's noise, and puts beside it centres that
cost nothing more: the exact training mean (NOT private: an upper bound), the mean of the
paper's MCGAN patches (unknown privacy cost), no centre at all, and the mean of any
``--samples`` folder written by ``privmed synth sample`` (its generator's stages composed).

Recipe of ``synthetic_projection.py`` (``train_in_memory``: Opacus, PRV accountant,
Poisson batches of expected size 128, clip 1, SGD lr 0.1 momentum 0.9, 15 epochs,
delta 1/(10 N), the epoch with the best val AUROC); DP-SGD's noise is calibrated once so
that it and every earlier stage compose to exactly ``--epsilon``, and training uses that
noise as is. The private centre is privmed's own release (``set_center``), drawn afresh
for each seed. Nothing is chosen here; the table shows every row.

    python benchmarks/feature_centre.py [--samples gens_samples/privmed_dp_eps1 ...]

Writes ``benchmarks/results/feature_centre.{csv,md}`` (``feature_centre_eps{E}.*`` for another
``--epsilon E``; a centre or generator that alone spends E or more gets a row saying so).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from common import (BATCH, EPOCHS, SHARED, SIZE, TOTAL_EPSILON, parse_benchmark_args, run_facts, seed_summary,
                    write_results)
from components import dp_linear, features, split_features
from privmed import DataConfig, Mechanism, PrivmedError, epsilon_for
# measured on purpose, below the public API: the private feature centre's release and its share of the budget
from privmed.config import PrivacyConfig, SyntheticConfig
from privmed.privacy.plan import StageSpec, delta_for, make_plan, protected_unit
from privmed.privacy.randomness import CENTRE_STREAM, secret_generator
from privmed.privacy.units import PrivacyUnit
from privmed.training.centre import FeatureCenter, set_center
from privmed.privacy.engine import plan_schedule
from privmed.training.synthetic import load_synthetic

NOISE_MULTIPLIERS = (2.5, 3.5, 5.0, 8.0, 12.0, 20.0)


def private_centre(train: torch.Tensor, sigma: float, unit: PrivacyUnit) -> tuple[torch.Tensor, list[Mechanism]]:
    """privmed's Gaussian release of the training-feature mean over the unit's patients (secret noise, drawn
    afresh for every seed), and its accounted stage."""
    centre = FeatureCenter(train.shape[1])
    mechanism = set_center(centre, train, noise_multiplier=sigma, generator=secret_generator(stream=CENTRE_STREAM),
                           groups=unit.groups)
    return centre.center.double(), [mechanism]


def synthetic_centre(folder: str, data: DataConfig, label: str, model: nn.Module
                     ) -> tuple[torch.Tensor, list[Mechanism] | None]:
    """Mean features of a synthetic folder; its generator's stages, or None when it is not private."""
    source = load_synthetic(SyntheticConfig(path=folder), data, label_name=label)
    centre = features(model, source.data.images).mean(0)
    return centre, (None if source.non_private_reason else source.mechanisms)


def dp_sgd_plan(prior: list[Mechanism] | None, *, target: float, unit: PrivacyUnit) -> tuple[dict, float, float]:
    """The run config's privacy section that makes DP-SGD and ``prior`` (the centre's stages) compose to ``target``
    (the noise the privacy plan calibrates for a total), DP-SGD's own epsilon and the composed total; after a
    non-private stage, DP-SGD at ``target`` alone and total inf."""
    if prior is None:
        return {"epsilon": target}, target, math.inf
    schedule = plan_schedule(unit, batch_size=BATCH, epochs=EPOCHS)
    plan = make_plan(PrivacyConfig(total_epsilon=target), unit=unit, seed=0, prior=prior,
                     stages=[StageSpec("dp_sgd", schedule.sample_rate, schedule.steps)])
    return ({"noise_multiplier": plan.noise_multiplier}, plan.epsilon(plan.stages),
            plan.epsilon([*prior, *plan.stages]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--paper", default=str(SHARED / "mcgan-synthetic"))
    parser.add_argument("--samples", nargs="*", default=[], help="folders from `privmed synth sample`")
    parser.add_argument("--epsilon", type=float, default=2.0, help="composed total epsilon of every private row")
    args = parse_benchmark_args(parser)
    t0 = time.perf_counter()
    model, real, feats, labels = split_features(args.data)
    data = DataConfig(path=args.data, image_size=SIZE, class_names=("benign", "malignant"))
    train = feats["train"]
    unit = protected_unit(PrivacyConfig(), patient_ids=real.split("train").patient_ids, n=len(train))
    delta = delta_for(unit, None, check=False)
    exact = train.mean(0)

    # (label, noise multiplier, centre for a seed, its stages: [] costs nothing, None is not private)
    sources = [(f"released privately, noise {s:g}{' (default)' if s == 5.0 else ''}", s,
                lambda seed, s=s: private_centre(train, s, unit)) for s in NOISE_MULTIPLIERS]
    sources.append(("exact training mean (not private)", None, lambda seed: (exact, None)))
    sources.append(("none (zero)", None, lambda seed: (torch.zeros_like(exact), [])))
    for label, folder in [("paper's synthetic patches", args.paper)] + [(f"synthetic: {Path(f).name}", f)
                                                                       for f in args.samples]:
        centre, stages = synthetic_centre(folder, data, real.label_names[0], model)
        sources.append((label, None, lambda seed, c=centre, m=stages: (c, m)))

    rows, unreachable = [], {}
    for label, sigma, make in sources:
        for seed in range(args.seeds):
            centre, prior = make(seed)
            try:
                privacy, eps_sgd, total = dp_sgd_plan(prior, target=args.epsilon, unit=unit)
            except PrivmedError:  # the centre alone spends the target: no DP-SGD noise can fit
                unreachable[label] = epsilon_for(prior, delta=delta)
                break
            x = {s: (f - centre).float() for s, f in feats.items()}
            val, test = dp_linear(x, labels, data=args.data, seed=seed, privacy=privacy,
                                  groups=real.split("train").patient_ids)
            rows.append({"centre": label, "centre_noise_multiplier": sigma,
                         "centre_distance": round(float((centre - exact).norm()), 2),
                         "classifier_epsilon": round(eps_sgd, 3), "total_epsilon": round(total, 3), "seed": seed,
                         "val_auroc": round(val, 4), "test_auroc": round(test, 4)})
            print(rows[-1], flush=True)
    write(pd.DataFrame(rows), Path(args.results), args, delta, time.perf_counter() - t0, dims=train.shape[1],
          unreachable=unreachable)


def write(table: pd.DataFrame, results: Path, args, delta: float, seconds: float, *, dims: int,
          unreachable: dict[str, float]) -> None:
    """Every run to the csv, the mean over seeds per centre to the markdown table."""
    summary = seed_summary(table, "centre", sort=False, sigma=("centre_noise_multiplier", "first"),
                           dist=("centre_distance", "mean"), eps=("classifier_epsilon", "first"), total=TOTAL_EPSILON)
    lines = ["# The feature centre of `scatter_linear`: its worth and its cost", "",
             f"{SIZE} px, D = {dims} features; every private row composes to epsilon {args.epsilon:g} "
             f"(delta {delta:.2e} = 1/(10 x 578 patients), PRV accountant; unit of privacy the patient, one image of a "
             f"sampled patient per step, centre averaged per patient, secret noise); `inf`: not private. Distance: norm of (centre - exact training "
             f"mean), for scale the features' norm is sqrt(D) = {math.sqrt(dims):.0f}. {args.seeds} seeds; see the "
             "script's docstring. " + run_facts(seconds), "",
             "| centre | noise multiplier | distance to exact mean | DP-SGD epsilon alone | total epsilon | "
             "val AUROC | test AUROC, mean (min-max) |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['centre']} | {'' if pd.isna(r['sigma']) else f'{r.sigma:g}'} | {r.dist:.1f} | {r.eps:.3f} | "
              f"{r.total:g} | {r.val:.3f} | {r.test:.3f} ({r.lo:.3f}-{r.hi:.3f}) |" for _, r in summary.iterrows()]
    lines += [f"| {label} |  |  |  | earlier stages alone {eps:.3f}: {args.epsilon:g} cannot be reached |  |  |"
              for label, eps in unreachable.items()]
    write_results(results, "feature_centre" + ("" if args.epsilon == 2.0 else f"_eps{args.epsilon:g}"), table, lines)


if __name__ == "__main__":
    main()
