"""ResNet9 with GroupNorm, 2D or 3D from one definition.

The architecture is the "DP ResNet9" used for differentially private image
classification (Klause et al. 2022; Tayebi Arasteh et al. 2024): four
conv-norm-activation stages of 64, 128, 256 and 512 channels with two residual
blocks, adaptive global pooling and a linear classifier::

    conv(64) -> conv(128)+pool -> res[conv(128), conv(128)]
             -> conv(256)+pool -> conv(512)+pool -> res[conv(512), conv(512)]
             -> adaptive max pool -> flatten -> linear

Every convolution is 3x3 (3x3x3 in 3D), has no bias (the following GroupNorm
has its own shift) and is followed by GroupNorm and the activation (Mish by
default). GroupNorm normalises each sample on its own, so per-sample gradients
are well defined and Opacus accepts the model; BatchNorm (``norm="batch"``)
mixes samples of a batch, is rejected by Opacus's validator and is offered for
non-private baselines only.

Layers are picked by ``spatial_dims`` through MONAI's layer factories
(``Conv[Conv.CONV, dims]``, ``Pool[...]``, ``get_norm_layer``), the same way
MONAI's own networks take ``spatial_dims`` and ``norm``. ``width`` scales every
channel count: ``width=1`` is the paper model (~6.5M parameters), ``width=0.25``
the small variant (~0.4M parameters).
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv, Pool, split_args
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

BASE_CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)


def num_groups_for(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of ``channels``
    that is at most ``max_groups`` and leaves at least ``min_channels_per_group``
    channels per group (at least 1 group). 64 -> 16, 128 -> 32, 512 -> 32, 16 -> 4."""
    target = max(1, min(max_groups, channels // min_channels_per_group))
    for g in range(target, 0, -1):
        if channels % g == 0:
            return g
    return 1


def make_norm(norm: str | tuple, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer in MONAI's ``norm`` convention (a name or ``(name, kwargs)``).

    ``"group"`` without ``num_groups`` gets :func:`num_groups_for` groups.
    """
    name, kwargs = split_args(norm)
    kwargs = dict(kwargs)
    if str(name).lower() == "group" and "num_groups" not in kwargs:
        kwargs["num_groups"] = num_groups_for(channels)
    return get_norm_layer((name, kwargs), spatial_dims=spatial_dims, channels=channels)


class ConvNormAct(nn.Sequential):
    """3^d convolution (no bias) -> norm -> activation [-> 2^d max pool]."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        norm: str | tuple,
        act: str | tuple,
        pool: bool = False,
    ) -> None:
        layers: list[nn.Module] = [
            Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            make_norm(norm, spatial_dims, out_channels),
            get_act_layer(act),
        ]
        if pool:
            layers.append(Pool[Pool.MAX, spatial_dims](kernel_size=2))
        super().__init__(*layers)


class Residual(nn.Module):
    """``x + body(x)``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """ResNet9 for 2D (``spatial_dims=2``) or 3D (``spatial_dims=3``) images.

    Args:
        spatial_dims: 2 for images (B, C, H, W), 3 for volumes (B, C, D, H, W).
        in_channels: input channels.
        num_outputs: number of logits (1 for a binary task with BCE-with-logits).
        norm: MONAI-style norm spec. ``"group"`` (default, DP-compatible) or
            ``("group", {"num_groups": G})``; ``"batch"`` for non-private runs only.
        act: MONAI-style activation spec, default ``"mish"``.
        width: channel multiplier applied to (64, 128, 256, 512).
        channels: explicit channel counts, overrides ``width``.

    The input needs a spatial size of at least 8 (three 2x poolings). Output: raw
    logits of shape (B, num_outputs).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_outputs: int = 1,
        *,
        norm: str | tuple = "group",
        act: str | tuple = "mish",
        width: float = 1.0,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"ResNet9 supports spatial_dims 2 or 3, got {spatial_dims}")
        if channels is None:
            channels = tuple(max(1, round(c * width)) for c in BASE_CHANNELS)
        if len(channels) != 4:
            raise ValueError(f"channels needs 4 entries, got {channels}")
        c1, c2, c3, c4 = channels
        self.spatial_dims = spatial_dims

        def block(cin: int, cout: int, pool: bool = False) -> ConvNormAct:
            return ConvNormAct(spatial_dims, cin, cout, norm=norm, act=act, pool=pool)

        self.features = nn.Sequential(
            block(in_channels, c1),
            block(c1, c2, pool=True),
            Residual(nn.Sequential(block(c2, c2), block(c2, c2))),
            block(c2, c3, pool=True),
            block(c3, c4, pool=True),
            Residual(nn.Sequential(block(c4, c4), block(c4, c4))),
            Pool[Pool.ADAPTIVEMAX, spatial_dims](1),
            nn.Flatten(1),
        )
        self.head = nn.Linear(c4, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_resnet9(
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_outputs: int = 1,
    image_size: int = 64,
    norm: str | tuple = "group",
    act: str | tuple = "mish",
    width: float = 1.0,
    channels: Sequence[int] | None = None,
) -> ResNet9:
    """Registry builder. ``image_size`` is accepted for a uniform signature; the
    network is fully convolutional with adaptive pooling and takes any size >= 8."""
    if image_size < 8:
        raise ValueError(f"ResNet9 needs image_size >= 8 (three 2x poolings), got {image_size}")
    return ResNet9(
        spatial_dims, in_channels, num_outputs, norm=norm, act=act, width=width, channels=channels
    )
