"""Drawing the phantom: anatomical background, the mass, and the image a chunk of patients gets."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from .population import _draw_population
from .spec import _F_MIN_CYCLES, _HARMONICS, _PIXEL_BUDGET, PhantomSpec


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
    if "mass_on" in prm:  # a multi-label phantom: the mass is one finding among others
        lesion *= f32("mass_on")
    img = bg + f32("contrast") * (1.0 - f32("masking") * dense) * lesion
    if "calc_on" in prm:
        img += f32("calc_contrast") * f32("calc_on") * _calcifications(prm, sl, size)
        img += f32("dist_contrast") * f32("dist_on") * (1.0 - f32("masking") * dense) * _distortion(prm, sl, size)
    img += f32("noise") * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0.0, 1.0, out=img)


def _grid(prm: dict, sl: slice, size: int, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) relative to a finding's centre ``<prefix>_cx/_cy`` (x image size)."""
    lin = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    cx = prm[f"{prefix}_cx"][sl].astype(np.float32)[:, None, None] * size
    cy = prm[f"{prefix}_cy"][sl].astype(np.float32)[:, None, None] * size
    return lin[None, None, :] - cx, lin[None, :, None] - cy


def _calcifications(prm: dict, sl: slice, size: int) -> np.ndarray:
    """A cluster of small bright specks (microcalcifications) in [0, 1]; unused slots have radius 0."""
    x, y = _grid(prm, sl, size, "calc")
    scale = size / 64.0
    spread = prm["calc_spread"][sl].astype(np.float32) * size
    out = np.zeros((x.shape[0], size, size), dtype=np.float32)
    for j in range(prm["calc_radius"].shape[1]):
        radius = (prm["calc_radius"][sl][:, j].astype(np.float32) * scale)[:, None, None]
        dx = (prm["calc_dx"][sl][:, j].astype(np.float32) * spread)[:, None, None]
        dy = (prm["calc_dy"][sl][:, j].astype(np.float32) * spread)[:, None, None]
        speck = np.exp(-0.5 * ((x - dx) ** 2 + (y - dy) ** 2) / np.maximum(radius, 1e-3) ** 2)
        out = np.maximum(out, np.where(radius > 0, speck, 0.0))
    return out


def _distortion(prm: dict, sl: slice, size: int) -> np.ndarray:
    """Architectural distortion in [0, 1]: thin lines radiating from a point, with no mass at their centre."""
    x, y = _grid(prm, sl, size, "dist")
    width = 0.8 * size / 64.0
    length = prm["dist_length"][sl].astype(np.float32)[:, None, None] * size
    out = np.zeros((x.shape[0], size, size), dtype=np.float32)
    for j in range(prm["dist_angle"].shape[1]):
        angle = prm["dist_angle"][sl][:, j].astype(np.float32)[:, None, None]
        along = x * np.cos(angle) + y * np.sin(angle)
        perp = -x * np.sin(angle) + y * np.cos(angle)
        line = np.exp(-0.5 * (perp / width) ** 2) * np.clip(1.0 - np.abs(along) / length, 0.0, 1.0)
        active = (prm["dist_lines"][sl] > j)[:, None, None]
        out = np.maximum(out, np.where(active, line, 0.0))
    return out


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
    table, chunks = draw_phantom(spec)
    images = np.empty((spec.n_samples, spec.image_size, spec.image_size), dtype=np.float32)
    for rows, part in chunks:
        images[rows] = part
    return images, table


def draw_phantom(spec: PhantomSpec = PhantomSpec()) -> tuple[pd.DataFrame, Iterator[tuple[slice, np.ndarray]]]:
    """The phantom's table (as :func:`generate_phantom`'s) and its images rendered chunk by chunk, in
    order: ``(rows, images)`` pairs whose concatenation is :func:`generate_phantom`'s images, bit for
    bit. Memory is bounded by one chunk, so a phantom of any size can be written to disk."""
    if not isinstance(spec, PhantomSpec):
        raise TypeError(f"spec must be a PhantomSpec, not {type(spec).__name__}")
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    table, prm = _draw_population(spec, rng)
    size = spec.image_size
    chunk = max(1, _PIXEL_BUDGET // (4 * size * size))

    def chunks() -> Iterator[tuple[slice, np.ndarray]]:
        for start in range(0, spec.n_samples, chunk):
            rows = slice(start, min(start + chunk, spec.n_samples))
            yield rows, _render(prm, rows, size, rng)

    return table, chunks()
