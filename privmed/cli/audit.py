"""``privmed audit`` and ``audit-synthetic``: empirical privacy audits of classifiers and generators."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.audit.config import CANARY_KINDS, AuditConfig
from privmed.config import TrainingConfig

from .options import existing_synthetic
from .synth import MEASURED_SAMPLES

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


def add_parsers(sub) -> None:
    """The ``audit`` and ``audit-synthetic`` commands."""
    a = AuditConfig
    au = sub.add_parser("audit", help="membership-inference audit of a trained run: an empirical epsilon lower bound",
                        description=AUDIT_DESCRIPTION)
    au.add_argument("run", help="run directory")
    au.add_argument("--data", help="the data the run was trained on (default: the run's own)")
    au.add_argument("--canaries", type=int, default=a.canaries,
                    help=f"canaries, each in training by a fair coin (default {a.canaries}); 0: train-vs-test "
                         "diagnostic only, no epsilon bound")
    au.add_argument("--canary-kind", default=a.canary_kind, choices=CANARY_KINDS,
                    help="crafted: uniform-noise images with random labels (a patient canary: one pattern seen "
                         "--images-per-canary times, slightly jittered); mislabeled: test images with flipped labels "
                         f"(default {a.canary_kind})")
    au.add_argument("--images-per-canary", type=int, default=a.images_per_canary,
                    help=f"images in one canary (default {a.images_per_canary}, the image unit); more only for runs "
                         "whose unit of privacy is the patient")
    au.add_argument("--shadows", type=int, default=a.shadows,
                    help=f"shadow models for LiRA, the strong and expensive attack (default {a.shadows}: loss attack "
                         "only; e.g. 8)")
    au.add_argument("--confidence", type=float, default=CONFIDENCE,
                    help=f"confidence of the lower bound (default {CONFIDENCE:g})")
    au.add_argument("--workers", type=int, default=a.workers, help="processes training shadow models")
    au.add_argument("--shadow-dir", help="folder shared by audits of runs with the same recipe (reuses shadows; default: "
                         "RUN/audit/shadows)")
    au.add_argument("--seed", type=int, default=a.seed, help="seed of the canaries and their coins")
    au.add_argument("--bootstrap", type=int, default=a.bootstrap, help="bootstrap resamples for the CIs")
    au.set_defaults(handler=cmd_audit)

    aus = sub.add_parser("audit-synthetic", help="did a generator memorise? DCR membership test of synthetic images",
                         description=AUDIT_SYNTHETIC_DESCRIPTION)
    aus.add_argument("synthetic",
                     help="generator folder, or a folder of synthetic images (class folders or a manifest)")
    aus.add_argument("--data", required=True, help="the real data: train split = generator's training set")
    aus.add_argument("--canaries", type=int, default=0,
                     help="held-out images put into a retrained generator's data by fair coins, for an epsilon "
                          "bound (retrains the generator: as slow as `synth train`); default 0: diagnostic only")
    aus.add_argument("--n", type=int, default=MEASURED_SAMPLES,
                     help=f"images to sample from a generator (default {MEASURED_SAMPLES})")
    aus.add_argument("--image-size", type=int, help="default: the generator's (64 for an image folder)")
    aus.add_argument("--confidence", type=float, default=CONFIDENCE,
                     help=f"confidence of the lower bound (default {CONFIDENCE:g})")
    aus.add_argument("--seed", type=int, default=0, help="seed of the canaries and their coins")
    aus.add_argument("--bootstrap", type=int, default=TrainingConfig.bootstrap_resamples,
                     help="bootstrap resamples for the CIs")
    aus.set_defaults(handler=cmd_audit_synthetic)


def cmd_audit(args: argparse.Namespace) -> int:
    """``privmed audit``: membership inference against a trained run."""
    from privmed.atomic import check_folder
    from privmed.audit.membership import audit_run
    from privmed.reporting import audit_lines

    for folder in (args.run, args.shadow_dir):  # the audit is written into the run's folder, shadows beside it
        if folder:
            check_folder(folder)
    config = AuditConfig(shadows=args.shadows, canaries=args.canaries, canary_kind=args.canary_kind,
                         images_per_canary=args.images_per_canary, workers=args.workers, seed=args.seed,
                         alpha=1 - args.confidence, bootstrap=args.bootstrap)
    result = audit_run(Path(args.run), data=args.data, config=config,
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
