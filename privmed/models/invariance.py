"""Free invariances for a frozen front end: the dihedral group and per-image intensity standardisation.

Both act on one image at a time and look at no data set statistic, so, like the scattering
transform itself, they cost no privacy and their output can be computed once per image.

* dihedral averaging (:class:`InvariantFeatures`, ``dihedral=True``): mass patches have no preferred orientation, so a front end's
  features are averaged over the image's 8 rotations by 90 degrees and reflections (the
  dihedral group D4). The averaged features are exactly invariant to those 8 transforms.
* :class:`IntensityStandardise` (``input_norm``): removes what depends on the scanner's grey-level curve
  before the front end sees the image: ``"zscore"`` (per-image mean and spread, invariant
  to any affine change of grey levels) or ``"quantile"`` (per-image rank transform, i.e.
  histogram equalisation: invariant to any increasing grey-level curve, gamma included).
  Both map to a fixed grey-level range (mean ``TARGET_MEAN``, spread ``TARGET_STD``: CBIS-DDSM's
  typical values) so the scattering's log offset keeps the meaning it had.
* :class:`LowPass` (``blur``): a fixed Gaussian low-pass of each image (standard deviation in
  pixels), so that what a scanner does at the finest scale (sharpening, quantum noise) weighs
  less in the features.
* :class:`LesionWindow` (``lesion_window``): for lesion-centred patches, keeps the central box whose
  sides are that fraction of the image's and flattens the rest to the box's mean grey level (a
  raised-cosine taper between them, so the window adds no edge), so the front end sees the lesion
  and its margin rather than the surrounding tissue and whatever the scanner did to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: grey level and spread the standardised images are mapped to (typical of CBIS-DDSM's film patches)
TARGET_MEAN = 0.5
TARGET_STD = 0.1
INPUT_NORMS = ("none", "zscore", "quantile")


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of ``x`` (B, C, H, W) under the dihedral group: 4 rotations by 90 degrees, each
    with and without a left-right reflection (the identity first). Needs square images."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral views need square images, got {tuple(x.shape[-2:])}")
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [r.flip(-1) for r in rotations]


class InvariantFeatures(nn.Module):
    """A frozen front end made invariant for free: each image's grey levels standardised
    (``input_norm``, :class:`IntensityStandardise`), then, with ``dihedral``, the front end's
    features averaged over the image's 8 dihedral views (exactly invariant to them)."""

    def __init__(self, inner: nn.Module, *, input_norm: str = "none", dihedral: bool = False,
                 blur: float = 0.0, lesion_window: float = 0.0) -> None:
        super().__init__()
        self.input_norm, self.dihedral = input_norm, bool(dihedral)
        self.standardise = IntensityStandardise(input_norm)
        self.low_pass = LowPass(blur)
        if lesion_window:  # only when asked, so that the cache keys of the front ends before it stay as they were
            self.window = LesionWindow(lesion_window)
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.low_pass(self.standardise(x))
        if hasattr(self, "window"):
            x = self.window(x)
        if not self.dihedral:
            return self.inner(x)
        views = dihedral_views(x)
        out = self.inner(views[0])
        for view in views[1:]:
            out = out + self.inner(view)
        return out / len(views)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The inner front end's per-sample feature shape (unchanged)."""
        return self.inner.output_shape


class IntensityStandardise(nn.Module):
    """Per-image grey-level standardisation (``mode``: ``"none"``, ``"zscore"`` or ``"quantile"``)."""

    def __init__(self, mode: str = "none") -> None:
        super().__init__()
        if mode not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {mode!r}; use one of {', '.join(INPUT_NORMS)}")
        self.mode = mode

    def extra_repr(self) -> str:  # part of the feature cache's key
        return f"mode={self.mode!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        flat = x.flatten(1)
        if self.mode == "zscore":
            z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)
        else:
            z = _normal_scores(flat)
        return (TARGET_MEAN + TARGET_STD * z).view_as(x)


class LowPass(nn.Module):
    """A fixed Gaussian blur of each image, ``sigma`` pixels (0: none); reflected at the borders."""

    def __init__(self, sigma: float = 0.0) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"blur must be >= 0 pixels, got {sigma}")
        self.sigma = float(sigma)

    def extra_repr(self) -> str:  # part of the feature cache's key
        return f"sigma={self.sigma!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return x
        radius = int(math.ceil(3 * self.sigma))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (t / self.sigma) ** 2)
        kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1, 1)  # one filter per channel
        x = F.pad(x, (radius,) * 4, mode="reflect")
        x = F.conv2d(x, kernel.view(x.shape[1], 1, 1, -1), groups=x.shape[1])
        return F.conv2d(x, kernel.view(x.shape[1], 1, -1, 1), groups=x.shape[1])


class LesionWindow(nn.Module):
    """Keep the central box of each image (sides ``fraction`` of the image's) and flatten the rest to the
    box's mean grey level, through a raised-cosine taper ``taper`` of the side wide: ``c + w (x - c)``,
    with ``w`` the window and ``c`` the image's mean under it."""

    def __init__(self, fraction: float = 0.5, taper: float = 0.125) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"lesion_window must lie in (0, 1] (the central fraction of each side kept), got {fraction}")
        self.fraction, self.taper = float(fraction), float(taper)

    def extra_repr(self) -> str:  # part of the feature cache's key
        return f"fraction={self.fraction!r}, taper={self.taper!r}"

    def window(self, side: int, device, dtype) -> torch.Tensor:
        """The 1D profile of the window along a side of ``side`` pixels (1 inside the box, 0 far outside)."""
        t = (torch.arange(side, device=device, dtype=dtype) + 0.5) / side - 0.5  # centred coordinate in [-.5, .5]
        edge = (torch.abs(t) - self.fraction / 2) / self.taper  # 0 at the box's edge, 1 a taper further out
        return torch.where(edge <= 0, torch.ones_like(t), 0.5 * (1 + torch.cos(math.pi * edge.clamp(0, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.window(x.shape[-2], x.device, x.dtype)
        cols = self.window(x.shape[-1], x.device, x.dtype)
        w = rows[:, None] * cols[None, :]
        centre = (x * w).sum((-2, -1), keepdim=True) / w.sum()
        return centre + w * (x - centre)


def _normal_scores(flat: torch.Tensor) -> torch.Tensor:
    """Each row's values replaced by the standard normal quantiles of their ranks (ties: ordered by position),
    so every image gets the same grey-level histogram whatever its scanner's curve."""
    n = flat.shape[1]
    ranks = flat.argsort(1).argsort(1).to(flat.dtype)
    p = (ranks + 0.5) / n
    return torch.special.ndtri(p)
