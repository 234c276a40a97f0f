"""``privmed synth``: train a class-conditioned generator, sample it, measure its samples; or evolve the phantom
under DP votes of the private data (private evolution)."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.config import ACCOUNTANTS, PRIVACY_UNITS, DataConfig, PrivacyConfig, TrainingConfig

from .options import OPTION_KEYS, add_label_options, add_unit_options, cli_overrides, existing_synthetic

#: ``synth train`` option -> (config section, key); shared names mean what they mean for ``train``
SYNTH_OPTION_KEYS: dict[str, tuple[str, str]] = {
    **{k: OPTION_KEYS[k] for k in ("data", "label_column", "positive_class", "class_names", "image_size", "epsilon",
                                   "delta", "noise_multiplier", "clip_norm", "accountant", "privacy_unit",
                                   "max_images_per_patient", "replayable_noise")},
    "epochs": ("gan", "epochs"), "batch_size": ("gan", "batch_size"), "seed": ("gan", "seed"),
    "device": ("gan", "device"), "lr_d": ("gan", "lr_d"), "lr_g": ("gan", "lr_g"), "width": ("gan", "width"),
    "disc_width": ("gan", "disc_width"),
    "discriminator": ("gan", "discriminator"),
    "minibatch_std": ("gan", "minibatch_std"),
    "diff_augment": ("gan", "diff_augment"),
}
# named here so that ``privmed --help`` does not import torch (privmed.synth.config does); a test keeps
# them equal to the config's: the keys of privmed.synth.gan.DISCRIMINATORS (the first: GanConfig's
# default), GeneratorConfig.out and GanConfig.width
DISCRIMINATOR_CHOICES = ("pixel", "scatter")
GENERATOR_OUT = "gens/latest"
GAN_WIDTH = 32
#: GanConfig's defaults that ``synth train --help`` shows (a test keeps them equal), and EvolutionConfig's seed
GAN_DEFAULTS = {"epochs": 100, "batch_size": 64, "lr_d": 2e-4, "lr_g": 2e-4, "seed": 0, "device": "auto"}
EVOLVE_SEED = 0
#: ``synth evolve --vary``: the keys of privmed.synth.candidates.FROM_PRIOR and EvolutionConfig.vary (a test
#: keeps them equal)
EVOLVE_VARY_CHOICES = ("all", "appearance")
EVOLVE_VARY = "all"
#: ``synth sample --n``
SAMPLES = 3000
#: images sampled from a generator for ``synth evaluate`` and ``audit-synthetic``
MEASURED_SAMPLES = 2000


def add_parsers(sub) -> None:
    """The ``synth`` command and its ``train``, ``evolve``, ``sample`` and ``evaluate`` subcommands."""
    synth = sub.add_parser("synth", help="class-conditioned generator: train (with or without DP), sample, evaluate")
    ssub = synth.add_subparsers(dest="synth_command")
    _add_train(ssub)
    _add_evolve(ssub)
    sa = ssub.add_parser("sample", help="write synthetic images + manifest + privacy record")
    sa.add_argument("generator", help="generator folder (from `synth train`)")
    sa.add_argument("--n", type=int, default=SAMPLES, help=f"images in all, half per class (default {SAMPLES})")
    sa.add_argument("--out", required=True, help="folder to write")
    sa.add_argument("--seed", type=int, default=0, help="seed of the generator's latent draws")
    sa.set_defaults(handler=cmd_sample)
    ev = ssub.add_parser("evaluate", help="train-on-synthetic AUROC, Frechet distance, memorisation, sample grid")
    ev.add_argument("synthetic", help="generator folder, or a folder of synthetic images")
    ev.add_argument("--data", required=True, help="the real data (train/val/test)")
    ev.add_argument("--n", type=int, default=MEASURED_SAMPLES,
                    help=f"images to sample from a generator (default {MEASURED_SAMPLES})")
    ev.add_argument("--image-size", type=int, help="default: the generator's (64 for an image folder)")
    ev.add_argument("--out", help="where to write (default SYNTHETIC/quality)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the sampling and the classifier trained on it")
    ev.add_argument("--bootstrap", type=int, default=TrainingConfig.bootstrap_resamples,
                    help="bootstrap resamples for the CIs")
    ev.set_defaults(handler=cmd_evaluate)
    synth.set_defaults(handler=lambda args: synth.print_help() or 1)


def _add_train(ssub) -> None:
    g, p = GAN_DEFAULTS, PrivacyConfig
    tr = ssub.add_parser("train", help="train a generator on the training split")
    tr.add_argument("--config", help="YAML file with data/privacy/gan sections (default: none, the options alone)")
    tr.add_argument("--out", help=f"generator folder (default {GENERATOR_OUT})")
    tr.add_argument("--data", help="data set (default: built-in phantom)")
    add_label_options(tr, single=True)
    tr.add_argument("--image-size", type=int, help=f"{DataConfig.image_size} (default) or 128")
    tr.add_argument("--epsilon", type=float,
                    help="target epsilon of the discriminator's DP-SGD; omit = non-private (default inf)")
    tr.add_argument("--delta", type=float, help="default 1/(10 N) for N patients (or images); must be < 1/N")
    tr.add_argument("--noise-multiplier", type=float,
                    help="fixed DP-SGD noise instead of a target epsilon (default: calibrated to --epsilon)")
    tr.add_argument("--clip-norm", type=float, help=f"per-sample gradient clipping norm (default {p.clip_norm})")
    tr.add_argument("--accountant", choices=ACCOUNTANTS, help=f"default {p.accountant}")
    add_unit_options(tr)
    tr.add_argument("--epochs", type=int, help=f"default {g['epochs']}")
    tr.add_argument("--batch-size", type=int,
                    help=f"expected (Poisson) real images per discriminator step (default {g['batch_size']})")
    tr.add_argument("--lr-d", type=float, help=f"discriminator learning rate (default {g['lr_d']:g})")
    tr.add_argument("--lr-g", type=float, help=f"generator learning rate (default {g['lr_g']:g})")
    tr.add_argument("--width", type=int, help=f"base channel width of the generator (default {GAN_WIDTH})")
    tr.add_argument("--disc-width", type=int, help="base channel width of the discriminator (default: --width); "
                                                   "DP-SGD's noise grows with its size, so keep it small when private")
    tr.add_argument("--discriminator", choices=DISCRIMINATOR_CHOICES,
                    help="pixel: MCGAN-like conv net (default); scatter: small head on frozen scattering features")
    tr.add_argument("--minibatch-std", action="store_true", default=None,
                    help="non-private pixel discriminator only: give it each batch's spread (against per-class "
                         "mode collapse)")
    tr.add_argument("--diff-augment", action="store_true", default=None,
                    help="the discriminator sees real and generated images through the same random brightness, "
                         "contrast, shift and cutout (DiffAugment; with or without DP)")
    tr.add_argument("--seed", type=int, help=f"default {g['seed']}")
    tr.add_argument("--device", help=f"auto, cpu, cuda, cuda:1, ... (default {g['device']})")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted generator in --out")
    tr.set_defaults(handler=cmd_train)


#: ``synth evolve`` option -> (config section, key)
EVOLVE_OPTION_KEYS: dict[str, tuple[str, str]] = {
    **{k: OPTION_KEYS[k] for k in ("data", "label_column", "positive_class", "class_names", "image_size", "epsilon",
                                   "delta", "noise_multiplier", "accountant", "privacy_unit", "replayable_noise")},
    **{k: ("evolve", k) for k in ("rounds", "population", "n", "threshold", "step", "fresh", "vary", "seed")},
}


def _add_evolve(ssub) -> None:
    ev = ssub.add_parser("evolve", help="private evolution of the phantom simulator: DP votes of the private "
                                        "patients pick and refine phantom parameters; writes images like `sample`")
    ev.add_argument("--data", required=True, help="the private data (its train split votes)")
    add_label_options(ev, single=True)
    ev.add_argument("--image-size", type=int, help=f"{DataConfig.image_size} (default) or 128")
    ev.add_argument("--epsilon", type=float,
                    help="target epsilon of all rounds' vote histograms together (default inf: not private)")
    ev.add_argument("--delta", type=float, help="default 1/(10 N) for N patients (or images)")
    ev.add_argument("--noise-multiplier", type=float,
                    help="the votes' Gaussian noise instead of --epsilon (default: calibrated to --epsilon)")
    ev.add_argument("--accountant", choices=ACCOUNTANTS, help=f"default {PrivacyConfig.accountant}")
    ev.add_argument("--privacy-unit", choices=PRIVACY_UNITS,
                    help="unit of privacy: patient (one vote per patient, split over their images; the default "
                         "when the data has patient ids) or image")
    ev.add_argument("--replayable-noise", action="store_true", default=None,
                    help="derive the vote noise from --seed (debugging): the result is then NOT private")
    ev.add_argument("--rounds", type=int, help="vote histograms released (default 4)")
    ev.add_argument("--population", type=int, help="phantom candidates per class each round (default 32)")
    ev.add_argument("--n", type=int, help="images written, half per class (default 2000)")
    ev.add_argument("--threshold", type=float, help="votes kept above this many noise std (default 1)")
    ev.add_argument("--step", type=float, help="first mutation step, share of each parameter's prior range "
                                               "(default 0.15; shrinks each round)")
    ev.add_argument("--fresh", type=float, help="share of each new population drawn afresh (default 0.1)")
    ev.add_argument("--vary", choices=EVOLVE_VARY_CHOICES,
                    help=f"what evolves: all parameters, or the appearance ones only (lesion size and contrast, "
                         f"density, texture, noise), each candidate's lesion shape, margin and spiculation drawn "
                         f"fresh from its class's prior (default {EVOLVE_VARY})")
    ev.add_argument("--seed", type=int,
                    help=f"the candidates' seed (public; the vote noise never comes from it; default {EVOLVE_SEED})")
    ev.add_argument("--out", required=True, help="new or empty folder to write")
    ev.set_defaults(handler=cmd_evolve)


def cmd_evolve(args: argparse.Namespace) -> int:
    """``privmed synth evolve``: images of phantom parameters evolved under DP votes of the private data."""
    from privmed import rundir
    from privmed.synth.config import evolve_config_from_dict
    from privmed.synth.evolve import evolve

    config = evolve_config_from_dict(cli_overrides(args, EVOLVE_OPTION_KEYS))
    rundir.check_writable(config.out)
    out = evolve(config)
    print(f"{config.evolve.n // 2 * 2} evolved phantom images written to {out} (manifest.csv, privacy.json, "
          f"population.npz, history.csv, preview.png)")
    print(f"  privacy of the evolution: {rundir.read_record(out).stated_summary}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``privmed synth train``: the config file, overridden by the options given."""
    from privmed import rundir
    from privmed.config import load_yaml, merge
    from privmed.synth.config import generator_config_from_dict
    from privmed.synth.training import GENERATOR_FILE, train_generator
    from privmed.training.preflight import check_device

    overrides = cli_overrides(args, SYNTH_OPTION_KEYS)
    config = generator_config_from_dict(merge(load_yaml(args.config) if args.config else {}, overrides))
    rundir.check_writable(config.out)
    check_device(config.gan.device)
    out = train_generator(config, resume=args.resume)

    print(f"generator written to {out / GENERATOR_FILE}; sample grids in {out / 'grids'}")
    print(f"  privacy: {rundir.read_record(out).stated_summary}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``privmed synth sample``: images, manifest and the generator's privacy record."""
    from privmed import rundir
    from privmed.synth.sample import sample

    rundir.check_writable(args.out)
    out = sample(args.generator, n=args.n, out=args.out, seed=args.seed)
    print(f"{args.n // 2 * 2} synthetic images written to {out} (manifest.csv, privacy.json)")
    print(f"  privacy of the generator: {rundir.read_record(out).stated_summary}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``privmed synth evaluate``: synthetic images measured against the real data."""
    from privmed import rundir
    from privmed.config import DataConfig
    from privmed.data.sources import load_dataset
    from privmed.synth.quality import evaluate_synthetic
    from privmed.synth.sample import synthetic_images

    target = existing_synthetic(args.synthetic)
    out = Path(args.out) if args.out else target / "quality"
    rundir.check_writable(out)
    images, labels, names, size = synthetic_images(target, n=args.n, image_size=args.image_size, seed=args.seed)
    real = load_dataset(DataConfig(path=args.data, image_size=size))
    quality = evaluate_synthetic(synthetic=images, labels=labels, real=real, out=out, class_names=names,
                                 seed=args.seed, n_resamples=args.bootstrap)
    print(f"{len(images)} synthetic images from {target} against {real.name} ({size} px):")
    for line in quality.lines():
        print(f"  {line}")
    print(f"written to {out} (quality.json, samples.png, closest_pairs.png)")
    return 0
