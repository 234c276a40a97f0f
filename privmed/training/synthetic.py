"""Synthetic images in classifier training: where they came from, what they cost, how a model is fine-tuned.

A folder written by ``privmed synth sample`` carries the generator's privacy record
(``privacy.json``): its accounted stages are composed, through the accountant, into
the ledger of every run that uses the images. A generator trained without DP, or a
folder without a record (images of unknown origin, such as the paper's MCGAN patches,
whose GAN saw the same patients without DP), makes the run non-private, and the ledger
says why. Images made without any patient data (privmed's phantom: its record says
``data_independent``) cost nothing, and so do images the user declares public
(``synthetic.public``): privmed cannot prove that declaration, so it refuses it where
it finds the contrary and states it, as an assumption, in every ledger that relies on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from privmed import rundir, seal
from privmed.config import DataConfig, SyntheticConfig, section_from_dict
from privmed.data.duplicates import near_duplicates, pixel_hash
from privmed.data.sources import MANIFEST_NAMES, Dataset, load_dataset
from privmed.errors import PATH_MISSING, PrivmedError
from privmed.privacy.accounting import Mechanism

UNKNOWN_ORIGIN = ("The synthetic images in '{path}' carry no privmed privacy record, so their origin and privacy cost "
                  "are unknown (a generator trained on the same patients without DP can leak them); a run using "
                  "them cannot claim DP.")
NON_PRIVATE_GENERATOR = ("The synthetic images in '{path}' come from a generator trained without DP on private data "
                         "('{generator}'), so their privacy cost is unbounded.")
DECLARED_PUBLIC = ("Images in '{path}' declared public by the user (synthetic.public): they cost no privacy only if "
                   "none of them, and no generator behind them, saw a patient of the private data. Checked against the "
                   "private data: {checked}. This cannot rule out the same patient in another image")
CHECKED_IMAGES = "{n} images (none identical or nearly identical to a private image, {patients})"
NO_SHARED_PATIENT, NO_PATIENT_IDS = "no shared patient id", "no patient ids to compare"
GENERATOR_ON_PHANTOM = "its generator was trained on privmed's built-in phantom (no patient data)"
GENERATOR_DATA_UNREADABLE = "its generator's training data '{path}' could not be read from here, so it was not compared"
PUBLIC_HAS_PRIVATE_IMAGES = ("{count} image(s) in {where} are identical or nearly identical to images of the private "
                             "data (e.g. '{example}'), so the folder cannot be declared public. Remove them (a "
                             "generator trained on them must be trained again), or drop --synthetic-public (the run "
                             "is then not private).")
PUBLIC_SHARES_PATIENTS = ("{count} patient id(s) of {where} also appear in the private data (e.g. {examples}), so "
                          "the folder cannot be declared public. If they are different people, give the public set "
                          "its own ids; otherwise drop --synthetic-public.")
PUBLIC_GENERATOR_SAW_PRIVATE = ("The images in '{path}' come from generator '{generator}', which was trained on "
                                "'{trained_on}', the private data of this run, so they cannot be declared public. "
                                "Drop --synthetic-public.")
LABEL_MISMATCH = ("the synthetic images in '{path}' are labelled '{synthetic}' but the real data's target is "
                  "'{real}'. Sample them from a generator trained on this task, or set --positive-class.")


@dataclass
class SyntheticSource:
    """Synthetic images ready for training, and what they cost the private data."""

    data: Dataset
    mechanisms: list[Mechanism]
    non_private_reason: str | None
    generator: str | None  # the generator's folder, or the phantom's description; None when unknown
    free_input: str | None = None  # why the images cost nothing (phantom, declared public), for the ledger
    unit: str = "image"  # the unit of privacy of the generator's stages (records before units: image)
    upstream: tuple[str, ...] = ()  # the folder's record (and what it names) by digest and seal, for the ledger


def load_synthetic(config: SyntheticConfig, data: DataConfig, *, label_name: str,
                   private: Dataset | None = None) -> SyntheticSource:
    """Read the synthetic folder of ``config`` at the real data's image size, with its privacy record.

    With ``config.public`` the folder is checked against ``private`` (the run's data, every
    split; required then) and costs nothing.
    """
    assert config.path is not None
    root = Path(config.path)
    if not root.exists():
        raise PrivmedError(PATH_MISSING.format(what="synthetic data folder", path=root, cwd=Path.cwd()))
    images = _read_synthetic(root, data, label_name)
    if images.label_names != (label_name,):
        raise PrivmedError(LABEL_MISMATCH.format(path=root, synthetic=images.label_names[0], real=label_name))
    images.table["split"] = "train"
    if config.public:
        assert private is not None, "a folder declared public is checked against the private data"
        return _declared_public(images, root, private, data)
    return _with_origin(images, root)


def _read_synthetic(root: Path, data: DataConfig, label_name: str) -> Dataset:
    """The folder's images with the class named like the real target as positive (so a run whose
    positive class is 'benign' gets synthetic 'benign' images as positives)."""
    read_as = dataclasses.replace(data, path=str(root), label_columns=("label",), path_column="path",
                                  attribute_columns=(), positive_class=label_name or None)
    try:
        return load_dataset(read_as, require_splits=(), assign_splits=False)
    except PrivmedError:  # no class of that name: read it as it is, and say that the names differ
        if not label_name:
            raise
        images = load_dataset(dataclasses.replace(read_as, positive_class=None, class_names=None),
                              require_splits=(), assign_splits=False)
        raise PrivmedError(LABEL_MISMATCH.format(path=root, synthetic=images.label_names[0], real=label_name)) \
            from None


def _declared_public(images: Dataset, root: Path, private: Dataset, data: DataConfig) -> SyntheticSource:
    """The folder as free input, once nothing privmed can see contradicts the user's declaration:
    neither the folder nor, for privmed samples, their generator's training data overlaps the private data."""
    generator, trained_on = _generator_config(root) or (None, None)
    if trained_on is not None and _same_data(trained_on.path, data.path):
        raise PrivmedError(PUBLIC_GENERATOR_SAW_PRIVATE.format(
            path=root, generator=generator, trained_on=trained_on.path or "the built-in phantom"))
    private_hashes = {pixel_hash(image) for image in private.images}  # once, for the folder and its generator
    where = f"'{root}'"
    checked = [f"its {_no_overlap(images, private, private_hashes, where=where)}"]
    if trained_on is not None:
        checked.append(_generator_checked(generator, trained_on, private, private_hashes, data))
    return SyntheticSource(images, [], None, generator,
                           free_input=DECLARED_PUBLIC.format(path=root, checked="; ".join(checked)))


def _no_overlap(candidate: Dataset, private: Dataset, private_hashes: set[str], *, where: str) -> str:
    """Raise when ``candidate`` holds an image identical (``private_hashes``: of its pixels) or nearly
    identical (:mod:`privmed.data.duplicates`: resized, re-encoded) to a private one or shares a patient id with the private data; otherwise say what was compared."""
    copies = [i for i, image in enumerate(candidate.images) if pixel_hash(image) in private_hashes]
    exact = set(copies)
    copies += [i for i, _, _ in near_duplicates(candidate.images, private.images) if i not in exact]
    if copies:
        example = candidate.table["sample_id"].iloc[copies[0]]
        raise PrivmedError(PUBLIC_HAS_PRIVATE_IMAGES.format(count=len(copies), where=where, example=example))
    ids, private_ids = (set(d.table["patient_id"].dropna()) for d in (candidate, private))
    shared = sorted(ids & private_ids)
    if shared:
        examples = ", ".join(repr(str(p)) for p in shared[:3])
        raise PrivmedError(PUBLIC_SHARES_PATIENTS.format(count=len(shared), where=where, examples=examples))
    return CHECKED_IMAGES.format(n=len(candidate.images),
                                 patients=NO_SHARED_PATIENT if ids and private_ids else NO_PATIENT_IDS)


def _generator_checked(generator: str, trained_on: DataConfig, private: Dataset, private_hashes: set[str],
                       data: DataConfig) -> str:
    """Check the generator's training data against the private data, where it can be read from here."""
    if trained_on.path is None:
        return GENERATOR_ON_PHANTOM
    try:
        source = load_dataset(dataclasses.replace(trained_on, image_size=data.image_size), require_splits=())
    except PrivmedError:
        return GENERATOR_DATA_UNREADABLE.format(path=trained_on.path)
    where = f"'{trained_on.path}' (the training data of generator '{generator}')"
    return f"its generator's training data, {_no_overlap(source, private, private_hashes, where=where)}"


def _generator_config(root: Path) -> tuple[str, DataConfig] | None:
    """(generator folder, the data config it was trained with) for privmed samples whose generator's config
    can be read; None otherwise."""
    first_row = _manifest_first_row(root)
    if "generator" not in first_row.columns:
        return None
    generator = Path(str(first_row["generator"].iloc[0]))
    if not (generator / rundir.CONFIG).is_file():
        return None
    raw = rundir.read_config_dict(generator)  # a generator's config.yaml: its data section is a run's
    return str(generator), section_from_dict(DataConfig, raw.get("data") or {}, "data")


def _same_data(a: str | None, b: str | None) -> bool:
    """Both the built-in phantom (None), or paths to the same place from here."""
    if a is None or b is None:
        return a is None and b is None
    return Path(a).resolve() == Path(b).resolve()


def _manifest_first_row(root: Path) -> pd.DataFrame:
    manifest = next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), None)
    return pd.read_csv(manifest, nrows=1) if manifest is not None else pd.DataFrame()


def _with_origin(images: Dataset, root: Path) -> SyntheticSource:
    record = rundir.read_record(root) if (root / rundir.PRIVACY).is_file() else None  # a broken seal: refused
    upstream = ()
    if record is not None:
        verdict = seal.verify(root, [n for n in MANIFEST_NAMES if n != rundir.PRIVACY])
        if not verdict.verified and record.seal.startswith("seal verified"):
            record = dataclasses.replace(record, seal=verdict.words())
        upstream = (*record.upstream, rundir.upstream_entry(root, record))
    if record is not None and record.data_independent:
        return SyntheticSource(images, [], None, record.source,
                               free_input=f"Synthetic images from {record.source}: made without patient data, "
                                          "so they cost no privacy", upstream=upstream)
    first_row = _manifest_first_row(root)
    if record is None or "synthetic" not in first_row.columns:
        return SyntheticSource(images, [], UNKNOWN_ORIGIN.format(path=root), None, upstream=upstream)
    generator = str(first_row["generator"].iloc[0])
    if not record.private:
        return SyntheticSource(images, [], NON_PRIVATE_GENERATOR.format(path=root, generator=generator), generator,
                               upstream=upstream)
    mechanisms = [Mechanism(s.stage, float(s.noise_multiplier), float(s.sample_rate), s.steps) for s in record.stages]
    return SyntheticSource(images, mechanisms, None, generator, unit=record.unit, upstream=upstream)


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
