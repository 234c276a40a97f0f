"""Issue 3's bar at 10 seeds: a DP generator, pretraining, DP fine-tuning at a composed eps 2 vs DP-SGD at eps 2.

``cbis_synthetic.py`` measures every strategy at 3 seeds; its key comparison (must-show 1
of issue 3) is measured here at more seeds, with the same recipe and ``run_one``:

* ``dp_sgd_real``: DP-SGD on CBIS-DDSM's real training split at epsilon 2 (feature centre
  released privately, inside the 2);
* ``pretrain_finetune``: 3,000 images (seed 0) of an epsilon-1 DP generator, pretraining,
  then DP fine-tuning at the classifier noise that makes the generator and the classifier
  compose to exactly 2 (``privacy.total_epsilon``), head re-initialised (``cbis_synthetic``'s
  choice on val, seed 0).

The generator is ``cbis_synthetic``'s chosen ``privmed_dp_eps1`` candidate, ``dp1_da`` of
``benchmarks/train_generators.sh GENS`` (bit-reproducible: the same weights on every run).

    python benchmarks/dp_generator_bar.py --generator GENS/dp1_da [--seeds 10]

Writes ``benchmarks/results/dp_generator_bar.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import (ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, run_facts, run_one, samples_once, seed_summary,
                    TOTAL_TWO, write_results)
from privmed import read_record



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--generator", required=True, help="an epsilon-1 DP generator folder (GENS/dp1_da)")
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "dp_generator_bar"))
    args = parse_benchmark_args(parser, seeds=10)
    t0 = time.perf_counter()
    runs = Path(args.runs)
    generator = Path(args.generator)
    samples = samples_once(generator, runs / f"samples_{generator.name}")
    cells = [{"strategy": "dp_sgd_real", "generator": "none", "folder": None, "epsilon": 2.0},
             {"strategy": "pretrain_finetune", "generator": "privmed_dp_eps1", "folder": samples,
              "total_epsilon": TOTAL_TWO,
              "reinit_head": True}]
    rows = []
    for cell in cells:
        for seed in range(args.seeds):
            rows.append({k: v for k, v in run_one(args.data, runs, seed=seed, **cell).items() if k != "run"})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    generator_eps = read_record(samples).epsilon
    write_results(Path(args.results), "dp_generator_bar", table,
                  markdown(table, Path(args.generator).name, generator_eps, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, generator: str, generator_eps: float, seconds: float) -> list[str]:
    """Mean (min-max) per strategy, and the difference to beat."""
    summary = seed_summary(table, ["strategy", "generator"], sort=False, epsilon=("epsilon", "first"),
                           total=TOTAL_EPSILON)
    bar = summary.loc[summary["strategy"] == "dp_sgd_real", "test"].iloc[0]
    lines = ["# Issue 3's bar: a DP generator, pretraining and DP fine-tuning at a composed epsilon of 2", "",
             f"CBIS-DDSM, `scatter_linear` at 64 px, `cbis_synthetic.py`'s recipe and checkpoint choice (best val "
             f"epoch); generator `{generator}` (epsilon {generator_eps:.3g}, 3,000 images, seed 0), head "
             "re-initialised after pretraining; `epsilon` is the classifier's DP-SGD, `total epsilon` the run's "
             "ledger (PRV, unit of privacy the patient, delta 1/(10 x patients), secret noise). Test AUROC, mean over seeds (min-max). " + run_facts(seconds)
             + " (runs already under --runs are reused).", "",
             "| strategy | generator | epsilon | total epsilon | val AUROC | test AUROC | vs dp_sgd_real | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.strategy} | {r.generator} | {r.epsilon} | {r.total} | {r.val:.3f} | {r.test:.3f} "
              f"({r.lo:.3f}-{r.hi:.3f}) | {r.test - bar:+.3f} | {r.seeds} |" for r in summary.itertuples()]
    return lines


if __name__ == "__main__":
    main()
