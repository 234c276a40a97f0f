"""``privmed train``, ``evaluate`` and ``compare``: classifiers and their evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.config import (ACCOUNTANTS, CENTER_SOURCES, FINETUNE_MODES, OPTIMIZERS, SPATIAL_DIMS, SYNTHETIC_USES,
                            FREEZE_MODES, DataConfig, ModelConfig, PrivacyConfig, RunConfig, SyntheticConfig,
                            TrainingConfig)

from privmed.model_options import parse_model_arg
from privmed.tracking import add_tracking_options, tracker_from_args

from .options import add_label_options, add_unit_options, boolean, cli_overrides, number, tune_option


def add_parsers(sub) -> None:
    """The ``train``, ``evaluate`` and ``compare`` commands."""
    train = sub.add_parser("train", help="train a classifier, privately (--epsilon) or not")
    add_run_options(train)
    train.set_defaults(handler=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a trained run on any data set")
    ev.add_argument("run", help="run directory")
    _add_evaluation_options(ev, whose="the run's")
    ev.set_defaults(handler=cmd_evaluate)

    cmp_ = sub.add_parser("compare", help="paired bootstrap test of two runs on the same data")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    _add_evaluation_options(cmp_, whose="run A's")
    cmp_.set_defaults(handler=cmd_compare)


def add_run_options(train: argparse.ArgumentParser) -> None:
    """Every option of ``privmed train`` (``privmed check`` takes the same)."""
    train.add_argument("--config", help="YAML file with any of the options below (unknown keys are an error; default: none, the "
                            "options alone)")
    train.add_argument("--out", help=f"run directory (default {RunConfig.out})")
    _add_data_options(train)
    _add_privacy_options(train)
    _add_training_options(train)
    _add_synthetic_options(train)
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--nproc", type=int, default=1,
                       help="DP-SGD in N processes on this machine (each takes a share of every Poisson batch; "
                            "noise is added once; same epsilon); equivalent to torchrun --nproc_per_node N -m "
                            "privmed train ... (default 1)")
    _add_model_options(train)
    add_tracking_options(train)


def _add_evaluation_options(parser: argparse.ArgumentParser, *, whose: str) -> None:
    parser.add_argument("--data", help=f"data set (default: {whose} data)")
    parser.add_argument("--split", default="test", help="split to evaluate (data without splits: all of it)")
    add_label_options(parser, default=f"; default: {whose}")
    parser.add_argument("--allow-outside-data-root", action="store_true",
                        help="let a manifest list images outside its own folder (e.g. absolute paths; refused by "
                             "default)")
    parser.add_argument("--bootstrap", type=int, default=TrainingConfig.bootstrap_resamples,
                        help=f"bootstrap resamples for CIs (default {TrainingConfig.bootstrap_resamples})")


def _add_data_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--data", help="data set: class folders, CSV manifest, MedMNIST .npz (default: built-in phantom)")
    add_label_options(train)
    train.add_argument("--allow-outside-data-root", action="store_true", default=None,
                       help="let a manifest list images outside its own folder (refused by default)")
    train.add_argument("--image-size", type=int, help=f"side in pixels (default {DataConfig.image_size})")
    train.add_argument("--lesion-fraction", type=number,
                       help=f"lesion-centred data: the central fraction of each side the lesion fills, for the "
                            f"lesion-masked AUROC (0: images not centred on a lesion; default {DataConfig.lesion_fraction})")
    train.add_argument("--spatial-dims", type=int, choices=SPATIAL_DIMS,
                       help=f"2D images or 3D volumes (default {DataConfig.spatial_dims})")
    train.add_argument("--model", help=f"model name (see `privmed models`; default {ModelConfig.name})")


def _add_privacy_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--epsilon", type=number,
                       help="target epsilon of the classifier (feature centring and DP-SGD); a DP generator's "
                            "stages are composed on top and the total is reported; omit or inf = non-private (default inf)")
    train.add_argument("--delta", type=number, help="delta (default 1/(10 N); must be < 1/N)")
    train.add_argument("--noise-multiplier", type=number,
                       help="fixed DP-SGD noise instead of a target epsilon (default: calibrated to --epsilon)")
    train.add_argument("--clip-norm", type=number,
                       help=f"per-sample gradient clipping norm (default {PrivacyConfig.clip_norm})")
    train.add_argument("--accountant", choices=ACCOUNTANTS, help=f"default {PrivacyConfig.accountant}")
    train.add_argument("--center", choices=CENTER_SOURCES,
                       help="a feature model's head centre: phantom (mean features of phantom patches: free), channels "
                            "(that mean corrected by the training data's per-channel mean, released with noise and "
                            "composed into epsilon; private for images the phantom cannot draw), private (the "
                            "training mean, released whole likewise), auto (phantom, else private; the default before "
                            f"channels); default {PrivacyConfig.center}. With --synthetic images the centre is "
                            "their mean features, free")
    add_unit_options(train)
    train.add_argument("--tune", action="append", type=tune_option, metavar="KEY=V1,V2,...",
                       help="private hyper-parameter search over a training key (lr, epochs, batch_size, "
                            "weight_decay); repeat for a grid. Every candidate's DP-SGD is composed into --epsilon "
                            "and the best on validation is kept (default: no search)")


def _add_training_options(train: argparse.ArgumentParser) -> None:
    t = TrainingConfig
    train.add_argument("--epochs", type=int, help=f"default {t.epochs}")
    train.add_argument("--batch-size", type=int, help=f"logical (expected, Poisson) batch size (default {t.batch_size})")
    train.add_argument("--physical-batch-size", type=int,
                       help=f"largest batch computed at once (memory only; default {t.physical_batch_size})")
    train.add_argument("--lr", type=number, help=f"learning rate (default {t.lr})")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default {t.optimizer}")
    train.add_argument("--seed", type=int, help=f"training seed (default {t.seed})")
    train.add_argument("--augment", type=boolean, metavar="{true,false}", help=f"default {str(t.augment).lower()}")
    train.add_argument("--augment-views", type=int, metavar="K",
                       help="augmentation multiplicity: K augmented views of each image, their gradients averaged "
                            f"before clipping (free of privacy; K times the compute; default {t.augment_views})")
    train.add_argument("--ema", type=number, metavar="DECAY",
                       help="validate and keep an exponential moving average of the weights with this decay per "
                            f"step (free of privacy: post-processing; e.g. 0.95; default {t.ema}: off)")
    train.add_argument("--device", help=f"auto, cpu, cuda, cuda:1, ... (default {t.device})")
    train.add_argument("--bootstrap", type=int, help=f"bootstrap resamples for CIs (default {t.bootstrap_resamples})")


def _add_synthetic_options(train: argparse.ArgumentParser) -> None:
    s = SyntheticConfig
    train.add_argument("--synthetic", help="folder of synthetic images (from `privmed synth sample`, or any class folders; "
                            "default: none)")
    train.add_argument("--synthetic-use", choices=SYNTHETIC_USES,
                       help="augment: real + synthetic under DP-SGD; pretrain: pretrain on synthetic, then DP "
                            f"fine-tune on real; only: synthetic alone (default {s.use})")
    train.add_argument("--finetune", choices=FINETUNE_MODES,
                       help=f"after pretraining, fine-tune the full model or its head only (default {s.finetune})")
    train.add_argument("--reinit-head", type=boolean, metavar="{true,false}",
                       help=f"re-initialise the head after pretraining (default {str(s.reinit_head).lower()})")
    train.add_argument("--pretrain-epochs", type=int,
                       help=f"epochs on synthetic images before fine-tuning (default {s.pretrain_epochs})")
    train.add_argument("--pretrain-lr", type=number, help="learning rate of pretraining (default: --lr)")
    train.add_argument("--synthetic-public", action="store_true", default=None,
                       help="declare that the --synthetic folder holds no patient of --data (a public data set, or "
                            "a generator trained only on public data): it then costs no privacy, and the ledger "
                            "states the declaration; privmed refuses it when it finds an identical image, a shared "
                            "patient id or a generator trained on --data")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Network arguments, pretrained weights and a frozen backbone (``model`` section)."""
    parser.add_argument("--model-arg", action="append", type=parse_model_arg, metavar="KEY=VALUE",
                        help="a keyword argument of the network (model.args), e.g. width=0.5, J=3, init_features=32; "
                             "repeat for several; checked against the network's signature (default: the network's own)")
    parser.add_argument("--model-weights", metavar="PATH",
                        help="start from this state dict on disk (model.weights; a checkpoint holding one under "
                             "'state_dict' or 'model' works too); nothing downloads (default: random initialisation)")
    parser.add_argument("--freeze", choices=FREEZE_MODES,
                        help="backbone: train only the classifier layer (the frozen rest is computed once and is not "
                             "part of DP-SGD); last_block: the last block and the classifier; bias: biases and the "
                             "classifier (BiTFiT); lora: LoRA adapters (--model-arg lora_rank=8) and the classifier; "
                             f"needs --model-weights; default {ModelConfig.freeze}")
    parser.add_argument("--replace-batchnorm", action="store_true", default=None,
                        help="let Opacus's ModuleValidator.fix replace trainable BatchNorm layers by GroupNorm")


def cmd_train(args: argparse.Namespace) -> int:
    """``privmed train``: the config file, overridden by the options given; checks first, then trains."""
    from privmed.reporting import print_run_summary
    from privmed.training.trainer import train_processes
    from privmed.training.preflight import check_before_training

    config = run_config(args)
    data = check_before_training(config, resume=args.resume)  # the data, read once for the checks and the run
    with tracker_from_args(args, params=config.to_dict(), run_name=Path(config.out).name) as tracker:  # no-op without --mlflow
        out = train_processes(config, resume=args.resume, nproc=args.nproc, on_epoch_end=tracker.log_epoch,
                              data=data)
        if out is not None:  # under torchrun, only rank 0 reports
            tracker.log_run_dir(out)
    if out is not None:
        print_run_summary(out)
    return 0


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration: the ``--config`` file, overridden by the options given, validated."""
    from privmed.config import config_from_dict, load_yaml, merge

    base = load_yaml(args.config) if args.config else {}
    return config_from_dict(merge(base, cli_overrides(args)))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``privmed evaluate``: a trained run on a data set, at its own validation thresholds."""
    from privmed.atomic import check_folder
    from privmed.evaluation.external import evaluate_run
    from privmed.reporting import print_metrics_table, privacy_line

    check_folder(args.run)  # the evaluation is written into the run's folder
    result, where = evaluate_run(Path(args.run), data=args.data, split=args.split, label_columns=args.label_column,
                                 positive_class=args.positive_class, class_names=args.class_names,
                                 n_resamples=args.bootstrap, allow_outside_root=args.allow_outside_data_root)
    print_metrics_table(result, title=f"{args.run} on {result['dataset']} [{args.split}]")
    print(f"  the run's records: {result['run_seal']}")
    print(f"  privacy: {privacy_line(Path(args.run))}")
    print(f"written to {where}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``privmed compare``: a paired bootstrap test of two runs."""
    from privmed.evaluation.external import compare_runs
    from privmed.reporting import print_comparison

    result = compare_runs(Path(args.run_a), Path(args.run_b), data=args.data, split=args.split,
                          label_columns=args.label_column, positive_class=args.positive_class,
                          class_names=args.class_names, n_resamples=args.bootstrap,
                          allow_outside_root=args.allow_outside_data_root)
    print_comparison(result)
    return 0
