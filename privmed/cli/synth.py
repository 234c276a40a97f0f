"""``privmed synth``: train a class-conditioned generator, sample it, measure its samples; or evolve the phantom
under DP votes of the private data (private evolution)."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.config import DataConfig

from .options import BOOTSTRAP, Option, add_command, existing_synthetic, label_options, overrides, privacy_options

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
    add_command(ssub, "train", SYNTH_TRAIN_OPTIONS, cmd_train, help="train a generator on the training split")
    add_command(ssub, "evolve", EVOLVE_OPTIONS, cmd_evolve, help="private evolution of the phantom simulator: DP votes "
                "of the private patients pick and refine phantom parameters; writes images like `sample`")
    add_command(ssub, "sample", SAMPLE_OPTIONS, cmd_sample, help="write synthetic images + manifest + privacy record")
    add_command(ssub, "evaluate", EVALUATE_OPTIONS, cmd_evaluate,
                help="train-on-synthetic AUROC, Frechet distance, memorisation, sample grid")
    synth.set_defaults(handler=lambda args: synth.print_help() or 1)


G = GAN_DEFAULTS

#: every option of ``synth train``, with the key it sets; shared names mean what they mean for ``train``
SYNTH_TRAIN_OPTIONS: list[Option] = [
    Option("--config", help="YAML file with data/privacy/gan sections (default: none, the options alone)"),
    Option("--out", "out", f"generator folder (default {GENERATOR_OUT})"),
    Option("--data", "data.path", "data set (default: built-in phantom)"),
    *label_options(single=True),
    Option("--image-size", "data.image_size", f"{DataConfig.image_size} (default) or 128", int),
    *privacy_options(epsilon_of="the discriminator's DP-SGD"),
    Option("--epochs", "gan.epochs", f"default {G['epochs']}", int),
    Option("--batch-size", "gan.batch_size", "expected (Poisson) real images per discriminator step (default "
           f"{G['batch_size']})", int),
    Option("--lr-d", "gan.lr_d", f"discriminator learning rate (default {G['lr_d']:g})", float),
    Option("--lr-g", "gan.lr_g", f"generator learning rate (default {G['lr_g']:g})", float),
    Option("--width", "gan.width", f"base channel width of the generator (default {GAN_WIDTH})", int),
    Option("--disc-width", "gan.disc_width", "base channel width of the discriminator (default: --width); DP-SGD's "
           "noise grows with its size, so keep it small when private", int),
    Option("--discriminator", "gan.discriminator", "pixel: MCGAN-like conv net (default); scatter: small head on "
           "frozen scattering features", choices=DISCRIMINATOR_CHOICES),
    Option("--minibatch-std", "gan.minibatch_std", "non-private pixel discriminator only: give it each batch's "
           "spread (against per-class mode collapse)", action="store_true"),
    Option("--diff-augment", "gan.diff_augment", "the discriminator sees real and generated images through the same "
           "random brightness, contrast, shift and cutout (DiffAugment; with or without DP)", action="store_true"),
    Option("--seed", "gan.seed", f"default {G['seed']}", int),
    Option("--device", "gan.device", f"auto, cpu, cuda, cuda:1, ... (default {G['device']})"),
    Option("--resume", help="continue an interrupted generator in --out", action="store_true", default=False),
]

#: every option of ``synth evolve``, with the key it sets
EVOLVE_OPTIONS: list[Option] = [
    Option("--data", "data.path", "the private data (its train split votes)", required=True),
    *label_options(single=True),
    Option("--image-size", "data.image_size", f"{DataConfig.image_size} (default) or 128", int),
    *privacy_options(epsilon_of="all rounds' vote histograms together", votes=True),
    Option("--rounds", "evolve.rounds", "vote histograms released (default 4)", int),
    Option("--population", "evolve.population", "phantom candidates per class each round (default 32)", int),
    Option("--n", "evolve.n", "images written, half per class (default 2000)", int),
    Option("--threshold", "evolve.threshold", "votes kept above this many noise std (default 1)", float),
    Option("--step", "evolve.step", "first mutation step, share of each parameter's prior range (default 0.15; "
           "shrinks each round)", float),
    Option("--fresh", "evolve.fresh", "share of each new population drawn afresh (default 0.1)", float),
    Option("--vary", "evolve.vary", "what evolves: all parameters, or the appearance ones only (lesion size and "
           "contrast, density, texture, noise), each candidate's lesion shape, margin and spiculation drawn fresh "
           f"from its class's prior (default {EVOLVE_VARY})", choices=EVOLVE_VARY_CHOICES),
    Option("--seed", "evolve.seed", "the candidates' seed (public; the vote noise never comes from it; default "
           f"{EVOLVE_SEED})", int),
    Option("--out", "out", "new or empty folder to write", required=True),
]

#: the generator, or the folder of synthetic images, that ``synth evaluate`` and ``audit-synthetic`` measure
SYNTHETIC = Option("synthetic", help="generator folder, or a folder of synthetic images (class folders or a manifest)")
#: how many images they sample from a generator, and at what size they read a folder
MEASURED_OPTIONS = [
    Option("--n", help=f"images to sample from a generator (default {MEASURED_SAMPLES})", type=int,
           default=MEASURED_SAMPLES),
    Option("--image-size", help="default: the generator's (64 for an image folder)", type=int),
]

#: every option of ``synth sample``
SAMPLE_OPTIONS = [
    Option("generator", help="generator folder (from `synth train`)"),
    Option("--n", help=f"images in all, half per class (default {SAMPLES})", type=int, default=SAMPLES),
    Option("--out", help="folder to write", required=True),
    Option("--seed", help="seed of the generator's latent draws", type=int, default=0),
]

#: every option of ``synth evaluate``
EVALUATE_OPTIONS = [
    SYNTHETIC,
    Option("--data", help="the real data (train/val/test)", required=True),
    *MEASURED_OPTIONS,
    Option("--out", help="where to write (default SYNTHETIC/quality)"),
    Option("--seed", help="seed of the sampling and the classifier trained on it", type=int, default=0),
    BOOTSTRAP,
]


def cmd_evolve(args: argparse.Namespace) -> int:
    """``privmed synth evolve``: images of phantom parameters evolved under DP votes of the private data."""
    from privmed import rundir
    from privmed.synth.config import evolve_config_from_dict
    from privmed.synth.evolve import evolve

    config = evolve_config_from_dict(overrides(args, EVOLVE_OPTIONS))
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

    given = overrides(args, SYNTH_TRAIN_OPTIONS)
    config = generator_config_from_dict(merge(load_yaml(args.config) if args.config else {}, given))
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
