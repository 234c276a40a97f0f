"""``privmed audit`` and ``audit-synthetic``: empirical privacy audits of classifiers and generators."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.audit.config import CANARY_KINDS, AuditConfig

from .options import BOOTSTRAP, Option, add_command, existing_synthetic, overrides
from .synth import MEASURED_OPTIONS, SYNTHETIC

AUDIT_DESCRIPTION = ("Default design (one-run, Steinke, Nasr & Jagielski 2023): --canaries canaries, each put into "
                     "training by a fair coin, one target retrained by the run's recipe; the epsilon lower bound "
                     "(at --confidence) comes from the canaries alone, with a Gaussian-DP estimate beside it. Also "
                     "reported, as a diagnostic with NO epsilon bound: the attack on the training split vs the test "
                     "split, confounded by split differences (the only output with --canaries 0).")
AUDIT_SYNTHETIC_DESCRIPTION = (
    "With --canaries M (a generator folder only): M held-out test images, each put into the generator's training "
    "data by a fair coin, one generator retrained by the same recipe, and a one-run epsilon lower bound from the "
    "canaries' distance to its samples. Without: the training split against the test split, a diagnostic "
    "confounded by split differences, with NO epsilon bound.")
#: ``--confidence`` of the lower bounds
CONFIDENCE = 1 - AuditConfig.alpha


def _alpha(confidence: float) -> float:
    """``--confidence`` -> ``AuditConfig.alpha``."""
    return 1 - confidence


A = AuditConfig

#: every option of ``privmed audit``; one with a key sets that field of :class:`AuditConfig` (not given: the
#: config's default, which its help shows), so a new audit setting is one entry here
AUDIT_OPTIONS: list[Option] = [
    Option("run", help="run directory"),
    Option("--data", help="the data the run was trained on (default: the run's own)"),
    Option("--canaries", "canaries", f"canaries, each in training by a fair coin (default {A.canaries}); 0: "
           "train-vs-test diagnostic only, no epsilon bound", int),
    Option("--canary-kind", "canary_kind", "crafted: uniform-noise images with random labels (a patient canary: one "
           "pattern seen --images-per-canary times, slightly jittered); mislabeled: test images with flipped labels "
           f"(default {A.canary_kind})", choices=CANARY_KINDS),
    Option("--images-per-canary", "images_per_canary", f"images in one canary (default {A.images_per_canary}, the "
           "image unit); more only for runs whose unit of privacy is the patient", int),
    Option("--shadows", "shadows", f"shadow models for LiRA, the strong and expensive attack (default {A.shadows}: "
           "loss attack only; e.g. 8)", int),
    Option("--confidence", "alpha", f"confidence of the lower bound (default {CONFIDENCE:g})", float,
           to_config=_alpha),
    Option("--workers", "workers", f"processes training shadow models (default {A.workers})", int),
    Option("--shadow-dir", help="folder shared by audits of runs with the same recipe (reuses shadows; default: "
           "RUN/audit/shadows)"),
    Option("--seed", "seed", f"seed of the canaries and their coins (default {A.seed})", int),
    Option("--bootstrap", "bootstrap", f"bootstrap resamples for the CIs (default {A.bootstrap})", int),
]

#: every option of ``privmed audit-synthetic`` (it calls the audit functions with them itself)
AUDIT_SYNTHETIC_OPTIONS: list[Option] = [
    SYNTHETIC,
    Option("--data", help="the real data: train split = generator's training set", required=True),
    Option("--canaries", help="held-out images put into a retrained generator's data by fair coins, for an epsilon "
           "bound (retrains the generator: as slow as `synth train`); default 0: diagnostic only", type=int,
           default=0),
    *MEASURED_OPTIONS,
    Option("--confidence", help=f"confidence of the lower bound (default {CONFIDENCE:g})", type=float,
           default=CONFIDENCE),
    Option("--seed", help="seed of the canaries and their coins", type=int, default=A.seed),
    BOOTSTRAP,
]


def add_parsers(sub) -> None:
    """The ``audit`` and ``audit-synthetic`` commands."""
    add_command(sub, "audit", AUDIT_OPTIONS, cmd_audit, description=AUDIT_DESCRIPTION,
                help="membership-inference audit of a trained run: an empirical epsilon lower bound")
    add_command(sub, "audit-synthetic", AUDIT_SYNTHETIC_OPTIONS, cmd_audit_synthetic,
                description=AUDIT_SYNTHETIC_DESCRIPTION,
                help="did a generator memorise? DCR membership test of synthetic images")


def audit_config(args: argparse.Namespace) -> AuditConfig:
    """The audit's settings: the :data:`AUDIT_OPTIONS` given, the config's defaults for the rest, validated."""
    return AuditConfig(**overrides(args, AUDIT_OPTIONS))


def cmd_audit(args: argparse.Namespace) -> int:
    """``privmed audit``: membership inference against a trained run."""
    from privmed.atomic import check_folder
    from privmed.audit.membership import audit_run
    from privmed.reporting import audit_lines

    for folder in (args.run, args.shadow_dir):  # the audit is written into the run's folder, shadows beside it
        if folder:
            check_folder(folder)
    result = audit_run(Path(args.run), data=args.data, config=audit_config(args),
                       shadow_dir=Path(args.shadow_dir) if args.shadow_dir else None)
    print("\n".join(audit_lines(result)))
    return 0


def cmd_audit_synthetic(args: argparse.Namespace) -> int:
    """``privmed audit-synthetic``: the one-run canary audit of a generator, or the DCR diagnostic."""
    existing_synthetic(args.synthetic)
    if args.canaries:
        _audit_generator(args)
    else:
        _dcr_diagnostic(args)
    return 0


def _audit_generator(args: argparse.Namespace) -> None:
    from privmed.audit.generator import audit_generator

    result = audit_generator(Path(args.synthetic), data=args.data, canaries=args.canaries, n=args.n,
                             seed=args.seed, alpha=1 - args.confidence, n_resamples=args.bootstrap)
    a = result["attacks"][0]
    print(f"one-run DCR audit of {result['generator']}: {result['canaries']} held-out canaries, each in the "
          f"retrained generator's data by a fair coin ({a['n_members']} in, {a['n_non_members']} out); "
          f"{result['synthetic_images']} samples of {result['retrained']}")
    print(f"  AUC={a['auc']:.3f} [{a['auc_ci'][0]:.3f}, {a['auc_ci'][1]:.3f}]  eps lower bound="
          f"{a['eps_lower_bound']:.3f} ({a['confidence']:.1%}, one-run)  GDP estimate eps~{a['gdp_epsilon']:.2f}"
          f"  (claimed epsilon={result['claimed_epsilon']})")


def _dcr_diagnostic(args: argparse.Namespace) -> None:
    from privmed.audit.synthetic import dcr_membership
    from privmed.config import DataConfig
    from privmed.data.sources import load_dataset
    from privmed.privacy.plan import delta_for
    from privmed.privacy.units import resolve_unit
    from privmed.synth.sample import synthetic_images

    synthetic, _, _, size = synthetic_images(args.synthetic, n=args.n, image_size=args.image_size)
    real = load_dataset(DataConfig(path=args.data, image_size=size))
    members, non_members = real.split("train"), real.split("test")
    unit = resolve_unit(None, members.patient_ids, max_images_per_patient=1, n=len(members))
    summary, medians = dcr_membership(synthetic=synthetic, members=members.images,
                                      non_members=non_members.images, delta=delta_for(unit, None, check=False),
                                      n_resamples=args.bootstrap)
    print(f"DCR membership test: {len(synthetic)} synthetic images vs {len(members)} training (members) and "
          f"{len(non_members)} test (non-members) images of {real.name}, {size} px")
    print(f"  median distance to closest synthetic image: members {medians['median_dcr_members']:.2f}, "
          f"non-members {medians['median_dcr_non_members']:.2f}")
    print(f"  AUC={summary.auc:.3f} [{summary.auc_ci[0]:.3f}, {summary.auc_ci[1]:.3f}]  "
          f"TPR@1%FPR={summary.tpr_at_1pct_fpr:.3f}  no eps bound: training split vs test split is confounded "
          f"by split differences (pass --canaries M with a generator folder for a one-run bound)")
