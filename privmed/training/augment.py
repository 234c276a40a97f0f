"""Label-preserving augmentation on a batch of images: flips and small rotations.

Applied per sample inside the training step, so under DP-SGD every augmented
view of a sample belongs to that sample's clipped gradient (no privacy cost).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEGREES = 10.0


def augment_batch(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal/vertical flips (every spatial axis) and, in 2D, rotations of up to ±10°.

    ``x`` has shape (B, C, *spatial). Returns a new tensor of the same shape.
    """
    if x.shape[0] == 0:
        return x
    spatial = x.ndim - 2
    for axis in range(2, 2 + spatial):
        flip = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) < 0.5
        x = torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(axis), x)
    if spatial == 2:
        x = _rotate(x, generator)
    return x


def _rotate(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    angles = (torch.rand(x.shape[0], generator=generator) * 2 - 1) * math.radians(MAX_ROTATION_DEGREES)
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(x.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augmented_views(x: torch.Tensor, y: torch.Tensor, *, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` independently augmented copies of the batch, view after view ((views x B, ...)),
    and the labels repeated to match; one view is :func:`augment_batch` itself."""
    if views == 1:
        return augment_batch(x), y
    return torch.cat([augment_batch(x) for _ in range(views)]), y.repeat(views, *[1] * (y.ndim - 1))


def average_view_gradients(params, *, views: int) -> None:
    """Augmentation multiplicity (De et al. 2022): each sample's per-sample gradient becomes the mean
    of its ``views`` views' gradients, before Opacus clips it. The views of a sample are one sample
    of the batch, so clipping, noise and accounting are unchanged; Opacus's per-sample gradients of a
    mean loss over the (views x B) inputs are per view, so their mean over views is the gradient of
    the sample's mean loss over its views."""
    for p in params:
        sample = getattr(p, "grad_sample", None)
        if sample is not None:
            p.grad_sample = sample.view(views, -1, *sample.shape[1:]).mean(0)
