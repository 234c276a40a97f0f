"""Near-duplicate images: the same picture resized, re-encoded or re-normalised.

Images are compared at the run's size after privmed's normalisation, in a fixed feature space:
each image mean-pooled to :data:`SIDE` pixels a side (``SIDE``³ voxels for volumes) and
standardised (zero mean, unit variance), so that a change of size, brightness or contrast moves it
little. The distance is the root-mean-square difference of two such fingerprints (0: the same
picture; 2: opposite); two images closer than :data:`NEAR_DUPLICATE_DISTANCE` are near-duplicates.
The threshold sits between copies (resized CBIS-DDSM patches, 64 → 32 → 64 px: at most 0.05) and
different images (closest pair of different CBIS-DDSM patches: 0.22; of phantom images: 0.57).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

SIDE = 16
NEAR_DUPLICATE_DISTANCE = 0.1
_CHUNK = 1024


def pixel_hash(image: np.ndarray) -> str:
    """SHA-256 of an image's pixels: equal exactly for pixel-identical images."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def fingerprints(images: np.ndarray) -> torch.Tensor:
    """(N, SIDE**dims) standardised, mean-pooled images (``images``: (N, H, W) or (N, D, H, W))."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    pool = F.adaptive_avg_pool2d if x.dim() == 4 else F.adaptive_avg_pool3d
    x = pool(x, SIDE).flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)


def nearest(candidates: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every candidate image: the index of its nearest reference image and their distance."""
    ref = fingerprints(reference)
    index, distance = [], []
    for start in range(0, len(candidates), _CHUNK):
        d = torch.cdist(fingerprints(candidates[start:start + _CHUNK]), ref) / ref.shape[1] ** 0.5
        best = d.min(1)
        index.append(best.indices.numpy())
        distance.append(best.values.numpy())
    return np.concatenate(index), np.concatenate(distance)


def near_duplicates(candidates: np.ndarray, reference: np.ndarray, *,
                    threshold: float = NEAR_DUPLICATE_DISTANCE) -> list[tuple[int, int, float]]:
    """``(candidate index, reference index, distance)`` for every candidate closer than ``threshold``
    to some reference image, closest first."""
    if len(candidates) == 0 or len(reference) == 0:
        return []
    index, distance = nearest(candidates, reference)
    hits = np.flatnonzero(distance < threshold)
    return sorted(((int(i), int(index[i]), float(distance[i])) for i in hits), key=lambda hit: hit[2])
