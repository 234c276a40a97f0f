"""The unit of privacy: whom the guarantee protects, and how a step samples them.

With ``patient`` as the unit, neighbouring data sets differ by one patient and all of
their images. DP-SGD then samples patients, not images: each step includes every
patient independently with probability ``q`` (Poisson), and a sampled patient brings
at most ``k = max_images_per_patient`` of their images, chosen afresh each step. Each
image's gradient is clipped to ``clip / k``, so a patient's whole contribution to a
step has norm at most ``clip``: the sensitivity the noise is calibrated to. With
``image`` as the unit, each image is its own group (``k = 1``): ordinary DP-SGD.

:class:`GroupPoissonSampler` is the batch sampler; it draws from a secret generator
(:mod:`privmed.privacy.randomness`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from privmed.errors import PrivmedError

UNITS = ("patient", "image")
UNIT_NEEDS_PATIENT_IDS = ("privacy.unit = 'patient' (--privacy-unit patient) needs patient ids, and the data has none. "
                          "Add a patient_id column to the manifest (data.patient_column in a --config file names it), or use "
                          "--privacy-unit image, whose guarantee covers one image and weakens for patients with "
                          "several.")


@dataclass(frozen=True)
class PrivacyUnit:
    """Who a run protects: ``name`` ('patient' or 'image'), the group of every training row
    (``groups[i]`` in 0..n_units-1) and the cap ``k`` on a group's images in one step."""

    name: str
    groups: np.ndarray
    max_per_unit: int

    @property
    def n_units(self) -> int:
        """Number of protected individuals (patients, or images)."""
        return int(self.groups.max()) + 1 if len(self.groups) else 0

    @property
    def contributions(self) -> int:
        """Images that can enter one epoch: sum over units of min(images, k)."""
        counts = np.bincount(self.groups, minlength=self.n_units)
        return int(np.minimum(counts, self.max_per_unit).sum())

    def describe(self, *, contribution: str | None = None) -> str:
        """Words for ledgers and reports; ``contribution`` says how a patient enters the mechanism when it is
        not DP-SGD's "at most k images per step"."""
        if self.name == "patient":
            contribution = contribution or f"at most {self.max_per_unit} image(s) of a patient per step"
            return f"{self.n_units} patients (one patient and all of their images; {contribution})"
        return f"{self.n_units} images (one image)"


def unit_name(requested: str | None, patient_ids: np.ndarray | None) -> str:
    """``requested``, or ``patient`` when the data has patient ids and ``image`` otherwise."""
    return requested or ("patient" if patient_ids is not None else "image")


def resolve_unit(requested: str | None, patient_ids: np.ndarray | None, *, max_images_per_patient: int,
                 n: int) -> PrivacyUnit:
    """The run's unit: ``requested``, or ``patient`` when the data has patient ids and ``image`` otherwise.

    ``patient_ids`` are the training rows' ids (None when the data has none).
    """
    name = unit_name(requested, patient_ids)
    if name == "image":
        return PrivacyUnit("image", np.arange(n, dtype=np.int64), 1)
    if patient_ids is None:
        raise PrivmedError(UNIT_NEEDS_PATIENT_IDS)
    _, groups = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    return PrivacyUnit("patient", groups.astype(np.int64), max_images_per_patient)


def group_privacy_sentence(epsilon: float, delta: float) -> str:
    """What an image-level (epsilon, delta) guarantee means for a patient with several images
    (group privacy: m images give (m epsilon, m e^{(m-1) epsilon} delta))."""
    return (f"The unit of privacy is one image: a patient with m images in the training data is protected only at "
            f"(m x epsilon, m e^((m-1) epsilon) delta) by group privacy, e.g. {_group_pair(epsilon, delta, 2)} for 2 "
            f"images and {_group_pair(epsilon, delta, 5)} for 5. Use --privacy-unit patient when the data has patient "
            f"ids.")


def _group_pair(epsilon: float, delta: float, m: int) -> str:
    """Group privacy's (m epsilon, m e^((m-1) epsilon) delta) in words; VACUOUS when that delta exceeds 1 (it then
    bounds nothing)."""
    eps, big_delta = m * epsilon, m * math.exp(min((m - 1) * epsilon, 700.0)) * delta
    pair = f"({eps:.3g}, {big_delta:.2g})"
    return pair + " (vacuous: its delta exceeds 1, so it protects nothing)" if big_delta > 1 else pair


class GroupPoissonSampler(Sampler[list[int]]):
    """Batches of row indices: each step includes every unit with probability ``sample_rate``,
    and at most ``unit.max_per_unit`` rows of an included unit, chosen uniformly afresh.

    ``steps_per_epoch`` batches per epoch (as Opacus's ``UniformWithReplacementSampler``:
    1 / sample_rate). Batches may be empty.
    """

    def __init__(self, unit: PrivacyUnit, *, sample_rate: float, steps_per_epoch: int,
                 generator: torch.Generator) -> None:
        self.unit = unit
        self.sample_rate = sample_rate
        self.steps_per_epoch = steps_per_epoch
        self.generator = generator
        order = np.argsort(unit.groups, kind="stable")
        bounds = np.searchsorted(unit.groups[order], np.arange(unit.n_units + 1))
        self._rows = [torch.from_numpy(order[bounds[g]:bounds[g + 1]]) for g in range(unit.n_units)]
        self._singletons = unit.max_per_unit == 1 and all(len(r) == 1 for r in self._rows)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps_per_epoch):
            chosen = torch.rand(self.unit.n_units, generator=self.generator) < self.sample_rate
            units = chosen.nonzero().flatten().tolist()
            if self._singletons:
                yield [int(self._rows[u][0]) for u in units]
                continue
            yield [int(i) for u in units for i in self._pick(self._rows[u])]

    def _pick(self, rows: torch.Tensor) -> torch.Tensor:
        k = self.unit.max_per_unit
        if len(rows) <= k:
            return rows
        return rows[torch.randperm(len(rows), generator=self.generator)[:k]]
