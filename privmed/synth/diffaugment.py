"""Differentiable augmentation for GANs on small data (DiffAugment, Zhao et al. 2020).

The discriminator sees real and generated images through the same random brightness,
contrast, translation (up to 1/8 of the side) and cutout (a square of half the side),
and the generator is trained through them, so the discriminator cannot memorise ~1,000
training patches and the generator is not pushed to reproduce the augmentations.
Every transform acts on each sample alone (no batch statistic), so under DP-SGD each
augmented view still belongs to its own sample's clipped gradient.
Images are in [-1, 1], shape (B, 1, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, translation and cutout, drawn independently per sample."""
    if len(x) == 0:
        return x
    return _cutout(_translate(_contrast(_brightness(x))))


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.empty(len(x), 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(low, high)


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + _uniform(x, -0.5, 0.5)


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


def _translate(x: torch.Tensor) -> torch.Tensor:
    """Shift each image by up to 1/8 of its side; the uncovered border is 0 (mid grey)."""
    b, _, h, w = x.shape
    shift = int(h * TRANSLATION_RATIO + 0.5)
    ty = torch.randint(-shift, shift + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-shift, shift + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + ty + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor) -> torch.Tensor:
    """Zero one square of half the side per image, centred anywhere (clipped at the border)."""
    b, _, h, w = x.shape
    size = int(h * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + 1 - size % 2, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + 1 - size % 2, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - size // 2, cx - size // 2
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)
