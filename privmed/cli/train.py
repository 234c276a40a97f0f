"""``privmed train``, ``evaluate`` and ``compare``: classifiers and their evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.config import (CENTER_SOURCES, FINETUNE_MODES, FREEZE_MODES, OPTIMIZERS, SPATIAL_DIMS, STREAM_SETTINGS,
                            SYNTHETIC_USES, DataConfig, ModelConfig, PrivacyConfig, RunConfig, SyntheticConfig,
                            TrainingConfig)
from privmed.model_options import parse_model_arg
from privmed.tracking import tracker_from_args

from .options import (BOOTSTRAP, TRACKING_OPTIONS, Option, add_command, boolean, label_options, number, overrides,
                      privacy_options, tune_option)


def add_parsers(sub) -> None:
    """The ``train``, ``evaluate`` and ``compare`` commands."""
    add_command(sub, "train", RUN_OPTIONS, cmd_train, help="train a classifier, privately (--epsilon) or not")
    add_command(sub, "evaluate", [Option("run", help="run directory"), *evaluation_options(whose="the run's")],
                cmd_evaluate, help="evaluate a trained run on any data set")
    add_command(sub, "compare", [Option("run_a"), Option("run_b"), *evaluation_options(whose="run A's")], cmd_compare,
                help="paired bootstrap test of two runs on the same data")


D, M, P, T, S = DataConfig, ModelConfig, PrivacyConfig, TrainingConfig, SyntheticConfig

#: every option of ``privmed train`` (``privmed check`` takes the same), in --help's order, with the key it sets
#: (MLflow tracking's options set none: the command reads them)
RUN_OPTIONS: list[Option] = [
    Option("--config", help="YAML file with any of the options below (unknown keys are an error; default: none, the "
           "options alone)"),
    Option("--out", "out", f"run directory (default {RunConfig.out})"),
    # data
    Option("--data", "data.path", "data set: class folders, CSV manifest, MedMNIST .npz (default: built-in phantom)"),
    *label_options(),
    Option("--allow-outside-data-root", "data.allow_outside_root", "let a manifest list images outside its own "
           "folder (refused by default)", action="store_true"),
    Option("--image-size", "data.image_size", f"side in pixels (default {D.image_size})", int),
    Option("--lesion-fraction", "data.lesion_fraction", "lesion-centred data: the central fraction of each side the "
           "lesion fills, for the lesion-masked AUROC (0: images not centred on a lesion; default "
           f"{D.lesion_fraction})", number),
    Option("--spatial-dims", "data.spatial_dims", f"2D images or 3D volumes (default {D.spatial_dims})", int,
           choices=SPATIAL_DIMS),
    Option("--stream", "data.stream", "decode image files per batch (on: memory bounded by the batch), all at once "
           f"(off), or on when they would take more than 1 GiB (auto); never changes the result (default {D.stream})",
           choices=STREAM_SETTINGS),
    Option("--model", "model.name", f"model name (see `privmed models`; default {M.name})"),
    # privacy
    *privacy_options(epsilon_of="the classifier (feature centring and DP-SGD); a DP generator's stages are composed "
                     "on top and the total is reported"),
    Option("--total-epsilon", "privacy.total_epsilon", "target epsilon of the classifier together with the recorded "
           "stages of the records it uses (a DP generator's samples, --synthetic): its own stages get what those "
           "left; instead of --epsilon (default: none)", number),
    Option("--center", "privacy.center", "a feature model's head centre: phantom (mean features of phantom patches: "
           "free), channels (that mean corrected by the training data's per-channel mean, released with noise and "
           "composed into epsilon; private for images the phantom cannot draw), private (the training mean, released "
           "whole likewise), auto (phantom, else private; the default before channels); default "
           f"{P.center}. With --synthetic images the centre is their mean features, free", choices=CENTER_SOURCES),
    Option("--tune", "tune", "private hyper-parameter search over a training key (lr, epochs, batch_size, "
           "weight_decay); repeat for a grid. Every candidate's DP-SGD is composed into --epsilon and the best on "
           "validation is kept (default: no search)", tune_option, metavar="KEY=V1,V2,...", action="append",
           to_config=dict),
    # training
    Option("--epochs", "training.epochs", f"default {T.epochs}", int),
    Option("--batch-size", "training.batch_size", f"logical (expected, Poisson) batch size (default {T.batch_size})",
           int),
    Option("--physical-batch-size", "training.physical_batch_size", "largest batch computed at once (memory only; "
           f"default {T.physical_batch_size})", int),
    Option("--lr", "training.lr", f"learning rate (default {T.lr})", number),
    Option("--optimizer", "training.optimizer", f"default {T.optimizer}", choices=OPTIMIZERS),
    Option("--seed", "training.seed", f"training seed (default {T.seed})", int),
    Option("--augment", "training.augment", f"default {str(T.augment).lower()}", boolean, metavar="{true,false}"),
    Option("--augment-views", "training.augment_views", "augmentation multiplicity: K augmented views of each image, "
           "their gradients averaged before clipping (free of privacy; K times the compute; default "
           f"{T.augment_views})", int, metavar="K"),
    Option("--ema", "training.ema", "validate and keep an exponential moving average of the weights with this decay "
           f"per step (free of privacy: post-processing; e.g. 0.95; default {T.ema}: off)", number, metavar="DECAY"),
    Option("--device", "training.device", f"auto, cpu, cuda, cuda:1, ... (default {T.device})"),
    Option("--bootstrap", "training.bootstrap_resamples", f"bootstrap resamples for CIs (default "
           f"{T.bootstrap_resamples})", int),
    Option("--feature-cache", "training.feature_cache", "folder where a frozen front end's features are kept between "
           "runs (derived from the private images: keep it with the data), or off (default: $PRIVMED_CACHE, else "
           "~/.cache/privmed/features)", metavar="DIR|off"),
    # synthetic
    Option("--synthetic", "synthetic.path", "folder of synthetic images (from `privmed synth sample`, or any class "
           "folders; default: none)"),
    Option("--synthetic-use", "synthetic.use", "augment: real + synthetic under DP-SGD; pretrain: pretrain on "
           f"synthetic, then DP fine-tune on real; only: synthetic alone (default {S.use})", choices=SYNTHETIC_USES),
    Option("--finetune", "synthetic.finetune", "after pretraining, fine-tune the full model or its head only "
           f"(default {S.finetune})", choices=FINETUNE_MODES),
    Option("--reinit-head", "synthetic.reinit_head", "re-initialise the head after pretraining (default "
           f"{str(S.reinit_head).lower()})", boolean, metavar="{true,false}"),
    Option("--pretrain-epochs", "synthetic.pretrain_epochs", "epochs on synthetic images before fine-tuning "
           f"(default {S.pretrain_epochs})", int),
    Option("--pretrain-lr", "synthetic.pretrain_lr", "learning rate of pretraining (default: --lr)", number),
    Option("--synthetic-public", "synthetic.public", "declare that the --synthetic folder holds no patient of --data "
           "(a public data set, or a generator trained only on public data): it then costs no privacy, and the "
           "ledger states the declaration; privmed refuses it when it finds an identical image, a shared patient id "
           "or a generator trained on --data", action="store_true"),
    # the run itself
    Option("--resume", help="continue an interrupted run in --out", action="store_true", default=False),
    Option("--nproc", help="DP-SGD in N processes on this machine (each takes a share of every Poisson batch; noise "
           "is added once; same epsilon); equivalent to torchrun --nproc_per_node N -m privmed train ... (default 1)",
           type=int, default=1),
    # model
    Option("--model-arg", "model.args", "a keyword argument of the network (model.args), e.g. width=0.5, J=3, "
           "init_features=32; repeat for several; checked against the network's signature (default: the network's "
           "own)", parse_model_arg, metavar="KEY=VALUE", action="append", to_config=dict),
    Option("--model-weights", "model.weights", "start from this state dict on disk (model.weights; a checkpoint "
           "holding one under 'state_dict' or 'model' works too); nothing downloads (default: random initialisation)",
           metavar="PATH"),
    Option("--freeze", "model.freeze", "backbone: train only the classifier layer (the frozen rest is computed once "
           "and is not part of DP-SGD); last_block: the last block and the classifier; bias: biases and the "
           "classifier (BiTFiT); lora: LoRA adapters (--model-arg lora_rank=8) and the classifier; needs "
           f"--model-weights; default {M.freeze}", choices=FREEZE_MODES),
    Option("--replace-batchnorm", "model.replace_batchnorm", "let Opacus's ModuleValidator.fix replace trainable "
           "BatchNorm layers by GroupNorm", action="store_true"),
    # tracking
    *TRACKING_OPTIONS,
]


def evaluation_options(*, whose: str) -> list[Option]:
    """The options of ``evaluate`` and ``compare`` after their runs: the data and how it is read and measured;
    ``whose``: the run whose settings apply by default ("the run's", "run A's")."""
    return [
        Option("--data", help=f"data set (default: {whose} data)"),
        Option("--split", help="split to evaluate (data without splits: all of it)", default="test"),
        *label_options(default=f"; default: {whose}"),
        Option("--allow-outside-data-root", help="let a manifest list images outside its own folder (e.g. absolute "
               "paths; refused by default)", action="store_true"),
        BOOTSTRAP,
    ]


def cmd_train(args: argparse.Namespace) -> int:
    """``privmed train``: the config file, overridden by the options given; checks first, then trains."""
    from privmed.reporting import run_summary
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
        print("\n".join(run_summary(out)))
    return 0


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration: the ``--config`` file, overridden by the options given, validated."""
    from privmed.config import config_from_dict, load_yaml, merge

    base = load_yaml(args.config) if args.config else {}
    return config_from_dict(merge(base, overrides(args, RUN_OPTIONS)))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``privmed evaluate``: a trained run on a data set, at its own validation thresholds."""
    from privmed.atomic import check_folder
    from privmed.evaluation.external import evaluate_run
    from privmed.reporting import metrics_table, privacy_line

    check_folder(args.run)  # the evaluation is written into the run's folder
    result, where = evaluate_run(Path(args.run), data=args.data, split=args.split, label_columns=args.label_column,
                                 positive_class=args.positive_class, class_names=args.class_names,
                                 n_resamples=args.bootstrap, allow_outside_root=args.allow_outside_data_root)
    print("\n".join(metrics_table(result, title=f"{args.run} on {result['dataset']} [{args.split}]")))
    print(f"  the run's records: {result['run_seal']}")
    print(f"  privacy: {privacy_line(Path(args.run))}")
    print(f"written to {where}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``privmed compare``: a paired bootstrap test of two runs."""
    from privmed.evaluation.external import compare_runs
    from privmed.reporting import comparison

    result = compare_runs(Path(args.run_a), Path(args.run_b), data=args.data, split=args.split,
                          label_columns=args.label_column, positive_class=args.positive_class,
                          class_names=args.class_names, n_resamples=args.bootstrap,
                          allow_outside_root=args.allow_outside_data_root)
    print("\n".join(comparison(result)))
    return 0
