"""Synthetic images in classifier training: where they came from, what they cost, how a model is fine-tuned.

A folder written by ``privmed synth sample`` carries the generator's privacy record
(``privacy.json``): its accounted stages are composed, through the accountant, into
the ledger of every run that uses the images. A generator trained without DP, or a
folder without a record (images of unknown origin, such as the paper's MCGAN patches,
whose GAN saw the same patients without DP), makes the run non-private, and the ledger
says why. Images made without any patient data (privmed's phantom: its record says
``data_independent``) cost nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from privmed import rundir
from privmed.config import DataConfig, SyntheticConfig
from privmed.data.sources import MANIFEST_NAMES, Dataset, load_dataset
from privmed.errors import PATH_MISSING, PrivmedError
from privmed.privacy.accounting import Mechanism

UNKNOWN_ORIGIN = ("The synthetic images in '{path}' carry no privmed privacy record, so their origin and privacy cost "
                  "are unknown (a generator trained on the same patients without DP can leak them); a run using "
                  "them cannot claim DP.")
NON_PRIVATE_GENERATOR = ("The synthetic images in '{path}' come from a generator trained without DP on private data "
                         "('{generator}'), so their privacy cost is unbounded.")
LABEL_MISMATCH = ("the synthetic images in '{path}' are labelled '{synthetic}' but the real data's target is "
                  "'{real}'. Sample them from a generator trained on this task, or set --positive-class.")


@dataclass
class SyntheticSource:
    """Synthetic images ready for training, and what they cost the private data."""

    data: Dataset
    mechanisms: list[Mechanism]
    non_private_reason: str | None
    generator: str | None  # the generator's folder, or the phantom's description; None when unknown
    data_independent: bool = False  # made without any patient data (privmed's phantom): costs nothing


def load_synthetic(config: SyntheticConfig, data: DataConfig, *, label_name: str) -> SyntheticSource:
    """Read the synthetic folder of ``config`` at the real data's image size, with its privacy record."""
    assert config.path is not None
    root = Path(config.path)
    if not root.exists():
        raise PrivmedError(PATH_MISSING.format(what="synthetic data folder", path=root, cwd=Path.cwd()))
    read_as = dataclasses.replace(data, path=str(root), label_columns=("label",), path_column="path",
                                  attribute_columns=())
    images = load_dataset(read_as, require_splits=(), assign_splits=False)
    if images.label_names != (label_name,):
        raise PrivmedError(LABEL_MISMATCH.format(path=root, synthetic=images.label_names[0], real=label_name))
    images.table["split"] = "train"
    return _with_origin(images, root)


def _with_origin(images: Dataset, root: Path) -> SyntheticSource:
    record_path = root / rundir.PRIVACY
    record = rundir.read_json(record_path) if record_path.is_file() else None
    if record is not None and record.get("data_independent", False):
        return SyntheticSource(images, [], None, record["source"], data_independent=True)
    manifest = next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), None)
    first_row = pd.read_csv(manifest, nrows=1) if manifest is not None else pd.DataFrame()
    if record is None or "synthetic" not in first_row.columns:
        return SyntheticSource(images, [], UNKNOWN_ORIGIN.format(path=root), None)
    generator = str(first_row["generator"].iloc[0])
    if not record.get("private", False):
        return SyntheticSource(images, [], NON_PRIVATE_GENERATOR.format(path=root, generator=generator), generator)
    mechanisms = [Mechanism(s["stage"], float(s["noise_multiplier"]), float(s["sample_rate"]), int(s["steps"]))
                  for s in record["stages"]]
    return SyntheticSource(images, mechanisms, None, generator)


def classifier_layer(net: nn.Module) -> nn.Linear:
    """The last linear layer: the 'head' that fine-tuning may re-initialise or train alone."""
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise PrivmedError("this model has no linear output layer, so synthetic.finetune = 'head' and "
                           "synthetic.reinit_head do not apply; use finetune 'full' without reinit_head.")
    return linear[-1]


def prepare_finetune(net: nn.Module, *, finetune: str, reinit_head: bool) -> None:
    """After pretraining: freeze everything but the head (``finetune='head'``) and/or reset the head."""
    head = classifier_layer(net) if (finetune == "head" or reinit_head) else None
    if reinit_head:
        head.reset_parameters()
    if finetune == "head":
        net.requires_grad_(False)
        head.requires_grad_(True)
