"""In-silico mammography mass phantom: a built-in, download-free data set.

Many hospital machines cannot download public data sets, so privmed ships its
own generator of 2D mammography *mass* patches (regions of interest centred on a
lesion, like the crops of CBIS-DDSM). Everything here is privmed's own code and
fully deterministic: the same :class:`PhantomSpec` gives bit-identical output.

What a patch contains
---------------------
* **Anatomical background.** A Gaussian random field with a power-law spectrum
  ``P(f) ~ 1/f^beta`` (beta drawn per patient in [2.8, 3.2], the value measured
  on real mammograms) made by filtering white noise in the Fourier domain, with
  a mild orientation preference (fibroglandular tissue runs towards the nipple).
  A soft threshold turns it into *dense* (bright) fibroglandular tissue over a
  fatty (dark) background. The dense fraction follows the patient's BI-RADS
  density: about 10 %, 30 %, 55 % and 80 % for densities 1-4. A smooth
  thickness gradient and mild quantum noise are added.
* **A mass.** Benign masses are round or oval with a sharp, circumscribed
  margin; malignant masses are irregular (random radial harmonics, ill-defined
  margin) or spiculated (thin bright lines radiating from the mass). Each lesion
  has a latent "suspiciousness" in [0, 1] that drives irregularity, margin blur
  and spiculation; its distributions overlap between the classes (some benign
  masses are lobulated, some cancers are small and fairly round), so the task is
  not trivially separable.
* **Masking by dense tissue.** The mass contrast is lowered where it lies on
  dense tissue, and dense tissue has the same brightness and texture scale as
  the mass, so lesions are harder to see in dense breasts: classifier
  performance drops with density, a subgroup effect for fairness analysis.
* **Subgroup attributes.** Every patient has an age (40-79) and a BI-RADS
  density (1-4); density falls mildly with age and malignancy rises mildly with
  age (and density), as in screening populations. A patient contributes 1 to
  ``images_per_patient`` patches (like CC/MLO views of the same lesion: same
  label and lesion type, re-drawn view), and splits are patient-disjoint.

Run ``python -m privmed.data.phantom --out grid.png`` to look at samples, or
``--dataset DIR`` to write a folder data set with a ``metadata.csv`` manifest.
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from privmed import rundir
from privmed.errors import FOLDER_NOT_EMPTY, PrivmedError

__all__ = [
    "PhantomSpec",
    "PhantomSpecError",
    "generate_phantom",
    "write_phantom_dataset",
    "write_image_grid",
    "main",
]

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

    Raises:
        PhantomSpecError: (a ``ValueError``) when a value is out of range.
    """

    n_samples: int = 2000
    image_size: int = 64
    seed: int = 0
    malignant_fraction: float = 0.5
    images_per_patient: int = 2
    split_fractions: tuple[float, float, float] = field(default=(0.6, 0.2, 0.2))

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
        for name in ("n_samples", "image_size", "seed", "images_per_patient"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "malignant_fraction", float(self.malignant_fraction))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in fr))


# --------------------------------------------------------------------------- #
# Population: patients, attributes, labels, splits, lesion parameters
# --------------------------------------------------------------------------- #

def _allocate(n: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Split ``n >= len(fractions)`` items into counts by largest remainder, each >= 1."""
    raw = np.asarray(fractions) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    while (counts < 1).any():
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def _draw_population(spec: PhantomSpec, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Draw patients, their attributes and every per-image rendering parameter."""
    n, k = spec.n_samples, spec.images_per_patient

    # Patients with 1..k images each, until n images are reached.
    per_patient = rng.integers(1, k + 1, size=n)
    ends = np.cumsum(per_patient)
    n_pat = int(np.searchsorted(ends, n) + 1)
    per_patient = per_patient[:n_pat].copy()
    per_patient[-1] -= int(ends[n_pat - 1] - n)
    img_patient = np.repeat(np.arange(n_pat), per_patient)

    # Age 40-79 (screening population), density falls mildly with age.
    age = 40 + np.floor(40 * rng.beta(1.4, 1.8, size=n_pat)).astype(int)
    age_z = (age + 0.5 - 57.5) / 9.7
    rho = 0.3
    latent = math.sqrt(1 - rho**2) * rng.standard_normal(n_pat) - rho * age_z
    density = 1 + np.searchsorted(_DENSITY_CUTS, latent)

    # Malignancy rises mildly with age and density; exact patient-level prevalence.
    score = 0.35 * age_z + 0.15 * (density - 2.5) + rng.logistic(size=n_pat)
    n_mal = int(np.clip(round(spec.malignant_fraction * n_pat), 3, n_pat - 3))
    malignant = np.zeros(n_pat, dtype=bool)
    malignant[np.argsort(-score, kind="stable")[:n_mal]] = True

    # Patient-disjoint splits, stratified by label (every split gets both classes).
    split = np.empty(n_pat, dtype=object)
    for cls in (False, True):
        members = rng.permutation(np.flatnonzero(malignant == cls))
        bounds = np.cumsum(_allocate(len(members), spec.split_fractions))[:-1]
        for name, part in zip(SPLITS, np.split(members, bounds)):
            split[part] = name

    # Lesion type and latent suspiciousness u.
    r = rng.random(n_pat)
    shape = np.where(malignant, np.where(r < 0.5, "spiculated", "irregular"),
                     np.where(r < 0.4, "round", "oval"))
    u = np.where(malignant, rng.beta(*_U_MALIGNANT, size=n_pat), rng.beta(*_U_BENIGN, size=n_pat))

    # Per-patient lesion and anatomy (shared by the patient's views).
    nh = len(_HARMONICS)
    aspect = np.select(
        [shape == "round", shape == "oval"],
        [rng.uniform(1.0, 1.15, n_pat), rng.uniform(1.25, 1.9, n_pat)],
        rng.uniform(1.0, 1.6, n_pat),
    )
    # Contour harmonics: benign energy sits in low k (smooth lobulation), suspicious
    # lesions get a flatter spectrum (jagged, micro-lobulated) and more of it.
    slope = 2.2 - 1.7 * u
    weights = _HARMONICS[None, :] ** (-slope[:, None] / 2)
    coef = weights * rng.standard_normal((n_pat, nh))
    coef /= np.sqrt((coef**2).sum(axis=1, keepdims=True)) + 1e-12
    irregularity = (0.03 + 0.32 * u**1.3) * rng.uniform(0.7, 1.3, n_pat)
    amp = coef * irregularity[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n_pat, nh))
    edge = 0.35 + 2.6 * u**1.5 * rng.uniform(0.5, 1.5, n_pat)            # margin width, px @64
    edge = np.where(shape == "spiculated", 0.5 * edge, edge)   # a dense core with radiating lines
    n_spic = np.where(shape == "spiculated",
                      np.clip(np.round((3 + 11 * u) * rng.uniform(0.6, 1.1, n_pat)), 2, _MAX_SPICULES),
                      0).astype(int)
    spic_angle = rng.uniform(0, 2 * np.pi, (n_pat, _MAX_SPICULES))
    spic_len = (0.7 + 1.2 * u)[:, None] * rng.uniform(0.6, 1.3, (n_pat, _MAX_SPICULES))  # x R
    spic_width = rng.uniform(0.7, 1.2, (n_pat, _MAX_SPICULES))          # px @64
    spic_rel = rng.uniform(0.7, 1.1, n_pat) * (0.55 + 0.45 * u)           # x lesion contrast
    radius = rng.uniform(0.12, 0.25, n_pat)                              # x image size
    contrast = rng.uniform(0.24, 0.44, n_pat) * np.where(shape == "spiculated", 1.15, 1.0)
    beta = rng.uniform(2.8, 3.2, n_pat)
    tissue_angle = rng.uniform(0, np.pi, n_pat)
    tissue_aniso = rng.uniform(0.2, 1.2, n_pat)
    fat = rng.uniform(0.16, 0.28, n_pat)
    dense_gain = rng.uniform(0.28, 0.38, n_pat)
    masking = rng.uniform(0.5, 0.85, n_pat)

    # Per-image view jitter of the same lesion and anatomy.
    p = img_patient
    m = n
    params = {
        "malignant": malignant[p],
        "density": density[p],
        "beta": beta[p],
        "tissue_angle": tissue_angle[p] + rng.normal(0, 0.3, m),
        "tissue_aniso": tissue_aniso[p],
        "threshold": np.array([_DENSE_THRESHOLD[d] for d in density])[p] + rng.normal(0, 0.25, m),
        "softness": rng.uniform(0.45, 0.75, m),
        "fat": fat[p] + rng.normal(0, 0.01, m),
        "dense_gain": dense_gain[p] + rng.normal(0, 0.01, m),
        "ramp": rng.uniform(0.0, 0.18, m),
        "ramp_angle": rng.uniform(0, 2 * np.pi, m),
        "noise": rng.uniform(0.008, 0.025, m),
        "masking": masking[p],
        "cx": rng.normal(0, 0.05, m),
        "cy": rng.normal(0, 0.05, m),
        "radius": radius[p] * rng.uniform(0.9, 1.1, m),
        "aspect": aspect[p],
        "orient": rng.uniform(0, np.pi, n_pat)[p] + rng.normal(0, 0.35, m),
        "amp": amp[p],
        "phase": phase[p] + rng.normal(0, 0.25, (m, nh)),
        "edge": edge[p] * rng.uniform(0.85, 1.15, m),
        "contrast": contrast[p] * rng.uniform(0.85, 1.15, m),
        "n_spic": n_spic[p],
        "spic_angle": spic_angle[p] + rng.normal(0, 0.12, (m, _MAX_SPICULES)),
        "spic_len": spic_len[p],
        "spic_width": spic_width[p],
        "spic_rel": spic_rel[p],
    }
    # The views of a patient share the lesion rotation up to the jitter above.
    width = max(5, len(str(n - 1)))
    pwidth = max(5, len(str(n_pat - 1)))
    decade = (age // 10) * 10
    table = pd.DataFrame({
        "sample_id": [f"phantom_{i:0{width}d}" for i in range(n)],
        "label": malignant[p].astype(np.int64),
        "split": split[p].astype(str),
        "patient_id": [f"phantom_p{j:0{pwidth}d}" for j in p],
        "breast_density": density[p].astype(np.int64),
        "age": age[p].astype(np.int64),
        "age_group": [f"{d}-{d + 9}" for d in decade[p]],
        "shape": shape[p].astype(str),
    }, columns=list(TABLE_COLUMNS))
    return table, params


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #

def _background(prm: dict, sl: slice, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Power-law anatomical background and its dense-tissue map for a chunk of images."""
    b = sl.stop - sl.start
    canvas = 2 * size                                       # avoid FFT wrap-around in the crop
    fy = np.fft.fftfreq(canvas).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(canvas).astype(np.float32)[None, :]
    f = np.hypot(fx, fy)
    # Power law above a low-frequency cutoff (structures no larger than ~the patch).
    logf = np.log(np.maximum(f, _F_MIN_CYCLES / size))[None]
    theta = np.arctan2(fy, fx)[None]
    beta = prm["beta"][sl].astype(np.float32)[:, None, None]
    ang = prm["tissue_angle"][sl].astype(np.float32)[:, None, None]
    aniso = prm["tissue_aniso"][sl].astype(np.float32)[:, None, None]
    # Amplitude f^(-beta/2) (power 1/f^beta) with a mild preferred orientation.
    dtheta = np.sin(theta - ang)
    amplitude = np.exp(-0.5 * beta * logf) * (1.0 + aniso * np.exp(-0.5 * (dtheta / 0.35) ** 2))
    amplitude[:, 0, 0] = 0.0
    white = rng.standard_normal((b, canvas, canvas // 2 + 1, 2), dtype=np.float32)
    spectrum = (white[..., 0] + 1j * white[..., 1]) * amplitude
    g = np.fft.irfft2(spectrum, s=(canvas, canvas), axes=(1, 2))[:, :size, :size].astype(np.float32)
    g -= g.mean(axis=(1, 2), keepdims=True)
    g /= g.std(axis=(1, 2), keepdims=True) + 1e-12

    soft = prm["softness"][sl].astype(np.float32)[:, None, None]
    # E[sigmoid((g - t') / s)] = Phi(-t) for g ~ N(0, 1) when t' = t * sqrt(1 + 8 s^2 / pi)
    # (probit approximation), so the dense fraction matches DENSE_FRACTION.
    thr = prm["threshold"][sl].astype(np.float32)[:, None, None] * np.sqrt(1.0 + 8.0 * soft**2 / np.pi)
    dense = 1.0 / (1.0 + np.exp(-(g - thr) / soft))
    fat = prm["fat"][sl].astype(np.float32)[:, None, None]
    gain = prm["dense_gain"][sl].astype(np.float32)[:, None, None]
    bg = fat + gain * dense + 0.03 * g
    # Smooth compressed-thickness gradient (darker towards the skin line).
    lin = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ra = prm["ramp_angle"][sl].astype(np.float32)[:, None, None]
    proj = np.cos(ra) * lin[None, None, :] + np.sin(ra) * lin[None, :, None]
    bg *= 1.0 - prm["ramp"][sl].astype(np.float32)[:, None, None] * (proj + 0.5)
    return bg, dense


def _lesion(prm: dict, sl: slice, size: int) -> np.ndarray:
    """Lesion profile in [0, 1] (mass body plus spicules) for a chunk of images."""
    scale = size / 64.0
    c = (size - 1) / 2.0
    lin = np.arange(size, dtype=np.float32) - c
    f32 = lambda key: prm[key][sl].astype(np.float32)[:, None, None]  # noqa: E731
    x = lin[None, None, :] - f32("cx") * size
    y = lin[None, :, None] - f32("cy") * size
    radius = f32("radius") * size
    orient = f32("orient")
    xr = x * np.cos(orient) + y * np.sin(orient)
    yr = -x * np.sin(orient) + y * np.cos(orient)
    sq = np.sqrt(f32("aspect"))
    un, vn = xr / (radius * sq), yr / (radius / sq)
    d = np.sqrt(un * un + vn * vn)
    e = (un + 1j * vn) / np.maximum(d, 1e-6)               # e^{i theta} in the ellipse frame
    # Radial contour m(theta) = 1 + sum_k A_k cos(k theta + phi_k).
    coef = (prm["amp"][sl] * np.exp(1j * prm["phase"][sl])).astype(np.complex64)
    contour = np.ones_like(d)
    ek = e * e                                               # harmonics start at k = 2
    for j in range(len(_HARMONICS)):
        contour += (coef[:, j, None, None] * ek).real
        ek = ek * e
    rho = d / np.maximum(contour, 0.35)
    edge = f32("edge") * scale
    body = 1.0 / (1.0 + np.exp(-np.clip((1.0 - rho) * radius / edge, -30, 30)))
    profile = body * (0.55 + 0.45 * np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0)))

    # Spicules: thin tapering lines radiating from inside the mass outwards.
    n_spic = prm["n_spic"][sl]
    rows = np.flatnonzero(n_spic > 0)
    if rows.size:
        xs, ys, rs = x[rows], y[rows], radius[rows]
        spic = np.zeros((rows.size, size, size), dtype=np.float32)
        ang = prm["spic_angle"][sl][rows].astype(np.float32)
        length = prm["spic_len"][sl][rows].astype(np.float32) * rs[:, :, 0]
        width = prm["spic_width"][sl][rows].astype(np.float32) * scale
        for j in range(int(n_spic[rows].max())):
            active = (n_spic[rows] > j)[:, None, None]
            ca = np.cos(ang[:, j])[:, None, None]
            sa = np.sin(ang[:, j])[:, None, None]
            along = xs * ca + ys * sa - 0.6 * rs
            perp = -xs * sa + ys * ca
            t = along / length[:, j, None, None]
            w = width[:, j, None, None] * (1.0 - 0.5 * np.clip(t, 0, 1))
            line = np.exp(-0.5 * (perp / w) ** 2) * np.clip(1.0 - t, 0.0, 1.0) ** 0.8 * (t > 0)
            spic = np.maximum(spic, np.where(active, line, 0.0))
        profile[rows] = np.maximum(profile[rows], f32("spic_rel")[rows] * spic)
    return profile


def _render(prm: dict, sl: slice, size: int, rng: np.random.Generator) -> np.ndarray:
    bg, dense = _background(prm, sl, size, rng)
    lesion = _lesion(prm, sl, size)
    f32 = lambda key: prm[key][sl].astype(np.float32)[:, None, None]  # noqa: E731
    # Dense tissue masks the mass: lower effective contrast where the tissue is dense.
    img = bg + f32("contrast") * (1.0 - f32("masking") * dense) * lesion
    img += f32("noise") * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0.0, 1.0, out=img)


def generate_phantom(spec: PhantomSpec = PhantomSpec()) -> tuple[np.ndarray, pd.DataFrame]:
    """Generate the in-silico mammography mass phantom.

    Deterministic: the same ``spec`` gives bit-identical images and table
    (numpy ``Generator(PCG64(spec.seed))``). 2,000 patches of 64x64 take about a
    second on one CPU core.

    Returns:
        images: float32 array ``(N, H, W)`` with values in [0, 1] (bright = dense).
        table: one row per image, in image order, with columns
            ``sample_id`` (str, e.g. ``'phantom_00042'``), ``label`` (int, 0 benign /
            1 malignant), ``split`` (``'train'``/``'val'``/``'test'``, patient-disjoint,
            both classes in each), ``patient_id`` (str), ``breast_density`` (int,
            BI-RADS 1-4), ``age`` (int years, 40-79), ``age_group`` (str, e.g.
            ``'40-49'``) and ``shape`` (``'round'``, ``'oval'``, ``'irregular'`` or
            ``'spiculated'``).
    """
    if not isinstance(spec, PhantomSpec):
        raise TypeError(f"spec must be a PhantomSpec, not {type(spec).__name__}")
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    table, prm = _draw_population(spec, rng)
    size = spec.image_size
    images = np.empty((spec.n_samples, size, size), dtype=np.float32)
    chunk = max(1, _PIXEL_BUDGET // (4 * size * size))
    for start in range(0, spec.n_samples, chunk):
        sl = slice(start, min(start + chunk, spec.n_samples))
        images[sl] = _render(prm, sl, size, rng)
    return images, table


# --------------------------------------------------------------------------- #
# Writing: folder data set and image grid
# --------------------------------------------------------------------------- #

def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_phantom_dataset(root: str | Path, spec: PhantomSpec = PhantomSpec()) -> Path:
    """Generate the phantom and write it as a folder data set.

    Writes ``ROOT/images/<split>/<benign|malignant>/<sample_id>.png`` (8-bit
    grayscale) and ``ROOT/metadata.csv`` with columns ``path`` (relative to ROOT,
    forward slashes), ``split``, ``label`` (1 = malignant), ``class`` (its name), ``patient_id``, ``breast_density``,
    ``age`` and ``age_group``, and ``ROOT/privacy.json``, a record saying the images are
    data-independent (so a classifier pretrained or augmented on them, ``privmed train
    --synthetic ROOT``, pays no privacy for them). ``ROOT`` must be new or empty, so that no
    data set's manifest is ever overwritten.

    Returns:
        The path of the manifest, ``ROOT/metadata.csv``.
    """
    root = Path(root)
    if not rundir.is_new_or_empty(root):
        raise PrivmedError(FOLDER_NOT_EMPTY.format(path=root, what="the phantom's images and manifest",
                                                   option="--dataset folder"))
    images, table = generate_phantom(spec)
    pixels = _to_uint8(images)
    paths = []
    for dirs in {(s, CLASS_DIRS[lab]) for s, lab in zip(table["split"], table["label"])}:
        (root / "images" / dirs[0] / dirs[1]).mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(table.itertuples(index=False)):
        rel = f"images/{row.split}/{CLASS_DIRS[row.label]}/{row.sample_id}.png"
        Image.fromarray(pixels[i], mode="L").save(root / rel, optimize=False, compress_level=1)
        paths.append(rel)
    manifest = table.assign(path=paths, **{"class": [CLASS_DIRS[label] for label in table["label"]]})
    manifest = manifest[list(MANIFEST_COLUMNS)]
    out = root / "metadata.csv"
    manifest.to_csv(out, index=False)
    _write_origin(root, spec)
    return out


def _write_origin(root: Path, spec: PhantomSpec) -> None:
    """The origin record that ``privmed train --synthetic`` reads: data-independent, so no privacy cost."""
    source = (f"privmed phantom (n_samples={spec.n_samples}, image_size={spec.image_size}, seed={spec.seed}, "
              f"malignant_fraction={spec.malignant_fraction})")
    record = {"private": True, "data_independent": True, "source": source, "stages": [],
              "summary": f"{source}: drawn by a fixed program from a seed, from no patient data; using these "
                         f"images costs no privacy."}
    rundir.write_json(root / rundir.PRIVACY, record)  # where `privmed synth sample` puts a generator's record


# Grid layout constants (documented in write_image_grid).
GRID_MIN_TILE = 96
GRID_PAD = 4
GRID_MAX_COLS = 8
GRID_TITLE_H = 28


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no scalable default font
        return ImageFont.load_default()


def write_image_grid(
    images: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    per_class: int = 8,
    class_names: Sequence[str] = ("benign", "malignant"),
    title: str | None = None,
) -> Path:
    """Write a labelled PNG grid of sample images, one block of rows per class.

    Generic (also for GAN samples): class ``c`` is ``labels == c`` and is named
    ``class_names[c]``; its first ``per_class`` images, in the given order, fill
    rows of up to 8 tiles. A class with no images gets an empty row marked
    "(none)".

    Args:
        images: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, H, W, 1)`` grayscale;
            floats are read as [0, 1] and clipped (map e.g. [-1, 1] outputs
            first), integer arrays as 0-255.
        labels: ``(N,)`` integer class indices.
        path: output PNG path (parent folders are created).
        per_class: images shown per class (>= 1).
        class_names: one name per class index.
        title: optional heading line.

    Layout: tiles are the images enlarged by the smallest integer factor that
    makes them at least 96 px (nearest neighbour, so pixels stay honest), with a
    4 px gap; a label column on the left; a 28 px title band if ``title``. The
    image height is ``[28 +] 4 + sum over classes of rows_c * (tile + 4)`` with
    ``rows_c = ceil(per_class / min(per_class, 8))``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    arr = np.asarray(images)
    if arr.ndim == 4 and 1 in (arr.shape[1], arr.shape[-1]):
        arr = arr[:, 0] if arr.shape[1] == 1 else arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W) (or one channel), got {np.shape(images)}")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != arr.shape[0]:
        raise ValueError(f"{arr.shape[0]} images but {labels.shape[0]} labels")
    if not _is_int(per_class) or per_class < 1:
        raise ValueError(f"per_class={per_class!r} must be an integer >= 1")
    pixels = arr.astype(np.uint8) if np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) <= 255 \
        else _to_uint8(np.nan_to_num(arr.astype(np.float32), nan=0.0))
    h, w = arr.shape[1:]
    factor = max(1, math.ceil(GRID_MIN_TILE / max(min(h, w), 1)))
    th, tw = h * factor, w * factor
    cols = min(per_class, GRID_MAX_COLS)
    rows = math.ceil(per_class / cols)
    font, small = _font(14), _font(11)
    names = [str(n) for n in class_names]
    counts = [int((labels == c).sum()) for c in range(len(names))]
    captions = [f"{n}\n({cnt} total)" for n, cnt in zip(names, counts)]
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    label_w = max(probe.multiline_textbbox((0, 0), cap, font=font)[2] for cap in captions) + 3 * GRID_PAD
    top = GRID_TITLE_H if title else 0
    width = label_w + cols * (tw + GRID_PAD) + GRID_PAD
    height = top + GRID_PAD + len(names) * rows * (th + GRID_PAD)
    if title:
        width = max(width, int(probe.textbbox((0, 0), title, font=font)[2]) + 2 * GRID_PAD)
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GRID_PAD, (GRID_TITLE_H - 14) // 2), title, fill=0, font=font)
    for c, caption in enumerate(captions):
        y0 = top + GRID_PAD + c * rows * (th + GRID_PAD)
        if c:
            draw.line([(0, y0 - GRID_PAD // 2 - 1), (width, y0 - GRID_PAD // 2 - 1)], fill=160)
        draw.multiline_text((GRID_PAD, y0 + GRID_PAD), caption, fill=0, font=font)
        idx = np.flatnonzero(labels == c)[:per_class]
        if idx.size == 0:
            draw.text((label_w, y0 + th // 2), "(none)", fill=96, font=small)
        for j, i in enumerate(idx):
            tile = Image.fromarray(np.ascontiguousarray(pixels[i]), mode="L")
            if factor > 1:
                tile = tile.resize((tw, th), Image.NEAREST)
            canvas.paste(tile, (label_w + (j % cols) * (tw + GRID_PAD), y0 + (j // cols) * (th + GRID_PAD)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #

def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a sample grid PNG and/or the folder data set.

    ``python -m privmed.data.phantom --out phantom_grid.png [--dataset DIR]
    [--n-samples N --image-size S --seed K --per-class P --by-density]``
    """
    ap = argparse.ArgumentParser(prog="python -m privmed.data.phantom", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="phantom_grid.png", help="grid PNG to write (default: %(default)s)")
    ap.add_argument("--dataset", default=None, help="also write the folder data set + metadata.csv here")
    ap.add_argument("--n-samples", type=int, default=None, help="default: 200 for a grid only, 2000 with --dataset")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=8, help="images per class in the grid")
    ap.add_argument("--by-density", action="store_true",
                    help="grid rows are class x BI-RADS density instead of class only")
    args = ap.parse_args(argv)
    n = args.n_samples or (2000 if args.dataset else 200)
    spec = PhantomSpec(n_samples=n, image_size=args.image_size, seed=args.seed)
    if args.dataset:
        print(f"wrote {write_phantom_dataset(args.dataset, spec)}")
    images, table = generate_phantom(spec)
    if args.by_density:
        labels = (table["label"].to_numpy() * 4 + table["breast_density"].to_numpy() - 1)
        names = [f"{c} d{d}" for c in CLASS_DIRS for d in range(1, 5)]
    else:
        labels, names = table["label"].to_numpy(), list(CLASS_DIRS)
    out = write_image_grid(images, labels, args.out, per_class=args.per_class, class_names=names,
                           title=f"privmed phantom: seed {spec.seed}, {spec.image_size}px")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    try:
        raise SystemExit(main())
    except PrivmedError as exc:
        print(f"error: {exc}")
        raise SystemExit(2)
