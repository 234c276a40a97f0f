"""The ``privmed`` command line (also ``python -m privmed``).

Every user error is a :class:`PrivmedError`: printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from privmed.threads import quiet_openmp

quiet_openmp()  # before anything imports torch

from privmed.config import DataConfig, ModelConfig, PrivacyConfig, TrainingConfig, merge  # noqa: E402
from privmed.model_options import model_arg_overrides, parse_model_arg  # noqa: E402
from privmed.tracking import add_tracking_options, tracker_from_args  # noqa: E402
from privmed.errors import GRID_FOLDER_MISSING, PATH_MISSING, PrivmedError  # noqa: E402

# the defaults --help shows are the configuration's own (the options stay unset, so a --config file can set them)
_D, _M, _P, _T = DataConfig(), ModelConfig(), PrivacyConfig(), TrainingConfig()

#: CLI option -> (config section, key). Options left unset do not override the YAML file.
OPTION_KEYS: dict[str, tuple[str, str]] = {
    "data": ("data", "path"),
    "label_column": ("data", "label_columns"),
    "positive_class": ("data", "positive_class"),
    "allow_outside_data_root": ("data", "allow_outside_root"),
    "class_names": ("data", "class_names"),
    "image_size": ("data", "image_size"),
    "spatial_dims": ("data", "spatial_dims"),
    "model": ("model", "name"),
    "epsilon": ("privacy", "epsilon"),
    "delta": ("privacy", "delta"),
    "noise_multiplier": ("privacy", "noise_multiplier"),
    "clip_norm": ("privacy", "clip_norm"),
    "accountant": ("privacy", "accountant"),
    "privacy_unit": ("privacy", "unit"),
    "max_images_per_patient": ("privacy", "max_images_per_patient"),
    "replayable_noise": ("privacy", "replayable_noise"),
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "physical_batch_size": ("training", "physical_batch_size"),
    "lr": ("training", "lr"),
    "optimizer": ("training", "optimizer"),
    "seed": ("training", "seed"),
    "augment": ("training", "augment"),
    "device": ("training", "device"),
    "bootstrap": ("training", "bootstrap_resamples"),
    "synthetic": ("synthetic", "path"),
    "synthetic_use": ("synthetic", "use"),
    "finetune": ("synthetic", "finetune"),
    "reinit_head": ("synthetic", "reinit_head"),
    "pretrain_epochs": ("synthetic", "pretrain_epochs"),
    "pretrain_lr": ("synthetic", "pretrain_lr"),
    "synthetic_public": ("synthetic", "public"),
    # issue 18: pretrained weights, frozen backbone (--model-arg goes to model.args in cli_overrides)
    "model_weights": ("model", "weights"),
    "freeze": ("model", "freeze"),
    "replace_batchnorm": ("model", "replace_batchnorm"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    warnings.filterwarnings("ignore", module="opacus")
    warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
    stderr = sys.stderr
    sys.stderr = tracked = LineTracker(stderr)  # progress bars write here; a message then starts its own line
    try:
        if getattr(args, "bootstrap", None) is not None and args.handler is not _cmd_train:  # train: its config
            from privmed.evaluation.external import check_resamples

            check_resamples(args.bootstrap)
        return args.handler(args) or 0
    except PrivmedError as err:
        tracked.message(f"privmed: error: {err}")
        return 2
    except KeyboardInterrupt:
        tracked.message("privmed: interrupted; continue with the same command plus --resume.")
        return 130
    finally:
        sys.stderr = stderr


class LineTracker:
    """A text stream (standard error) that remembers whether its last write ended a line, so that a
    message never continues a progress bar's line."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._at_line_start = True

    def write(self, text: str) -> int:
        if text:
            last = text[-1]
            self._at_line_start = last == "\n" or (last == "\r" and self.isatty())
        return self._stream.write(text)

    def message(self, line: str) -> None:
        """Write ``line`` on a line of its own."""
        self.write(("" if self._at_line_start else "\n") + line + "\n")
        self.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privmed", description="Privacy-preserving medical-image AI.")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a classifier, privately (--epsilon) or not")
    train.add_argument("--config", help="YAML file with any of the options below (unknown keys are an error)")
    train.add_argument("--out", help="run directory (default runs/latest)")
    train.add_argument("--data", help="data set: class folders, CSV manifest, MedMNIST .npz (default: built-in phantom)")
    train.add_argument("--label-column", nargs="+", help="label column(s) of a manifest; several = multi-label")
    train.add_argument("--positive-class", help=POSITIVE_CLASS_HELP)
    train.add_argument("--class-names", type=_names, metavar="NAME0,NAME1", help=CLASS_NAMES_HELP)
    train.add_argument("--allow-outside-data-root", action="store_true", default=None,
                       help="let a manifest list images outside its own folder (refused by default)")
    train.add_argument("--image-size", type=int, help=f"side in pixels (default {_D.image_size})")
    train.add_argument("--spatial-dims", type=int, choices=(2, 3), help=f"2D images or 3D volumes (default {_D.spatial_dims})")
    train.add_argument("--model", help=f"model name (see `privmed models`; default {_M.name})")
    train.add_argument("--epsilon", type=float,
                       help="target epsilon of the classifier (feature centring and DP-SGD); a DP generator's "
                            "stages are composed on top and the total is reported; omit or inf = non-private")
    train.add_argument("--delta", type=float, help="delta (default 1/(10 N); must be < 1/N)")
    train.add_argument("--noise-multiplier", type=float, help="fixed DP-SGD noise instead of a target epsilon")
    train.add_argument("--clip-norm", type=float, help="per-sample gradient clipping norm (default 1.0)")
    train.add_argument("--accountant", choices=("prv", "rdp"), help=f"default {_P.accountant}")
    _add_unit_options(train)
    train.add_argument("--tune", action="append", type=_tune_option, metavar="KEY=V1,V2,...",
                       help="private hyper-parameter search over a training key (lr, epochs, batch_size, "
                            "weight_decay); repeat for a grid. Every candidate's DP-SGD is composed into --epsilon "
                            "and the best on validation is kept")
    train.add_argument("--epochs", type=int, help=f"default {_T.epochs}")
    train.add_argument("--batch-size", type=int, help=f"logical (expected, Poisson) batch size (default {_T.batch_size})")
    train.add_argument("--physical-batch-size", type=int,
                       help=f"largest batch computed at once (memory only; default {_T.physical_batch_size})")
    train.add_argument("--lr", type=float, help=f"learning rate (default {_T.lr})")
    train.add_argument("--optimizer", choices=("sgd", "adam"), help=f"default {_T.optimizer}")
    train.add_argument("--seed", type=int, help=f"training seed (default {_T.seed})")
    train.add_argument("--augment", type=_bool, metavar="{true,false}", help=f"default {str(_T.augment).lower()}")
    train.add_argument("--device", help=f"auto, cpu, cuda, cuda:1, ... (default {_T.device})")
    train.add_argument("--bootstrap", type=int, help="bootstrap resamples for CIs (default 1000)")
    train.add_argument("--synthetic", help="folder of synthetic images (from `privmed synth sample`, or any class folders)")
    train.add_argument("--synthetic-use", choices=("augment", "pretrain", "only"),
                       help="augment: real + synthetic under DP-SGD; pretrain: pretrain on synthetic, then DP "
                            "fine-tune on real (default); only: synthetic alone")
    train.add_argument("--finetune", choices=("full", "head"), help="after pretraining, fine-tune the full model "
                                                                    "(default) or its head only")
    train.add_argument("--reinit-head", type=_bool, metavar="{true,false}",
                       help="re-initialise the head after pretraining (default false)")
    train.add_argument("--pretrain-epochs", type=int, help="epochs on synthetic images before fine-tuning (default 20)")
    train.add_argument("--pretrain-lr", type=float, help="learning rate of pretraining (default: --lr)")
    train.add_argument("--synthetic-public", action="store_true", default=None,
                       help="declare that the --synthetic folder holds no patient of --data (a public data set, or "
                            "a generator trained only on public data): it then costs no privacy, and the ledger "
                            "states the declaration; privmed refuses it when it finds an identical image, a shared "
                            "patient id or a generator trained on --data")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--nproc", type=int, default=1,
                       help="DP-SGD in N processes on this machine (each takes a share of every Poisson batch; "
                            "noise is added once; same epsilon); equivalent to torchrun --nproc_per_node N -m "
                            "privmed train ... (default 1)")
    # ---- issue 18: network arguments, pretrained weights, a frozen backbone, MLflow tracking
    train.add_argument("--model-arg", action="append", type=parse_model_arg, metavar="KEY=VALUE",
                       help="a keyword argument of the network (model.args), e.g. width=0.5, J=3, init_features=32; "
                            "repeat for several; checked against the network's signature")
    train.add_argument("--model-weights", metavar="PATH",
                       help="start from this state dict on disk (model.weights; a checkpoint holding one under "
                            "'state_dict' or 'model' works too); nothing downloads")
    train.add_argument("--freeze", choices=("backbone", "none"),
                       help="backbone: train only the classifier layer (the frozen rest is computed once and is not "
                            "part of DP-SGD; needs --model-weights); default none")
    train.add_argument("--replace-batchnorm", action="store_true", default=None,
                       help="let Opacus's ModuleValidator.fix replace trainable BatchNorm layers by GroupNorm")
    add_tracking_options(train)
    train.set_defaults(handler=_cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a trained run on any data set")
    ev.add_argument("run", help="run directory")
    ev.add_argument("--data", help="data set (default: the run's own data)")
    ev.add_argument("--split", default="test", help="split to evaluate (data without splits: all of it)")
    ev.add_argument("--label-column", nargs="+")
    ev.add_argument("--positive-class", help=POSITIVE_CLASS_HELP + "; default: the run's")
    ev.add_argument("--class-names", type=_names, metavar="NAME0,NAME1", help=CLASS_NAMES_HELP + "; default: the run's")
    ev.add_argument("--bootstrap", type=int, default=1000)
    ev.set_defaults(handler=_cmd_evaluate)

    cmp_ = sub.add_parser("compare", help="paired bootstrap test of two runs on the same data")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--data", help="data set (default: run A's data)")
    cmp_.add_argument("--split", default="test")
    cmp_.add_argument("--label-column", nargs="+")
    cmp_.add_argument("--positive-class", help=POSITIVE_CLASS_HELP + "; default: run A's")
    cmp_.add_argument("--class-names", type=_names, metavar="NAME0,NAME1", help=CLASS_NAMES_HELP + "; default: run A's")
    cmp_.add_argument("--bootstrap", type=int, default=1000)
    cmp_.set_defaults(handler=_cmd_compare)

    ph = sub.add_parser("phantom", help="write the built-in phantom data set and/or an image grid PNG")
    ph.add_argument("--grid", default="phantom_grid.png", help="PNG of samples per class")
    ph.add_argument("--dataset", help="also write the data set (images + metadata.csv) to this folder")
    ph.add_argument("--n", type=int, default=2000)
    ph.add_argument("--image-size", type=int, default=64)
    ph.add_argument("--seed", type=int, default=0)
    # ---- issue 18: several findings per image (multi-label); the grid options of the former phantom module CLI
    ph.add_argument("--findings", metavar="F1,F2,...",
                    help="a multi-label phantom with these findings per image, any of mass,calcification,distortion "
                         "(one 0/1 manifest column each; train with --label-column mass calcification distortion)")
    ph.add_argument("--per-class", type=int, default=8, help="images per grid row block (default 8)")
    ph.add_argument("--by-density", action="store_true", help="grid rows are class x BI-RADS density")
    ph.set_defaults(handler=_cmd_phantom)

    au = sub.add_parser(
        "audit", help="membership-inference audit of a trained run: an empirical epsilon lower bound",
        description="Default design (one-run, Steinke, Nasr & Jagielski 2023): --canaries canaries, each put into "
                    "training by a fair coin, one target retrained by the run's recipe; the epsilon lower bound "
                    "(at --confidence) comes from the canaries alone, with a Gaussian-DP estimate beside it. Also "
                    "reported, as a diagnostic with NO epsilon bound: the attack on the training split vs the test "
                    "split, confounded by split differences (the only output with --canaries 0).")
    au.add_argument("run", help="run directory")
    au.add_argument("--data", help="the data the run was trained on (default: the run's own)")
    au.add_argument("--canaries", type=int, default=500,
                    help="canaries, each in training by a fair coin (default 500); 0: train-vs-test diagnostic "
                         "only, no epsilon bound")
    au.add_argument("--canary-kind", default="crafted", choices=("crafted", "mislabeled"),
                    help="crafted (default): noise images with random labels; mislabeled: test images with flipped "
                         "labels")
    au.add_argument("--images-per-canary", type=int, default=1,
                    help="images in one canary (default 1, the image unit); more only for runs whose unit of "
                         "privacy is the patient")
    au.add_argument("--shadows", type=int, default=0,
                    help="shadow models for LiRA, the strong and expensive attack (default 0: loss attack only; "
                         "e.g. 8)")
    au.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bound (default 0.95)")
    au.add_argument("--workers", type=int, default=1, help="processes training shadow models")
    au.add_argument("--shadow-dir", help="folder shared by audits of runs with the same recipe (reuses shadows)")
    au.add_argument("--seed", type=int, default=0, help="seed of the canaries and their coins")
    au.add_argument("--bootstrap", type=int, default=1000)
    au.set_defaults(handler=_cmd_audit)

    aus = sub.add_parser(
        "audit-synthetic", help="did a generator memorise? DCR membership test of synthetic images",
        description="With --canaries M (a generator folder only): M held-out test images, each put into the "
                    "generator's training data by a fair coin, one generator retrained by the same recipe, and a "
                    "one-run epsilon lower bound from the canaries' distance to its samples. Without: the "
                    "training split against the test split, a diagnostic confounded by split differences, with "
                    "NO epsilon bound.")
    aus.add_argument("synthetic",
                     help="generator folder, or a folder of synthetic images (class folders or a manifest)")
    aus.add_argument("--data", required=True, help="the real data: train split = generator's training set")
    aus.add_argument("--canaries", type=int, default=0,
                     help="held-out images put into a retrained generator's data by fair coins, for an epsilon "
                          "bound (retrains the generator: as slow as `synth train`); default 0: diagnostic only")
    aus.add_argument("--n", type=int, default=2000, help="images to sample from a generator (default 2000)")
    aus.add_argument("--image-size", type=int, help="default: the generator's (64 for an image folder)")
    aus.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bound (default 0.95)")
    aus.add_argument("--seed", type=int, default=0, help="seed of the canaries and their coins")
    aus.add_argument("--bootstrap", type=int, default=1000)
    aus.set_defaults(handler=_cmd_audit_synthetic)

    _add_synth(sub)
    _add_study(sub)

    models = sub.add_parser("models", help="list the models")
    models.set_defaults(handler=_cmd_models)
    return parser


def _add_unit_options(parser: argparse.ArgumentParser) -> None:
    """Whom the guarantee protects, and the randomness it rests on (``privacy`` section)."""
    parser.add_argument("--privacy-unit", choices=("patient", "image"),
                        help="unit of privacy: patient (one patient and all of their images; the default when the "
                             "data has patient ids) or image (the default otherwise)")
    parser.add_argument("--max-images-per-patient", type=int,
                        help="at most this many images of a sampled patient enter one step (default 1, one image drawn afresh per step; public)")
    parser.add_argument("--replayable-noise", action="store_true", default=None,
                        help="derive DP noise and Poisson batches from --seed (debugging, exact reproduction): the "
                             "run is then NOT private, and its ledger says so")


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


def _add_synth(sub) -> None:
    synth = sub.add_parser("synth", help="class-conditioned generator: train (with or without DP), sample, evaluate")
    ssub = synth.add_subparsers(dest="synth_command")
    tr = ssub.add_parser("train", help="train a generator on the training split")
    tr.add_argument("--config", help="YAML file with data/privacy/gan sections")
    tr.add_argument("--out", help="generator folder (default gens/latest)")
    tr.add_argument("--data", help="data set (default: built-in phantom)")
    tr.add_argument("--label-column", nargs=1, help="the binary label column of a manifest")
    tr.add_argument("--positive-class", help=POSITIVE_CLASS_HELP)
    tr.add_argument("--class-names", type=_names, metavar="NAME0,NAME1", help=CLASS_NAMES_HELP)
    tr.add_argument("--image-size", type=int, help="64 (default) or 128")
    tr.add_argument("--epsilon", type=float, help="target epsilon of the discriminator's DP-SGD; omit = non-private")
    tr.add_argument("--delta", type=float)
    tr.add_argument("--noise-multiplier", type=float)
    tr.add_argument("--clip-norm", type=float)
    tr.add_argument("--accountant", choices=("prv", "rdp"))
    _add_unit_options(tr)
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", type=int, help="expected (Poisson) real images per discriminator step")
    tr.add_argument("--lr-d", type=float)
    tr.add_argument("--lr-g", type=float)
    tr.add_argument("--width", type=int, help="base channel width of the generator (default 32)")
    tr.add_argument("--disc-width", type=int, help="base channel width of the discriminator (default: --width); "
                                                   "DP-SGD's noise grows with its size, so keep it small when private")
    tr.add_argument("--discriminator", choices=("pixel", "scatter"),
                    help="pixel: MCGAN-like conv net (default); scatter: small head on frozen scattering features")
    tr.add_argument("--minibatch-std", action="store_true", default=None,
                    help="non-private pixel discriminator only: give it each batch's spread (against per-class "
                         "mode collapse)")
    tr.add_argument("--diff-augment", action="store_true", default=None,
                    help="the discriminator sees real and generated images through the same random brightness, "
                         "contrast, shift and cutout (DiffAugment; with or without DP)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--device")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted generator in --out")
    tr.set_defaults(handler=_cmd_synth_train)
    sa = ssub.add_parser("sample", help="write synthetic images + manifest + privacy record")
    sa.add_argument("generator", help="generator folder (from `synth train`)")
    sa.add_argument("--n", type=int, default=3000, help="images in all, half per class (default 3000)")
    sa.add_argument("--out", required=True, help="folder to write")
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(handler=_cmd_synth_sample)
    ev = ssub.add_parser("evaluate", help="train-on-synthetic AUROC, Frechet distance, memorisation, sample grid")
    ev.add_argument("synthetic", help="generator folder, or a folder of synthetic images")
    ev.add_argument("--data", required=True, help="the real data (train/val/test)")
    ev.add_argument("--n", type=int, default=2000, help="images to sample from a generator (default 2000)")
    ev.add_argument("--image-size", type=int, help="default: the generator's (64 for an image folder)")
    ev.add_argument("--out", help="where to write (default SYNTHETIC/quality)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--bootstrap", type=int, default=1000)
    ev.set_defaults(handler=_cmd_synth_evaluate)
    synth.set_defaults(handler=lambda args: synth.print_help() or 1)


def _cmd_synth_train(args: argparse.Namespace) -> int:
    from privmed.config import load_yaml, merge
    from privmed.synth.config import generator_config_from_dict
    from privmed.synth.training import GENERATOR_FILE, train_generator
    from privmed.training.preflight import check_device

    from privmed import rundir

    overrides = cli_overrides(args, SYNTH_OPTION_KEYS)
    config = generator_config_from_dict(merge(load_yaml(args.config) if args.config else {}, overrides))
    rundir.check_writable(config.out)
    check_device(config.gan.device)
    out = train_generator(config, resume=args.resume)

    print(f"generator written to {out / GENERATOR_FILE}; sample grids in {out / 'grids'}")
    print(f"  privacy: {rundir.read_json(out / rundir.PRIVACY)['summary']}")
    return 0


def _cmd_synth_sample(args: argparse.Namespace) -> int:
    from privmed import rundir
    from privmed.synth.sample import sample

    rundir.check_writable(args.out)
    out = sample(args.generator, n=args.n, out=args.out, seed=args.seed)
    print(f"{args.n // 2 * 2} synthetic images written to {out} (manifest.csv, privacy.json)")
    print(f"  privacy of the generator: {rundir.read_json(out / rundir.PRIVACY)['summary']}")
    return 0


def _cmd_synth_evaluate(args: argparse.Namespace) -> int:
    from privmed.config import DataConfig
    from privmed.data.sources import load_dataset
    from privmed.synth.quality import evaluate_synthetic
    from privmed.synth.sample import synthetic_images

    from privmed import rundir

    target = _existing_synthetic(args.synthetic)
    rundir.check_writable(Path(args.out) if args.out else target / "quality")
    images, labels, names, size = synthetic_images(target, n=args.n, image_size=args.image_size, seed=args.seed)
    real = load_dataset(DataConfig(path=args.data, image_size=size))
    out = Path(args.out) if args.out else target / "quality"
    quality = evaluate_synthetic(synthetic=images, labels=labels, real=real, out=out, class_names=names,
                                 seed=args.seed, n_resamples=args.bootstrap)
    print(f"{len(images)} synthetic images from {target} against {real.name} ({size} px):")
    for line in quality.lines():
        print(f"  {line}")
    print(f"written to {out} (quality.json, samples.png, closest_pairs.png)")
    return 0


def _existing_synthetic(path: str) -> Path:
    """The SYNTHETIC argument of ``synth evaluate`` / ``audit-synthetic``, refused by name when missing."""
    target = Path(path)
    if not target.exists():
        raise PrivmedError(PATH_MISSING.format(what="synthetic image folder or generator", path=target,
                                               cwd=Path.cwd()))
    return target


POSITIVE_CLASS_HELP = ("the positive class: a class name or a label value (e.g. 0); scores and thresholds follow it "
                       "(default: label 1 of 0/1 labels; 'malignant' when the classes are named and one is)")
CLASS_NAMES_HELP = ("names of the label values 0 and 1, in that order, e.g. malignant,benign (default: from the data, "
                    "else neutral label=0/label=1)")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise argparse.ArgumentTypeError(f"expected two different names separated by a comma, got {text!r}")
    return names


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "yes", "1")


def cli_overrides(args: argparse.Namespace, keys: dict[str, tuple[str, str]] = OPTION_KEYS) -> dict[str, Any]:
    """Nested config overrides from the options actually given (``keys``: option -> section, key)."""
    overrides: dict[str, Any] = {}
    for option, (section, key) in keys.items():
        value = getattr(args, option, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    for key, values in getattr(args, "tune", None) or []:
        overrides.setdefault("tune", {})[key] = values
    if getattr(args, "model_arg", None):
        overrides = merge(overrides, model_arg_overrides(args.model_arg))
    if getattr(args, "out", None):
        overrides["out"] = args.out
    return overrides


def _tune_option(text: str) -> tuple[str, list[str]]:
    """``lr=0.1,0.3`` -> ("lr", ["0.1", "0.3"]); the config checks the key and the values."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2,... (e.g. lr=0.1,0.3), got {text!r}")
    return key.strip(), [v.strip() for v in values.split(",") if v.strip()]


def _add_study(sub) -> None:
    st = sub.add_parser("study", help="run a study: a grid of runs from one YAML file (resumable)")
    st.add_argument("study", help="study file (YAML): data, strategies, epsilons, seeds, fairness attributes")
    st.add_argument("--out", required=True, help="study folder; re-run the same command to resume")
    st.add_argument("--workers", type=int, help="worker processes (default: the study's 'workers', else 1)")
    st.add_argument("--devices", metavar="0,1",
                    help="GPU indices; each worker process is pinned to one of them in turn (default: none)")
    st.add_argument("--no-report", action="store_true", help="do not write report.html/report.md at the end")
    add_tracking_options(st)  # issue 18: the study as an MLflow run, each of its runs nested in it
    st.set_defaults(handler=_cmd_study)

    rp = sub.add_parser("report", help="write a study's report.html and report.md (from what has finished)")
    rp.add_argument("out", help="study folder")
    rp.set_defaults(handler=_cmd_report)

    dm = sub.add_parser("demo", help="built-in data -> small study -> report (a few minutes)")
    dm.add_argument("--out", default="demo", help="study folder (default demo); re-run to resume")
    dm.add_argument("--workers", type=int, help="worker processes (default 2)")
    dm.set_defaults(handler=_cmd_demo)


def _cmd_study(args: argparse.Namespace) -> int:
    from privmed.study import load_study

    devices = _devices(args.devices)  # refused before the study is read
    study, raw = load_study(args.study)
    with tracker_from_args(args, params=raw, run_name=Path(args.out).name) as tracker:  # no-op without --mlflow
        status = _run_and_report(study, raw, Path(args.out), args.workers, report=not args.no_report, devices=devices)
        tracker.log_study(Path(args.out), [Path(c.config.out) for c in study.cells(Path(args.out))])
    return status


def _cmd_report(args: argparse.Namespace) -> int:
    from privmed.report import write_report

    html, md = write_report(Path(args.out))
    print(f"report: {html} (and {md.name})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib.resources import files

    import yaml

    from privmed.study import study_from_dict

    raw = yaml.safe_load(files("privmed.study").joinpath("demo.yaml").read_text())
    return _run_and_report(study_from_dict(raw), raw, Path(args.out), args.workers, report=True)


def _devices(text: str | None) -> tuple[str, ...]:
    from privmed.training.devices import parse_devices

    return parse_devices(text) if text else ()


def _run_and_report(study, raw: dict, out: Path, workers: int | None, *, report: bool,
                    devices: tuple[str, ...] = ()) -> int:
    import time

    from privmed.report import write_report
    from privmed.study import run_study

    from privmed import rundir
    from privmed.errors import WORKERS_NOT_POSITIVE

    if workers is not None and workers < 1:
        raise PrivmedError(WORKERS_NOT_POSITIVE.format(n=workers))
    rundir.check_writable(out)
    t0 = time.perf_counter()
    result = run_study(study, raw, out=out, workers=workers, devices=devices)
    outcomes = result.outcomes
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished ({time.perf_counter() - t0:.0f} s); "
          f"results: {out / 'results.csv'}")
    if report:
        html, _ = write_report(out, tables=result.tables)
        print(f"report: {html}")
    for outcome in failed:
        print(f"FAILED {outcome.run_id}: {outcome.error.splitlines()[0]} (details: {out / 'failed'})", file=sys.stderr)
    return 1 if failed else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from privmed import rundir
    from privmed.config import config_from_dict, load_yaml, merge
    from privmed.reporting import print_run_summary
    from privmed.training.distributed import train_processes
    from privmed.training.preflight import check_before_training

    base = load_yaml(args.config) if args.config else {}
    config = config_from_dict(merge(base, cli_overrides(args)))
    check_before_training(config, resume=args.resume)
    with tracker_from_args(args, params=config.to_dict(), run_name=Path(config.out).name) as tracker:  # no-op without --mlflow
        out = train_processes(config, resume=args.resume, nproc=args.nproc, on_epoch_end=tracker.log_epoch)
        if out is not None:  # under torchrun, only rank 0 reports
            tracker.log_run_dir(out)
    if out is not None:
        print_run_summary(out)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from privmed.evaluation.external import evaluate_run
    from privmed.reporting import print_metrics_table

    result, where = evaluate_run(Path(args.run), data=args.data, split=args.split, label_columns=args.label_column,
                                 positive_class=args.positive_class, class_names=args.class_names,
                                 n_resamples=args.bootstrap)
    print_metrics_table(result, title=f"{args.run} on {result['dataset']} [{args.split}]")
    print(f"written to {where}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from privmed.evaluation.external import compare_runs
    from privmed.reporting import print_comparison

    result = compare_runs(Path(args.run_a), Path(args.run_b), data=args.data, split=args.split,
                          label_columns=args.label_column, positive_class=args.positive_class,
                          class_names=args.class_names,
                          n_resamples=args.bootstrap)
    print_comparison(result)
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from privmed.data.phantom import (PhantomSpec, generate_phantom, phantom_grid_classes, write_image_grid,
                                      write_phantom_dataset)

    from privmed import rundir

    spec = PhantomSpec(n_samples=args.n, image_size=args.image_size, seed=args.seed, findings=args.findings or ())
    grid = Path(args.grid)
    if not grid.parent.is_dir():
        raise PrivmedError(GRID_FOLDER_MISSING.format(path=grid, folder=grid.parent))
    rundir.check_writable(grid.parent)
    if args.dataset:
        rundir.check_writable(args.dataset)
    images, table = generate_phantom(spec)
    classes, names = phantom_grid_classes(table, by_density=args.by_density)
    grid = write_image_grid(images, classes, args.grid, per_class=args.per_class, class_names=names,
                            title=f"privmed phantom, {args.image_size}px, seed {args.seed}")
    print(f"image grid written to {grid}")
    if args.dataset:
        manifest = write_phantom_dataset(args.dataset, spec)
        print(f"data set written to {manifest.parent} (manifest {manifest.name})"
              + (f"; train on its findings with --label-column {' '.join(spec.findings)}" if spec.findings else ""))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from privmed.audit.membership import AuditConfig, audit_run
    from privmed.reporting import print_audit

    config = AuditConfig(shadows=args.shadows, canaries=args.canaries, canary_kind=args.canary_kind,
                         images_per_canary=args.images_per_canary, workers=args.workers, seed=args.seed,
                         alpha=1 - args.confidence, bootstrap=args.bootstrap)
    result = audit_run(Path(args.run), data=args.data, config=config,
                       shadow_dir=Path(args.shadow_dir) if args.shadow_dir else None)
    print_audit(result)
    return 0


def _cmd_audit_synthetic(args: argparse.Namespace) -> int:
    from privmed.audit.synthetic import dcr_membership
    from privmed.config import DataConfig
    from privmed.data.sources import load_dataset
    from privmed.privacy.accounting import default_delta
    from privmed.synth.sample import synthetic_images

    _existing_synthetic(args.synthetic)
    if args.canaries:
        from privmed.audit.generator import audit_generator

        result = audit_generator(Path(args.synthetic), data=args.data, canaries=args.canaries, n=args.n,
                                 seed=args.seed, alpha=1 - args.confidence, n_resamples=args.bootstrap)
        a = result["attacks"][0]
        print(f"one-run DCR audit of {result['generator']}: {result['canaries']} held-out canaries, each in the "
              f"retrained generator's data by a fair coin ({a['n_members']} in, {a['n_non_members']} out); "
              f"{result['synthetic_images']} samples of {result['retrained']}")
        print(f"  AUC={a['auc']:.3f} [{a['auc_ci'][0]:.3f}, {a['auc_ci'][1]:.3f}]  eps lower bound="
              f"{a['eps_lower_bound']:.3f} ({a['confidence']:.0%}, one-run)  GDP estimate eps~{a['gdp_epsilon']:.2f}"
              f"  (claimed epsilon={result['claimed_epsilon']})")
        return 0
    synthetic, _, _, size = synthetic_images(args.synthetic, n=args.n, image_size=args.image_size)
    real = load_dataset(DataConfig(path=args.data, image_size=size))
    members, non_members = real.split("train"), real.split("test")
    summary, medians = dcr_membership(synthetic=synthetic, members=members.images,
                                      non_members=non_members.images, delta=default_delta(len(members)),
                                      n_resamples=args.bootstrap)
    print(f"DCR membership test: {len(synthetic)} synthetic images vs {len(members)} training (members) and "
          f"{len(non_members)} test (non-members) images of {real.name}, {size} px")
    print(f"  median distance to closest synthetic image: members {medians['median_dcr_members']:.2f}, "
          f"non-members {medians['median_dcr_non_members']:.2f}")
    print(f"  AUC={summary.auc:.3f} [{summary.auc_ci[0]:.3f}, {summary.auc_ci[1]:.3f}]  "
          f"TPR@1%FPR={summary.tpr_at_1pct_fpr:.3f}  no eps bound: training split vs test split is confounded "
          f"by split differences (pass --canaries M with a generator folder for a one-run bound)")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from privmed.models import MODELS

    for name, info in MODELS.items():
        dims = "/".join(f"{d}D" for d in info.spatial_dims)
        print(f"{name:16s} {dims:6s} grad mode {info.grad_sample_mode:10s} {info.description}")
    print(f"{'monai:<Name>':16s} {'2D/3D':6s} grad mode {'hooks':10s} any network of monai.networks.nets, e.g. "
          "monai:DenseNet121 (--model-arg for its arguments; docs/models.md)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
