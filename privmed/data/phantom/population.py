"""The phantom's population: patients, their attributes, labels, patient-disjoint splits, and every
per-image rendering parameter (drawn once, before any pixel)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .spec import (_DENSE_THRESHOLD, _DENSITY_CUTS, _HARMONICS, _MAX_SPICULES, _U_BENIGN, _U_MALIGNANT,
                   FINDING_PREVALENCE, FINDINGS, SPLITS, TABLE_COLUMNS, PhantomSpec)

_MAX_CALCS = 14        # calcifications in a cluster
_MAX_DIST_LINES = 10   # lines of an architectural distortion


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
    """Draw patients, their attributes and every per-image rendering parameter.

    The draws must stay in this order (one RNG stream; any reordering changes every phantom ever
    written): each helper below draws its part of the table in the package docstring, top to bottom.
    """
    img_patient = _draw_patients(spec, rng)
    n_pat = int(img_patient[-1]) + 1
    age, density, malignant = _draw_attributes(spec, n_pat, rng)
    split = _draw_splits(spec, malignant, rng)
    lesion = _draw_lesions(malignant, rng)
    anatomy = _draw_anatomy(n_pat, rng)
    params = _draw_views(lesion, anatomy, density, malignant, img_patient, rng)
    table = _population_table(img_patient, malignant, split, density, age, lesion["shape"])
    if spec.findings:
        shown, extra = _draw_findings(spec, malignant, split, img_patient)
        for name in spec.findings:
            table[name] = shown[name][img_patient].astype(np.int64)
        params.update(extra)
    return table, params


def _draw_patients(spec: PhantomSpec, rng: np.random.Generator) -> np.ndarray:
    """Patients with 1..k images each, until n images are reached: the patient of each image."""
    n, k = spec.n_samples, spec.images_per_patient
    per_patient = rng.integers(1, k + 1, size=n)
    ends = np.cumsum(per_patient)
    n_pat = int(np.searchsorted(ends, n) + 1)
    per_patient = per_patient[:n_pat].copy()
    per_patient[-1] -= int(ends[n_pat - 1] - n)
    return np.repeat(np.arange(n_pat), per_patient)


def _draw_attributes(spec: PhantomSpec, n_pat: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age, BI-RADS density and malignancy of each patient."""
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
    return age, density, malignant


def _draw_splits(spec: PhantomSpec, malignant: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patient-disjoint splits, stratified by label (every split gets both classes)."""
    split = np.empty(len(malignant), dtype=object)
    for cls in (False, True):
        members = rng.permutation(np.flatnonzero(malignant == cls))
        bounds = np.cumsum(_allocate(len(members), spec.split_fractions))[:-1]
        for name, part in zip(SPLITS, np.split(members, bounds)):
            split[part] = name
    return split


def _draw_lesions(malignant: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each patient's lesion (shared by the patient's views): type, latent suspiciousness u, contour, margin,
    spicules, size and contrast."""
    n_pat = len(malignant)
    r = rng.random(n_pat)
    shape = np.where(malignant, np.where(r < 0.5, "spiculated", "irregular"),
                     np.where(r < 0.4, "round", "oval"))
    u = np.where(malignant, rng.beta(*_U_MALIGNANT, size=n_pat), rng.beta(*_U_BENIGN, size=n_pat))
    aspect = np.select(
        [shape == "round", shape == "oval"],
        [rng.uniform(1.0, 1.15, n_pat), rng.uniform(1.25, 1.9, n_pat)],
        rng.uniform(1.0, 1.6, n_pat),
    )
    contour = _draw_contour(u, rng)
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
    return {"shape": shape, "aspect": aspect, **contour, "edge": edge, "n_spic": n_spic, "spic_angle": spic_angle,
            "spic_len": spic_len, "spic_width": spic_width, "spic_rel": spic_rel, "radius": radius,
            "contrast": contrast}


def _draw_contour(u: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Contour harmonics: benign energy sits in low k (smooth lobulation), suspicious lesions get a flatter
    spectrum (jagged, micro-lobulated) and more of it."""
    n_pat, nh = len(u), len(_HARMONICS)
    slope = 2.2 - 1.7 * u
    weights = _HARMONICS[None, :] ** (-slope[:, None] / 2)
    coef = weights * rng.standard_normal((n_pat, nh))
    coef /= np.sqrt((coef**2).sum(axis=1, keepdims=True)) + 1e-12
    irregularity = (0.03 + 0.32 * u**1.3) * rng.uniform(0.7, 1.3, n_pat)
    amp = coef * irregularity[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n_pat, nh))
    return {"amp": amp, "phase": phase}


def _draw_anatomy(n_pat: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each patient's breast tissue (shared by the patient's views)."""
    return {"beta": rng.uniform(2.8, 3.2, n_pat), "tissue_angle": rng.uniform(0, np.pi, n_pat),
            "tissue_aniso": rng.uniform(0.2, 1.2, n_pat), "fat": rng.uniform(0.16, 0.28, n_pat),
            "dense_gain": rng.uniform(0.28, 0.38, n_pat), "masking": rng.uniform(0.5, 0.85, n_pat)}


def _draw_views(lesion: dict, anatomy: dict, density: np.ndarray, malignant: np.ndarray, p: np.ndarray,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image view jitter of the same lesion and anatomy (``p``: the patient of each image); the views of a
    patient share the lesion rotation up to the jitter."""
    m, n_pat, nh = len(p), len(malignant), len(_HARMONICS)
    return {
        "malignant": malignant[p],
        "density": density[p],
        "beta": anatomy["beta"][p],
        "tissue_angle": anatomy["tissue_angle"][p] + rng.normal(0, 0.3, m),
        "tissue_aniso": anatomy["tissue_aniso"][p],
        "threshold": np.array([_DENSE_THRESHOLD[d] for d in density])[p] + rng.normal(0, 0.25, m),
        "softness": rng.uniform(0.45, 0.75, m),
        "fat": anatomy["fat"][p] + rng.normal(0, 0.01, m),
        "dense_gain": anatomy["dense_gain"][p] + rng.normal(0, 0.01, m),
        "ramp": rng.uniform(0.0, 0.18, m),
        "ramp_angle": rng.uniform(0, 2 * np.pi, m),
        "noise": rng.uniform(0.008, 0.025, m),
        "masking": anatomy["masking"][p],
        "cx": rng.normal(0, 0.05, m),
        "cy": rng.normal(0, 0.05, m),
        "radius": lesion["radius"][p] * rng.uniform(0.9, 1.1, m),
        "aspect": lesion["aspect"][p],
        "orient": rng.uniform(0, np.pi, n_pat)[p] + rng.normal(0, 0.35, m),
        "amp": lesion["amp"][p],
        "phase": lesion["phase"][p] + rng.normal(0, 0.25, (m, nh)),
        "edge": lesion["edge"][p] * rng.uniform(0.85, 1.15, m),
        "contrast": lesion["contrast"][p] * rng.uniform(0.85, 1.15, m),
        "n_spic": lesion["n_spic"][p],
        "spic_angle": lesion["spic_angle"][p] + rng.normal(0, 0.12, (m, _MAX_SPICULES)),
        "spic_len": lesion["spic_len"][p],
        "spic_width": lesion["spic_width"][p],
        "spic_rel": lesion["spic_rel"][p],
    }


def _population_table(p: np.ndarray, malignant: np.ndarray, split: np.ndarray, density: np.ndarray,
                      age: np.ndarray, shape: np.ndarray) -> pd.DataFrame:
    """One row per image (``p``: its patient): ids, label, split and the patient's attributes."""
    n, n_pat = len(p), len(malignant)
    width = max(5, len(str(n - 1)))
    pwidth = max(5, len(str(n_pat - 1)))
    decade = (age // 10) * 10
    return pd.DataFrame({
        "sample_id": [f"phantom_{i:0{width}d}" for i in range(n)],
        "label": malignant[p].astype(np.int64),
        "split": split[p].astype(str),
        "patient_id": [f"phantom_p{j:0{pwidth}d}" for j in p],
        "breast_density": density[p].astype(np.int64),
        "age": age[p].astype(np.int64),
        "age_group": [f"{d}-{d + 9}" for d in decade[p]],
        "shape": shape[p].astype(str),
    }, columns=list(TABLE_COLUMNS))


def _draw_findings(spec: PhantomSpec, malignant: np.ndarray, split: np.ndarray, img_patient: np.ndarray
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Which patient shows which finding, and the per-image parameters of calcifications and distortions.

    From a generator of its own (seeded by the spec's seed), so the binary phantom's stream, and so its
    images, stay bit-identical. Every split gets patients with and without each finding.
    """
    rng = np.random.Generator(np.random.PCG64([spec.seed, 18]))
    n_pat, m = len(malignant), len(img_patient)
    chance = np.where(malignant, FINDING_PREVALENCE[1], FINDING_PREVALENCE[0])
    shown = {name: rng.random(n_pat) < chance if name in spec.findings else np.zeros(n_pat, dtype=bool)
             for name in FINDINGS}
    for name in spec.findings:
        _both_values_per_split(shown[name], split)
    p = img_patient
    k = np.arange(_MAX_CALCS)[None, :]
    n_calc = np.clip(np.round(rng.uniform(4, 9, n_pat) + 5 * malignant), 3, _MAX_CALCS).astype(int)
    params = {
        "mass_on": shown["mass"][p] if "mass" in spec.findings else np.ones(m, dtype=bool),
        "calc_on": shown["calcification"][p],
        "calc_cx": rng.uniform(-0.25, 0.25, n_pat)[p] + rng.normal(0, 0.02, m),
        "calc_cy": rng.uniform(-0.25, 0.25, n_pat)[p] + rng.normal(0, 0.02, m),
        "calc_spread": rng.uniform(0.04, 0.09, n_pat)[p],                     # x image size
        "calc_dx": rng.standard_normal((n_pat, _MAX_CALCS))[p],
        "calc_dy": rng.standard_normal((n_pat, _MAX_CALCS))[p],
        "calc_radius": rng.uniform(0.5, 1.1, (n_pat, _MAX_CALCS))[p] * (k < n_calc[:, None])[p],  # px @64
        "calc_contrast": rng.uniform(0.3, 0.5, n_pat)[p],
        "dist_on": shown["distortion"][p],
        "dist_cx": rng.uniform(-0.2, 0.2, n_pat)[p] + rng.normal(0, 0.02, m),
        "dist_cy": rng.uniform(-0.2, 0.2, n_pat)[p] + rng.normal(0, 0.02, m),
        "dist_angle": rng.uniform(0, np.pi, (n_pat, _MAX_DIST_LINES))[p],
        "dist_lines": rng.integers(5, _MAX_DIST_LINES + 1, n_pat)[p],
        "dist_length": rng.uniform(0.25, 0.45, n_pat)[p],                       # x image size
        "dist_contrast": rng.uniform(0.15, 0.25, n_pat)[p],
    }
    return shown, params


def _both_values_per_split(shown: np.ndarray, split: np.ndarray) -> None:
    """Flip one patient of a split whose patients all show (or all lack) a finding."""
    for name in SPLITS:
        members = np.flatnonzero(split == name)
        if len(members) > 1 and (shown[members].all() or not shown[members].any()):
            shown[members[0]] = not shown[members[0]]
