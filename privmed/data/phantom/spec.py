"""The phantom's parameters (:class:`PhantomSpec`) and the population constants they draw from."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from privmed.errors import PrivmedError

#: Target fraction of dense (fibroglandular) tissue for BI-RADS density 1-4.
DENSE_FRACTION = {1: 0.10, 2: 0.30, 3: 0.55, 4: 0.80}
#: Share of patients in BI-RADS density 1-4 (a screening population, slightly
#: flattened so that the extreme categories are large enough to evaluate).
DENSITY_PREVALENCE = (0.15, 0.35, 0.35, 0.15)
#: Column order of the table returned by :func:`generate_phantom`.
TABLE_COLUMNS = (
    "sample_id", "label", "split", "patient_id", "breast_density", "age", "age_group", "shape",
)
#: Column order of the ``metadata.csv`` written by :func:`write_phantom_dataset`.
MANIFEST_COLUMNS = ("path", "split", "label", "class", "patient_id", "breast_density", "age", "age_group")
SPLITS = ("train", "val", "test")
CLASS_DIRS = ("benign", "malignant")
#: Findings a multi-label phantom can draw (``PhantomSpec.findings``): each becomes a 0/1 column of the
#: table and the manifest, after the columns above.
FINDINGS = ("mass", "calcification", "distortion")
#: Chance that a benign / malignant patient shows a finding (each finding drawn on its own).
FINDING_PREVALENCE = (0.4, 0.6)

# Standard-normal quantiles Phi^-1(1 - p) for the dense fractions above, and the
# density thresholds Phi^-1(cumsum(DENSITY_PREVALENCE)[:3]).
_DENSE_THRESHOLD = {1: 1.2816, 2: 0.5244, 3: -0.1257, 4: -0.8416}
_DENSITY_CUTS = np.array([-1.0364, 0.0, 1.0364])

# Latent lesion "suspiciousness" u ~ Beta: benign skewed low, malignant high.
# These two pairs set the intrinsic difficulty of the task.
_U_BENIGN = (1.6, 3.6)
_U_MALIGNANT = (3.6, 1.6)
_HARMONICS = np.arange(2, 9)        # radial harmonics k = 2..8 of the lesion contour
_MAX_SPICULES = 14
_F_MIN_CYCLES = 1.0                 # spectrum flat below 1 cycle per patch
_PIXEL_BUDGET = 1 << 21             # pixels of Fourier canvas rendered per chunk


class PhantomSpecError(PrivmedError, ValueError):
    """An invalid :class:`PhantomSpec` value (a ``ValueError`` and a ``PrivmedError``)."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PhantomSpec:
    """Parameters of the in-silico mammography mass phantom.

    Attributes:
        n_samples: number of image patches (>= 12 and >= 6 * images_per_patient,
            so that every split can hold patients of both classes).
        image_size: side of the square patches in pixels (32-1024; 64, 128 and
            224 are the tested sizes). Anatomy scales with the patch, so the
            same seed gives the same scene at every size, only sampled finer.
        seed: non-negative integer seed; the same spec gives bit-identical output.
        malignant_fraction: target share of malignant patients, in (0, 1).
        images_per_patient: each patient gets 1..k patches (like CC/MLO views);
            ``patient_id`` groups them and splits never separate them.
        split_fractions: (train, val, test) shares of patients, each > 0,
            summing to 1. Splits are patient-disjoint and stratified by label.
        findings: empty (the default): every image shows one mass, the classic binary
            phantom. Otherwise a multi-label phantom: each patient shows each listed finding
            of :data:`FINDINGS` (mass, calcification cluster, architectural distortion) or
            not, independently (more often when malignant), so an image has none, one or
            several; each finding is a 0/1 column, both values in every split.

    Raises:
        PhantomSpecError: (a ``ValueError``) when a value is out of range.
    """

    n_samples: int = 2000
    image_size: int = 64
    seed: int = 0
    malignant_fraction: float = 0.5
    images_per_patient: int = 2
    split_fractions: tuple[float, float, float] = field(default=(0.6, 0.2, 0.2))
    findings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validate every field and normalise numeric types (e.g. numpy ints, lists)."""
        if not _is_int(self.images_per_patient) or self.images_per_patient < 1:
            raise PhantomSpecError(
                f"images_per_patient={self.images_per_patient!r} must be an integer >= 1 "
                "(the most patches one patient contributes, e.g. 2 for CC and MLO views)."
            )
        min_n = max(12, 6 * int(self.images_per_patient))
        if not _is_int(self.n_samples) or self.n_samples < min_n:
            raise PhantomSpecError(
                f"n_samples={self.n_samples!r} must be an integer >= {min_n} "
                f"(at least 12 and 6 x images_per_patient, so that train, val and test "
                "each get patients of both classes)."
            )
        if not _is_int(self.image_size) or not 32 <= self.image_size <= 1024:
            raise PhantomSpecError(
                f"image_size={self.image_size!r} must be an integer between 32 and 1024 pixels "
                "(64, 128 and 224 are typical)."
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise PhantomSpecError(f"seed={self.seed!r} must be a non-negative integer.")
        if not _is_real(self.malignant_fraction) or not 0.0 < self.malignant_fraction < 1.0:
            raise PhantomSpecError(
                f"malignant_fraction={self.malignant_fraction!r} must be a number strictly "
                "between 0 and 1 (both classes are needed)."
            )
        fr = self.split_fractions
        if (
            isinstance(fr, (str, bytes))
            or not isinstance(fr, Sequence)
            or len(fr) != 3
            or not all(_is_real(f) and f > 0 for f in fr)
            or abs(float(sum(fr)) - 1.0) > 1e-6
        ):
            raise PhantomSpecError(
                f"split_fractions={fr!r} must be three positive numbers (train, val, test) "
                "that sum to 1, e.g. (0.6, 0.2, 0.2)."
            )
        findings = self.findings.split(",") if isinstance(self.findings, str) else list(self.findings)
        findings = [str(f).strip() for f in findings if str(f).strip()]
        if not set(findings) <= set(FINDINGS) or len(set(findings)) != len(findings):
            raise PhantomSpecError(f"findings={self.findings!r} must list different findings among {list(FINDINGS)}, "
                                   "e.g. mass,calcification,distortion.")
        object.__setattr__(self, "findings", tuple(findings))
        for name in ("n_samples", "image_size", "seed", "images_per_patient"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "malignant_fraction", float(self.malignant_fraction))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in fr))
