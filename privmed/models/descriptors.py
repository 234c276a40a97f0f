"""Lesion descriptors: a few numbers per lesion-centred patch that a radiologist would name, through scikit-image.

The front end (:class:`LesionDescriptors`) has no parameters and looks at one image at a time, so, like the
scattering transform, it costs no privacy and its output is computed once per image. Every descriptor is taken
on the image's grey-level *ranks* (each patch mapped to a uniform histogram first), so none of them moves when a
scanner changes the grey-level curve (gamma, brightness, contrast): what is left is the lesion's shape, margin and
texture. From the central box (``window``, the lesion's share of each side):

* shape, from a segmentation of the centre (Gaussian smoothing, Otsu's threshold, the connected region under the
  centre, holes filled): area share, eccentricity, solidity, extent, compactness (perimeter^2 / 4 pi area) and
  the spread of the boundary's distance to the centroid (irregular or spiculated margins);
* contrast: mean rank inside the region minus in a ring around it; margin sharpness: mean gradient on the boundary;
* texture: local binary patterns (uniform, 8 neighbours, radius 1: 10 bins) and grey-level co-occurrence statistics
  (16 rank levels, distances 1 and 2, four angles: contrast, dissimilarity, homogeneity, energy, correlation).

PyRadiomics, the usual library for radiomic descriptors, does not install on Python 3.11; scikit-image computes
these. Each descriptor is scaled to about unit spread by fixed constants (``SCALE``), so a linear head trained
with clipped gradients sees comparable coordinates.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage import feature, filters, measure
from torch import nn

from .parts import FrontEndClassifier
from .scatter import FeatureCenter

SHAPE = ("area", "eccentricity", "solidity", "extent", "compactness", "radial_spread")
MARGIN = ("contrast", "sharpness")
LBP_BINS = 10
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
NAMES = (*SHAPE, *MARGIN, *(f"lbp{i}" for i in range(LBP_BINS)), *(f"glcm_{p}" for p in GLCM_PROPS))
#: fixed scales (about the spread of each descriptor on lesion patches), so the head's coordinates are comparable
SCALE = np.array([0.2, 0.3, 0.2, 0.2, 1.0, 0.2, 0.3, 0.05, *(0.05,) * LBP_BINS, 10.0, 1.5, 0.1, 0.05, 0.2])
LEVELS = 16


def ranks(image: np.ndarray) -> np.ndarray:
    """The image's grey levels replaced by their ranks in [0, 1] (a uniform histogram whatever the scanner)."""
    flat = image.ravel()
    order = flat.argsort(kind="stable").argsort(kind="stable")
    return ((order + 0.5) / flat.size).reshape(image.shape)


def central_box(image: np.ndarray, window: float) -> np.ndarray:
    h, w = image.shape
    bh, bw = max(8, int(round(h * window))), max(8, int(round(w * window)))
    return image[(h - bh) // 2:(h - bh) // 2 + bh, (w - bw) // 2:(w - bw) // 2 + bw]


def segment(box: np.ndarray) -> np.ndarray:
    """The lesion: the connected region above Otsu's threshold (of the smoothed box) nearest its centre, holes filled."""
    smooth = filters.gaussian(box, sigma=max(1.0, box.shape[0] / 32))
    mask = smooth > filters.threshold_otsu(smooth)
    labels = measure.label(mask)
    if labels.max() == 0:
        return np.ones_like(mask)
    cy, cx = (np.array(box.shape) - 1) / 2
    yy, xx = np.nonzero(labels)
    nearest = labels[yy, xx][np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)]
    return ndimage.binary_fill_holes(labels == nearest)


def shape_and_margin(box: np.ndarray, mask: np.ndarray) -> list[float]:
    region = measure.regionprops(mask.astype(np.uint8))[0]
    perimeter = max(region.perimeter, 1.0)
    boundary = mask & ~ndimage.binary_erosion(mask)
    by, bx = np.nonzero(boundary)
    distance = np.hypot(by - region.centroid[0], bx - region.centroid[1])
    spread = float(distance.std() / max(distance.mean(), 1e-6)) if distance.size else 0.0
    ring = ndimage.binary_dilation(mask, iterations=max(2, box.shape[0] // 16)) & ~mask
    outside = box[ring].mean() if ring.any() else box[~mask].mean() if (~mask).any() else box.mean()
    gradient = filters.sobel(box)
    return [region.area / mask.size, region.eccentricity, region.solidity, region.extent,
            perimeter ** 2 / (4 * np.pi * region.area), spread, box[mask].mean() - outside,
            gradient[boundary].mean() if boundary.any() else 0.0]


def texture(box: np.ndarray) -> list[float]:
    levels = np.minimum((box * LEVELS).astype(np.uint8), LEVELS - 1)
    lbp = feature.local_binary_pattern(levels, P=8, R=1, method="uniform")
    histogram = np.bincount(lbp.astype(int).ravel(), minlength=LBP_BINS)[:LBP_BINS] / lbp.size
    glcm = feature.graycomatrix(levels, distances=[1, 2], angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                                levels=LEVELS, symmetric=True, normed=True)
    return [*histogram, *(float(np.nan_to_num(feature.graycoprops(glcm, p)).mean()) for p in GLCM_PROPS)]


def describe(image: np.ndarray, window: float = 0.5) -> np.ndarray:
    """The :data:`NAMES` descriptors of one 2D image, scaled by :data:`SCALE`."""
    box = central_box(ranks(np.asarray(image, dtype=np.float64)), window)
    values = np.array([*shape_and_margin(box, segment(box)), *texture(box)], dtype=np.float64)
    return np.nan_to_num(values) / SCALE


class LesionDescriptors(nn.Module):
    """Frozen front end: (B, 1, H, W) images -> (B, len(NAMES), 1, 1) descriptors (:func:`describe`)."""

    def __init__(self, window: float = 0.5) -> None:
        super().__init__()
        if not 0 < window <= 1:
            raise ValueError(f"window must lie in (0, 1] (the lesion's share of each side), got {window}")
        self.window = float(window)
        self.out_channels = len(NAMES)

    def extra_repr(self) -> str:  # part of the feature cache's key
        return f"window={self.window!r}, names={len(NAMES)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [describe(image[0].double().cpu().numpy(), self.window) for image in x]
        return torch.tensor(np.array(rows), dtype=x.dtype).view(len(x), -1, 1, 1)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (len(NAMES), 1, 1)


class DescriptorNet(FrontEndClassifier):
    """``head(features(x))``: frozen lesion descriptors, trainable linear head."""


def build_descriptor_linear(*, spatial_dims: int = 2, in_channels: int = 1, num_outputs: int = 1, image_size: int = 64,
                            norm: str = "group", window: float = 0.5) -> DescriptorNet:
    """Lesion descriptors (:class:`LesionDescriptors`) -> centred -> linear. The centre is the training mean,
    released with noise and composed like a scattering head's (``privacy.center`` private). ``norm="batch"``
    (non-private only) replaces the centring by a BatchNorm."""
    if spatial_dims != 2 or in_channels != 1:
        raise ValueError(f"lesion descriptors are for one-channel 2D images, got spatial_dims={spatial_dims}, "
                         f"in_channels={in_channels}")
    features = LesionDescriptors(window)
    first = [nn.BatchNorm2d(len(NAMES)), nn.Flatten(1)] if norm == "batch" else [FeatureCenter(len(NAMES))]
    return DescriptorNet(features, nn.Sequential(*first, nn.Linear(len(NAMES), num_outputs)))

