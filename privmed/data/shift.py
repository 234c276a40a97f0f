"""Acquisition shift: a fixed "digital scanner" copy of a test split, and random acquisition augmentation.

privmed's CBIS-DDSM patches are scanned film (mean grey level about 130 of 255, within-image
spread about 23); a digital scanner's patches are darker and higher-contrast (about 97 and
39, issue 19). :func:`digital_scanner` maps film-like patches to that look with one fixed
transform whose constants were set in advance from those published figures (not fitted to
any model's score: gamma and contrast were set once so that 300 CBIS-DDSM training patches come out at
mean 96 and spread 39 of 255; the same for every call): gamma, a contrast stretch about a fixed grey level,
unsharp masking and sensor noise drawn from a fixed seed. It is a stress test the model never
trains on; ``shifted_test_auroc`` in ``benchmarks/cbis_utility.py`` scores the test split
after it.

:func:`acquisition_augment` draws an independent random gamma, contrast, blur-or-sharpening
and noise for every image (from the caller's generator: augmentation, not part of any
privacy guarantee): data-independent and per sample, so under DP it is free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ScannerShift:
    """Constants of the digital-scanner transform, applied in this order to grey levels in [0, 1]."""

    gamma: float = 1.7  # darker: with the contrast below, film mean 130/255 -> about 97/255
    contrast: float = 1.7  # spread about `pivot`: 23/255 -> about 39/255 (with gamma and sharpening)
    pivot: float = 0.38  # 97 / 255
    sharpen: float = 0.5  # unsharp mask amount
    blur_sigma: float = 1.0  # pixels, of the unsharp mask's blur
    noise_std: float = 0.01
    seed: int = 0


DIGITAL_SCANNER = ScannerShift()


def digital_scanner(images: torch.Tensor, shift: ScannerShift = DIGITAL_SCANNER) -> torch.Tensor:
    """``images`` (B, H, W) or (B, 1, H, W) in [0, 1] as a digital scanner might show them (same shape):
    gamma, contrast about a fixed grey level, unsharp masking, Gaussian noise from ``shift.seed``, clipped."""
    x = _as_batch(images).double().clamp(0, 1)
    x = x ** shift.gamma
    x = shift.pivot + shift.contrast * (x - shift.pivot)
    x = x + shift.sharpen * (x - gaussian_blur(x, shift.blur_sigma))
    generator = torch.Generator().manual_seed(shift.seed)
    x = x + shift.noise_std * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x.clamp(0, 1).to(images.dtype).view_as(images)


def acquisition_augment(images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """A random acquisition per image (same shape as ``images``, (B, H, W) or (B, 1, H, W), in [0, 1]):
    gamma in [0.6, 1.7], contrast x [0.7, 1.8] about the image's mean, a blur (sigma up to 1.2 px) or an
    unsharp mask (amount up to 1), Gaussian noise of std up to 0.02."""
    x = _as_batch(images).double().clamp(0, 1)
    b = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(b, generator=generator, dtype=x.dtype)).view(b, 1, 1, 1)

    x = x ** torch.exp(uniform(torch.log(torch.tensor(0.6)).item(), torch.log(torch.tensor(1.7)).item()))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + uniform(0.7, 1.8) * (x - mean)
    detail = x - gaussian_blur(x, 1.0)
    amount = uniform(-1.0, 1.0)  # < 0: blur (removes detail), > 0: sharpen
    x = x + amount * detail
    x = x + uniform(0.0, 0.02) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x.clamp(0, 1).to(images.dtype).view_as(images)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W), reflect-padded, kernel radius 3 sigma."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    if images.ndim == 3:
        return images.unsqueeze(1)
    if images.ndim == 4 and images.shape[1] == 1:
        return images
    raise ValueError(f"expected (B, H, W) or (B, 1, H, W) grey images, got shape {tuple(images.shape)}")
