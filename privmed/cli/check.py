"""``privmed check``: the data and the configuration checked exactly as ``privmed train`` would, nothing trained.

It takes every option of ``train``, runs every check ``train`` makes before its first step (the configuration's
values, the output folder, the device, the data with its splits, labels, patients and pixels, the batch against
the training split, delta and a reachable epsilon, the synthetic folder), writes nothing, and prints what it found.
"""

from __future__ import annotations

import argparse

from .options import add_command
from .train import RUN_OPTIONS, run_config


def add_parsers(sub) -> None:
    """The ``check`` command: ``train``'s options."""
    add_command(sub, "check", RUN_OPTIONS, cmd_check,
                help="check data and options as `privmed train` would; train and write nothing")


def cmd_check(args: argparse.Namespace) -> int:
    """``privmed check``: exit 0 and a short summary when ``privmed train`` with these options would start."""
    from privmed.training.preflight import check_run, privacy_unit

    config = run_config(args)
    data = check_run(config, resume=args.resume)
    p = config.privacy
    print(f"privmed check: {data.name}: every check of `privmed train` passed; nothing was trained or written.")
    print(f"labels: {', '.join(data.label_names)}")
    for split in ("train", "val", "test"):
        part = data.split(split)
        patients = part.patient_ids
        who = f"{len(set(patients))} patients" if patients is not None else "no patient ids"
        positives = ", ".join(f"{int(part.table[name].sum())} {name}" for name in data.label_names)
        print(f"  {split}: {len(part)} images, {who}, {positives}")
    unit, delta = privacy_unit(config, data=data)
    print(f"unit of privacy: {unit.name} ({unit.n_units} in the training split"
          + (f", at most {unit.max_per_unit} image(s) of one per step)" if unit.name == "patient" else ")"))
    how = "" if p.delta is not None else " (default 1/(10 N))"
    if not p.private:
        print(f"privacy: NOT PRIVATE (no --epsilon or --noise-multiplier); delta would be {delta:.3g}{how}")
    elif p.noise_multiplier is not None:
        print(f"privacy: noise multiplier {p.noise_multiplier:g}, delta {delta:.3g}{how}")
    elif p.total_epsilon is not None:
        print(f"privacy: total epsilon {p.total_epsilon:g} with the upstream records the run uses, at delta "
              f"{delta:.3g}{how}")
    else:
        print(f"privacy: epsilon {p.epsilon:g} at delta {delta:.3g}{how}")
    return 0
