"""What synthetic images could buy a DP linear model on scattering features: a projection learned on them.

A question for the next step of issue 3, not a privmed feature yet. ``scatter_linear``
at 64 px has D = 1,296 features; DP-SGD's noise is spread over all of them. Synthetic
images cost no further privacy once made, so the feature centre and a whitened PCA
projection to k dimensions can be fitted on them for free, and DP-SGD then trains a
linear head on k projected real features. How much that helps depends on whether the
generator got the real features' covariance right, which this measures per source:

* ``none``: the full D features, centred on the synthetic mean (= privmed's pretrain
  route with a re-initialised head);
* ``paper`` (not private), ``privmed_dp_eps1``, ``privmed_dp_eps10`` (``cbis_synthetic.py``'s
  samples) and ``real_train`` (the private training split itself: an upper bound that is
  NOT private, since the projection then depends on private data without DP).

DP-SGD by privmed's recipe (``train_in_memory``: Opacus, PRV accountant, Poisson batches
of expected size 128, clip 1, SGD lr 0.1 momentum 0.9, 15 epochs, delta 1/(10 x patients), the patient
as the unit of privacy (patient-level Poisson batches, one image of a sampled patient), no
feature centre release: the centre is the synthetic one), classifier epsilon 2 ALONE: the
generator's epsilon is not composed here (see ``cbis_synthetic.md`` for composed totals).
Checkpoint: the epoch with the best val AUROC; k in {32, 128} reported side by side
(no choice made). Test AUROC, mean over 3 seeds.

    python benchmarks/synthetic_projection.py [--runs benchmarks/runs/cbis_synthetic]

Writes ``benchmarks/results/synthetic_projection.{csv,md}``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from common import (EPSILON, ROOT, SHARED, SIZE, parse_benchmark_args, patient_delta, run_facts, seed_summary,
                    write_results)
from components import dp_linear, features, split_features
from privmed import synthetic_images

DIMS = (32, 128)






def whitened_pca(source: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and (D, k) projection onto the top-k principal axes, each scaled to unit variance / sqrt(k)."""
    center = source.mean(0)
    _, s, vt = torch.linalg.svd(source - center, full_matrices=False)
    scale = s[:k] / math.sqrt(len(source) - 1)
    return center, vt[:k].T / scale / math.sqrt(k)










def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--paper", default=str(SHARED / "mcgan-synthetic"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "cbis_synthetic"),
                        help="cbis_synthetic.py's run folder (its samples/)")
    args = parse_benchmark_args(parser)
    t0 = time.perf_counter()
    model, real, feats, labels = split_features(args.data)
    patients = real.split("train").patient_ids
    samples = Path(args.runs) / "samples"
    quality = pd.read_csv(Path(args.results) / "synthetic_quality.csv")  # cbis_synthetic's chosen candidates
    chosen = dict(quality.loc[quality["chosen"], ["generator", "folder"]].itertuples(index=False))
    sources = {"paper": Path(args.paper), "privmed_dp_eps1": samples / chosen["privmed_dp_eps1"],
               "privmed_dp_eps10": samples / chosen["privmed_dp_eps10"]}
    public = {name: features(model, synthetic_images(path, n=3000, image_size=SIZE)[0])
              for name, path in sources.items()}
    public["real_train"] = feats["train"]
    delta = patient_delta(args.data)
    rows = []
    for source, k in [("privmed_dp_eps1", None)] + [(s, k) for s in public for k in DIMS]:
        if k is None:
            center, proj = public[source].mean(0), torch.eye(feats["train"].shape[1], dtype=torch.float64)
        else:
            center, proj = whitened_pca(public[source], k)
        x = {s: ((f - center) @ proj).float() for s, f in feats.items()}
        for seed in range(args.seeds):
            val, test = dp_linear(x, labels, data=args.data, seed=seed, groups=patients)
            rows.append({"projection_from": source if k else "none (centre from privmed_dp_eps1)",
                         "dims": k or feats["train"].shape[1], "seed": seed, "val_auroc": round(val, 4),
                         "test_auroc": round(test, 4)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = seed_summary(table, ["projection_from", "dims"], sort=False)
    lines = ["# A projection fitted on synthetic images, then DP-SGD on real scattering features", "",
             f"`scatter_linear` features at {SIZE} px; the DP generators are `cbis_synthetic.py`'s chosen candidates "
             f"({', '.join(f'{g}: `{chosen[g]}`' for g in ('privmed_dp_eps1', 'privmed_dp_eps10'))}); DP-SGD at classifier epsilon {EPSILON:g} alone (generator "
             f"epsilon not composed), unit of privacy the patient (one image of a sampled patient per step, secret "
             f"noise), delta {delta:.2e} = 1/(10 x patients); {args.seeds} seeds; see the script's docstring. "
             + run_facts(time.perf_counter() - t0), "",
             "| projection fitted on | dims | val AUROC | test AUROC, mean (min-max) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['projection_from']} | {r['dims']} | {r['val']:.3f} | {r['test']:.3f} ({r['lo']:.3f}-"
              f"{r['hi']:.3f}) |" for _, r in summary.iterrows()]
    write_results(Path(args.results), "synthetic_projection", table, lines)


if __name__ == "__main__":
    main()
