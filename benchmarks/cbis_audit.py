"""Membership-inference audit of CBIS-DDSM models at epsilon 1, 4, 8 and infinity: one-run audit with canaries.

Trains one ``privmed train`` run per epsilon (same recipe as the DP-SGD benchmark's epsilon=1
choice), then runs ``privmed audit`` on each: M crafted canaries (default 1,000), each put
into the training of a retrained target by a fair coin, the loss attack and LiRA with 8
shadow models, and the one-run epsilon lower bound (Steinke, Nasr & Jagielski 2023) at 95%
confidence. The train-vs-test attack is kept as a diagnostic: its rows have an AUC and no
bound (membership there is not randomised). Writes ``cbis_audit.csv`` and ``.md`` into
``--results``.

    python benchmarks/cbis_audit.py [--data ../shared/data/cbis-ddsm-masses]
    python benchmarks/cbis_audit.py --epsilons 1 --epochs 2 --canaries 200 --shadows 0 \\
        --runs /tmp/smoke/runs --results /tmp/smoke/results          # a smoke test (minutes)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from common import ROOT
from privmed import AuditConfig, audit_run, config_from_dict, largest_showable_bound, read_metrics, run_finished, train

EPSILONS = (1.0, 4.0, 8.0, math.inf)
CANARIES = 1000
SHADOWS = 8
#: the delta a non-private target's audit tests (it claims none)
NON_PRIVATE_DELTA = 1e-6
#: the plain second-order scattering front end (``dihedral: false, max_order: 2``, raw grey levels, standardised) and the centre released from the
#: training data: with today's defaults (dihedral, first order, phantom centre) a non-private target memorises few
#: canaries in 15 epochs, so it would not show what this design can find (docs/audit.md has both)
PRIVACY = {"center": "private"}
RECIPE = {"data": {"image_size": 128, "class_names": ["benign", "malignant"]},
          "model": {"name": "scatter_linear", "args": {"dihedral": False, "max_order": 2, "input_norm": "none",
                                                         "standardise": True}},
          "training": {"lr": 0.1, "epochs": 15, "batch_size": 128, "physical_batch_size": 256, "seed": 0}}
COLUMNS = ["epsilon", "unit", "design", "canaries", "attack", "attack_auc", "tpr_at_0.1pct_fpr", "eps_lower_bound",
           "confidence"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "cbis_audit"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--epsilons", type=float, nargs="+", default=list(EPSILONS))
    parser.add_argument("--canaries", type=int, default=CANARIES)
    parser.add_argument("--shadows", type=int, default=SHADOWS)
    parser.add_argument("--epochs", type=int, default=RECIPE["training"]["epochs"])
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    runs, results = Path(args.runs), Path(args.results)
    recipe = {**RECIPE, "training": {**RECIPE["training"], "epochs": args.epochs}}
    t0 = time.perf_counter()
    rows, detail = [], []
    for eps in args.epsilons:
        run = runs / f"eps{eps:g}_epochs{args.epochs}"
        if not run_finished(run):
            # a non-private run claims no delta: its audit tests (epsilon, 1e-6) claims, since the one-run
            # p-value carries 2 m delta, which at 1/(10 N) would hide any leak behind 2 m / (10 N)
            privacy = {**({"epsilon": eps} if math.isfinite(eps) else {"delta": NON_PRIVATE_DELTA}), **PRIVACY}
            cfg = {**recipe, "data": {**recipe["data"], "path": args.data}, "privacy": privacy, "out": str(run)}
            train(config_from_dict(cfg))
        test_auroc = read_metrics(run)["splits"]["test"]["auroc"]["value"]
        result = audit_run(run, config=AuditConfig(shadows=args.shadows, canaries=args.canaries),
                           shadow_dir=runs / "shadows")
        for a in result["attacks"]:
            row = {"epsilon": "inf" if math.isinf(eps) else f"{eps:g}", "unit": result["unit"], "design": a["design"],
                   "canaries": args.canaries if a["randomised"] else 0, "attack": a["attack"],
                   "attack_auc": a["auc"], "tpr_at_0.1pct_fpr": a["tpr_at_01pct_fpr"],
                   "eps_lower_bound": a["eps_lower_bound"], "confidence": a["confidence"] if a["randomised"] else None}
            rows.append(row)
            detail.append({**row, "description": a["design_description"], "auc_ci": a["auc_ci"], "claimed_epsilon": result["claimed_epsilon"],
                           "delta": result["delta"], "max_showable": largest_showable_bound(
                               canaries=args.canaries, delta=float(result["delta"])) if args.canaries else None,
                           "guesses": a["guesses"], "correct": a["correct_guesses"], "gdp_epsilon": a["gdp_epsilon"],
                           "test_auroc": test_auroc})
            print(row, flush=True)
    minutes = (time.perf_counter() - t0) / 60
    results.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows)[COLUMNS].to_csv(results / "cbis_audit.csv", index=False)
    (results / "cbis_audit.md").write_text(_markdown(detail, args, minutes))
    print((results / "cbis_audit.md").read_text())


def _markdown(detail: list[dict], args: argparse.Namespace, minutes: float) -> str:
    described = {d["design"]: d["description"] for d in detail}  # each design's words, as the audit gives them
    lines = [
        "# Membership-inference audit on CBIS-DDSM",
        "",
        f"Targets: `scatter_linear` at 128 px, lr 0.1, {args.epochs} epochs, batch 128 (the DP-SGD benchmark's "
        f"recipe), at the patient unit of privacy (CBIS-DDSM's default: 578 training patients, one image of a "
        f"sampled patient per step). Design `one-run`: {described.get('one-run', 'not run')}. {args.canaries} crafted canaries "
        f"(uniform-noise images with random labels), each a patient of its own, each added to the training "
        f"patients by its own fair coin; one target retrained by the run's recipe (its own accountant gives the "
        f"claimed ε at the run's δ; the non-private target claims no δ and is audited at δ = {NON_PRIVATE_DELTA:g}); "
        f"only the canaries are scored. "
        + (f"LiRA uses {args.shadows} shadow models trained by the same recipe on random halves of the population. "
           if args.shadows else "Loss attack only (no shadow models). ")
        + f"The ε lower bound is the one-run bound at 95% confidence (guesses on "
        f"the most and least confident canaries, the number of guesses from a fixed grid, Bonferroni). The "
        f"Gaussian-DP ε is an estimate (μ = √2 Φ⁻¹(AUC)), not a bound. Design `train-vs-test`: "
        f"{described.get('train-vs-test', 'not run')}. Wall time {minutes:.1f} min on {torch.get_num_threads()} threads.",
        "",
        "| claimed ε | δ | design | attack | AUC [95% CI] | TPR@0.1%FPR | right / guesses | ε lower bound | "
        "largest showable | claimed − bound | GDP ε estimate | model test AUROC |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in detail:
        bounded = d["eps_lower_bound"] is not None
        claimed = math.inf if d["claimed_epsilon"] == "inf" else float(d["claimed_epsilon"])
        gap = f"{claimed - d['eps_lower_bound']:.2f}" if bounded else "—"
        lines.append(
            f"| {d['epsilon']} | {float(d['delta']):.2g} | {d['design']} | {d['attack']} | {d['attack_auc']:.3f} "
            f"[{d['auc_ci'][0]:.3f}, {d['auc_ci'][1]:.3f}] | {d['tpr_at_0.1pct_fpr']:.3f} | "
            + (f"{_guesses(d)} | {d['eps_lower_bound']:.3f} | {d['max_showable']:.2f} | {gap} | {d['gdp_epsilon']:.2f}"
               if bounded else "— | no bound (confounded) | — | — | —")
            + f" | {d['test_auroc']:.3f} |")
    lines += ["", "## Why the bounds sit far below the claimed ε", "",
              "- The accountant's ε is a worst case: over every pair of neighbouring data sets, for an adversary who "
              "sees every noisy gradient step. The audit sees only the final model, through black-box scores of "
              "crafted canaries, once.",
              "- One training run caps what can be shown: the column 'largest showable' is the bound of a perfect "
              "attack (every guess right) with these canaries at that δ; δ enters every p-value multiplied by 2m, "
              "which is why the non-private target, which claims no δ, is audited at a small one.",
              "- The non-private target's bound is the must-show of this design: canaries it memorised are found "
              "(the loss attack's best guesses are nearly all right), so its one-run bound exceeds 1 while no "
              "private run's bound exceeds its claimed ε.",
              "- For Gaussian noise the one-run bound reaches about half of ε even with an ideal attack "
              "(Steinke et al. 2023; privmed's tests: one run of 20,000 canaries on a Gaussian mechanism, "
              "ε = 2.0, gives about 1.0).",
              "- The loss attack is weak; LiRA calibrates each canary's difficulty but with few shadows only "
              "partly. A bound of 0 means 'nothing shown', not 'private'.",
              ""]
    return "\n".join(lines)


def _guesses(d: dict) -> str:
    return f"{d['correct']} / {d['guesses']}" if d["guesses"] else "none gave a bound"


if __name__ == "__main__":
    main()
