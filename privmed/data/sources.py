"""Turning whatever the user points ``--data`` at into one table of samples.

Every source ends as a :class:`Dataset`: a table with one row per image
(``sample_id``, ``split``, ``patient_id``, one 0/1 column per target, the
attribute columns) and the images themselves, resized, in memory.

Sources, tried in order (first that matches wins, see :data:`SOURCES`):

* ``*.npz`` in MedMNIST layout (``{split}_images``, ``{split}_labels``);
* a CSV manifest (a ``.csv`` file, or a folder holding ``metadata.csv``/``manifest.csv``)
  with a path column, label column(s), and optionally split, patient id and attributes;
* a class-folder tree, ``ROOT/<split>/<class>/*`` or ``ROOT/<class>/*`` (PNG, JPEG,
  DICOM, NIfTI).

DICOM files carry their patient: without a patient column, the patient id is the file's
PatientID (else its StudyInstanceUID), so splits made by privmed are patient-disjoint.

``path=None`` gives the built-in mammography phantom.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from privmed.config import DataConfig
from privmed.errors import (
    CLASS_NAMES_FROM_FOLDERS,
    DUPLICATE_PATHS,
    EMPTY_CLASS_FOLDER,
    IDENTICAL_ACROSS_SPLITS,
    MANIFEST_NOT_CSV,
    MISSING_COLUMN,
    NOT_UTF8,
    NPZ_BAD_ARRAY,
    ONE_CLASS_SPLIT,
    OUTSIDE_DATA_ROOT,
    PATH_BLANK,
    PATH_MISSING,
    PrivmedError,
)
from privmed.progress import progress

from .duplicates import pixel_hash
from .images import dicom_patient, is_image_file, read_image, resize
from .labels import binarise, names_from_folders
from .lazy import LazyImages, streams
from .npz import npz_split, read_npz
from .rows import check_manifest_rows, check_patient_disjoint, check_split_names

LOG = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
MANIFEST_NAMES = ("metadata.csv", "manifest.csv")
RESERVED_COLUMNS = {"sample_id", "split", "patient_id", "path", "class"}


@dataclass
class Dataset:
    """Images plus their table. ``images[i]`` belongs to ``table.iloc[i]``.

    ``label_names`` are the target columns of ``table`` (0/1 each): one for a binary
    task (named after the positive class), several for multi-label.
    Attribute columns travel with every prediction but are never model inputs.
    """

    name: str
    table: pd.DataFrame
    images: np.ndarray | LazyImages  # float32 (N, H, W) or (N, D, H, W), values in [0, 1]; or read on access
    label_names: tuple[str, ...]
    attribute_columns: tuple[str, ...]
    notes: tuple[str, ...] = ()  # what privmed decided about the data that the user should hear once

    def split(self, name: str) -> "Dataset":
        """The rows of one split (empty if the split does not exist)."""
        mask = (self.table["split"] == name).to_numpy()
        return Dataset(self.name, self.table[mask].reset_index(drop=True), self.images[mask],
                       self.label_names, self.attribute_columns, self.notes)

    @property
    def image_tensor(self) -> torch.Tensor:
        """Images as a model batch: float32 (N, 1, *spatial), sharing memory with ``images`` (decoded on
        access when the data is streamed: :class:`~privmed.data.lazy.LazyImageTensor`)."""
        if isinstance(self.images, LazyImages):
            return self.images.tensor()
        return torch.from_numpy(self.images).unsqueeze(1)

    @property
    def labels(self) -> np.ndarray:
        """Targets as float32 (N, n_labels)."""
        return self.table[list(self.label_names)].to_numpy(dtype=np.float32, copy=True)

    @property
    def patient_ids(self) -> np.ndarray | None:
        """Patient ids, or None when the source has none (bootstraps then resample images)."""
        col = self.table["patient_id"]
        return None if col.isna().all() else col.astype(str).to_numpy()

    def __len__(self) -> int:
        return len(self.table)


def load_dataset(config: DataConfig, *, require_splits: tuple[str, ...] = SPLITS,
                 assign_splits: bool = True, stream: bool | None = False) -> Dataset:
    """Read the data a :class:`DataConfig` names, check it, and split it if it has no splits.

    ``stream``: image files (a manifest or class folders) are read when used
    (:class:`~privmed.data.lazy.LazyImages`), not all at once; the checks then decode them one at a
    time. None: as ``config.stream`` says (auto: when the data is large; :func:`~privmed.data.lazy.streams`).

    Raises :class:`PrivmedError` with a message saying what to fix for a missing path,
    an empty class folder, an unreadable image, a missing label column, non-binary
    labels, a split with one class, or a patient in two splits.
    """
    if config.path is None:
        ds = _load_phantom(config)
    else:
        root = Path(config.path)
        if not root.exists():
            raise PrivmedError(PATH_MISSING.format(what="data path", path=root, cwd=os.getcwd()))
        loader = next((load for matches, load in SOURCES if matches(root)), None)
        if loader is None:
            raise PrivmedError(
                f"cannot tell what '{root}' holds: expected a MedMNIST .npz, a CSV manifest (or a folder with "
                f"{' or '.join(MANIFEST_NAMES)}), or class folders of images.")
        ds = loader(root, config, stream=stream)
    if assign_splits and ds.table["split"].isna().all():
        ds.table["split"] = _random_patient_split(ds.table, config, seed=config.seed)
    if require_splits:  # training: a row of another split would be silently left out
        check_split_names(ds.table, SPLITS, source=str(config.path))
    check_dataset(ds, require_splits=require_splits)
    if "path" in ds.table:  # files the user gave (the phantom and MedMNIST arrays are as published)
        check_no_copies_across_splits(ds)
    for note in ds.notes:
        if note not in _SAID:  # once per process, however often the data is read
            _SAID.add(note)
            LOG.warning(note)
    return ds


_SAID: set[str] = set()


def check_dataset(ds: Dataset, *, require_splits: tuple[str, ...]) -> None:
    """Patient-disjoint splits, both classes in every required split."""
    check_patient_disjoint(ds.table)
    for split in require_splits:
        part = ds.table[ds.table["split"] == split]
        if part.empty:
            raise PrivmedError(f"the data has no '{split}' split (found: {sorted(ds.table['split'].unique())}). "
                               f"Add one, or give data without a split column so privmed splits it.")
        for label in ds.label_names:
            values = part[label].unique()
            if len(values) < 2:
                raise PrivmedError(ONE_CLASS_SPLIT.format(split=split, cls=f"{label}={values[0]}", n=len(part)))


def check_no_copies_across_splits(ds: Dataset) -> None:
    """Raise if an image of one split is pixel-identical (at the loaded size) to one of another split."""
    digests = [pixel_hash(image) for image in progress(ds.images, desc="checking images for copies across splits", unit="img")]
    table = pd.DataFrame({"digest": digests, "split": ds.table["split"].astype(str).to_numpy(),
                          "sample": ds.table["sample_id"].astype(str).to_numpy()})
    first = table.drop_duplicates(["digest", "split"])
    shared = first[first.duplicated("digest", keep=False)]
    if len(shared):
        copies = shared.groupby("digest")
        a, b = next(iter(copies))[1].iloc[:2].itertuples(index=False)
        raise PrivmedError(IDENTICAL_ACROSS_SPLITS.format(n=copies.ngroups, a=a.split, b=b.split, x=a.sample,
                                                          y=b.sample))


# --------------------------------------------------------------------------- sources


def _load_phantom(config: DataConfig) -> Dataset:
    from .phantom import CLASS_DIRS, PhantomSpec, generate_phantom

    if config.spatial_dims != 2:
        raise PrivmedError("the built-in phantom is 2D; give --data for 3D volumes.")
    images, table = generate_phantom(PhantomSpec(n_samples=config.phantom_samples, image_size=config.image_size,
                                                 seed=config.seed))
    table, names = binarise(table, ["label"], config, source=Path("built-in phantom"), data_names=CLASS_DIRS)
    attrs = ("breast_density", "age_group")
    return Dataset("phantom", table[["sample_id", "split", "patient_id", *names, *attrs]].copy(),
                   images.astype(np.float32), names, attrs)


def _is_npz(root: Path) -> bool:
    return root.is_file() and root.suffix == ".npz"


def _load_npz(root: Path, config: DataConfig, *, stream: bool | None = False) -> Dataset:  # arrays: read at once
    arrays = read_npz(root, SPLITS)
    floats = [images for images, _ in arrays.values() if images.dtype.kind == "f"]
    float_max = max((float(np.nanmax(images)) for images in floats if np.isfinite(images).any()), default=1.0)
    parts = [npz_split(root, split, images, labels, config, float_max=float_max)
             for split, (images, labels) in arrays.items()]
    widths = {split: len([c for c in t.columns if c.startswith("label")]) for split, (_, t) in zip(arrays, parts)}
    first, *others = widths
    for split in others:
        if widths[split] != widths[first]:
            raise PrivmedError(NPZ_BAD_ARRAY.format(
                path=root, key=f"{split}_labels", split="each split's", problem=f"has {widths[split]} column(s) but "
                f"'{first}_labels' {widths[first]} (one-hot labels in one split only?)"))
    table = pd.concat([t for _, t in parts], ignore_index=True)
    images = np.concatenate([i for i, _ in parts])
    label_cols = [c for c in table.columns if c.startswith("label")]
    table, names = binarise(table, label_cols, config, source=root)
    return Dataset(root.stem, table, images, names, ())


def _manifest_path(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    if root.is_dir():
        return next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), None)
    return None


def _load_manifest(root: Path, config: DataConfig, *, stream: bool | None = False) -> Dataset:
    manifest = _manifest_path(root)
    assert manifest is not None
    table = read_manifest(manifest, text_columns=(config.patient_column, config.split_column))
    check_manifest_rows(table, manifest, split_column=config.split_column, patient_column=config.patient_column)
    base = manifest.parent
    required = [config.path_column, *config.label_columns]
    for column in required:
        if column not in table.columns:
            raise PrivmedError(MISSING_COLUMN.format(path=manifest, column=column, columns=list(table.columns)))
    blank = table[config.path_column].isna() | table[config.path_column].astype(str).str.strip().eq("")
    if blank.any():
        raise PrivmedError(PATH_BLANK.format(path=manifest, n=int(blank.sum()), column=config.path_column,
                                             row=int(blank.to_numpy().nonzero()[0][0]) + 2))
    table = table.rename(columns={config.path_column: "path"})
    table["sample_id"] = table["path"].astype(str)
    table["split"] = table[config.split_column].astype(str) if config.split_column in table.columns else np.nan
    if config.patient_column in table.columns:
        table["patient_id"] = table[config.patient_column].astype(str)
    else:  # DICOM files say whose they are
        patients = [dicom_patient(base / p) if (base / p).is_file() else None for p in table["path"].astype(str)]
        table["patient_id"] = [np.nan if p is None else p for p in patients]
    folders = names_from_folders(table, list(config.label_columns), config)
    table, names = binarise(table, list(config.label_columns), config, source=manifest,
                            data_names=folders[0] if folders else None)
    notes = () if folders is None else (CLASS_NAMES_FROM_FOLDERS.format(
        manifest=manifest, column=config.label_columns[0], zero=folders[0][0], one=folders[0][1], where=folders[1]),)
    if config.attribute_columns is None:
        skip = RESERVED_COLUMNS | set(names) | set(config.label_columns) | {config.split_column, config.patient_column}
        attrs = tuple(c for c in table.columns if c not in skip)
    else:
        missing = [c for c in config.attribute_columns if c not in table.columns]
        if missing:
            raise PrivmedError(MISSING_COLUMN.format(path=manifest, column=missing[0], columns=list(table.columns)))
        attrs = tuple(config.attribute_columns)
    paths = [Path(os.path.normpath(base / p)) for p in table["path"].astype(str)]
    _check_paths(paths, manifest, allow_outside=config.allow_outside_root)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PrivmedError(PATH_MISSING.format(what=f"image listed in {manifest.name} ({len(missing)} missing, first)",
                                               path=missing[0], cwd=os.getcwd()))
    images = _read_all(paths, config, stream=stream)
    keep = ["sample_id", "split", "patient_id", *names, *attrs, "path"]
    name = root.stem if root.is_file() else root.name
    return Dataset(name, table[keep].copy(), images, names, attrs, notes)


def read_manifest(manifest: Path, *, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV manifest as a table (``text_columns`` read as written: patient "007" stays "007"); refuses text
    that is not UTF-8 or not CSV."""
    try:
        return pd.read_csv(manifest, encoding="utf-8", dtype={c: str for c in text_columns})
    except UnicodeDecodeError as err:
        raise PrivmedError(NOT_UTF8.format(path=manifest, position=err.start,
                                           byte=hex(err.object[err.start]))) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PrivmedError(MANIFEST_NOT_CSV.format(path=manifest, reason=str(err).strip())) from None


def _check_paths(paths: list[Path], manifest: Path, *, allow_outside: bool) -> None:
    """No image listed twice; none outside the manifest's folder unless allowed."""
    counts = pd.Series([str(p) for p in paths]).value_counts()
    repeated = list(counts[counts > 1].index)
    if repeated:
        raise PrivmedError(DUPLICATE_PATHS.format(path=manifest, n=len(set(repeated)), example=repeated[0]))
    root = Path(os.path.normpath(manifest.parent.absolute()))
    outside = [p for p in paths if not allow_outside and not Path(os.path.normpath(p.absolute())).is_relative_to(root)]
    if outside:
        raise PrivmedError(OUTSIDE_DATA_ROOT.format(path=manifest, n=len(outside), root=root, example=outside[0]))


def _is_folder_tree(root: Path) -> bool:
    return root.is_dir()


def _load_folder_tree(root: Path, config: DataConfig, *, stream: bool | None = False) -> Dataset:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    has_splits = bool(subdirs) and all(d.name in SPLITS for d in subdirs)
    rows = []
    for split_dir in subdirs if has_splits else [root]:
        class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir())
        if not class_dirs:
            raise PrivmedError(f"'{split_dir}' has no class folders. Lay images out as ROOT/<class>/*.png "
                               f"or ROOT/<split>/<class>/*.png.")
        for class_dir in class_dirs:
            files = sorted(f for f in class_dir.rglob("*") if f.is_file() and is_image_file(f))
            if not files:
                raise PrivmedError(EMPTY_CLASS_FOLDER.format(path=class_dir))
            for f in files:
                patient = dicom_patient(f)
                rows.append({"sample_id": str(f.relative_to(root)), "path": str(f),
                             "split": split_dir.name if has_splits else np.nan,
                             "patient_id": np.nan if patient is None else patient, "class": class_dir.name})
    table = pd.DataFrame(rows)
    table, names = binarise(table, ["class"], config, source=root)
    images = _read_all([Path(p) for p in table["path"]], config, stream=stream)
    return Dataset(root.name, table[["sample_id", "split", "patient_id", *names, "path"]].copy(), images, names, ())


SOURCES: tuple[tuple[Callable[[Path], bool], Callable[..., Dataset]], ...] = (
    (_is_npz, _load_npz),
    (lambda root: _manifest_path(root) is not None, _load_manifest),
    (_is_folder_tree, _load_folder_tree),
)


# --------------------------------------------------------------------------- helpers


def _read_all(paths: list[Path], config: DataConfig, *, stream: bool | None = False) -> np.ndarray | LazyImages:
    if stream is None:
        stream = streams(len(paths), image_size=config.image_size, spatial_dims=config.spatial_dims,
                         setting=config.stream)
    if stream:
        return LazyImages(paths, size=config.image_size, spatial_dims=config.spatial_dims)
    images = [read_image(p, size=config.image_size, spatial_dims=config.spatial_dims)
              for p in progress(paths, desc="reading images", unit="img")]
    return np.stack(images).astype(np.float32)


def _random_patient_split(table: pd.DataFrame, config: DataConfig, *, seed: int) -> np.ndarray:
    """Assign train/val/test at random, keeping each patient's images together."""
    groups = table["patient_id"].where(table["patient_id"].notna(), table["sample_id"]).astype(str).to_numpy()
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(unique)
    n_test = int(round(config.test_fraction * len(unique)))
    n_val = int(round(config.val_fraction * len(unique)))
    assignment = {g: "test" for g in unique[:n_test]}
    assignment.update({g: "val" for g in unique[n_test:n_test + n_val]})
    assignment.update({g: "train" for g in unique[n_test + n_val:]})
    return np.array([assignment[g] for g in groups])
