"""The one Gaussian sampler of every release outside DP-SGD: floating-point safe, as Opacus's ``secure_mode``.

A Gaussian mechanism implemented with one floating-point normal draw per coordinate leaks: the
set of doubles such a sampler can return near a value is sparse and depends on the value, so a
released ``x + noise`` can reveal ``x`` (Mironov 2012 for the Laplace mechanism; Jin et al. 2022,
arXiv:2112.05307, for Gaussian samplers in DP libraries, Opacus included). The fix Opacus uses for
DP-SGD (``opacus.optimizers.optimizer._generate_noise`` with ``secure_mode``, after Holohan &
Braghin 2021, arXiv:2107.10138, section 5.1, n = 2) draws and throws away one normal, then sums
four independent normals of std ``sigma`` and divides by 2: the result is N(0, sigma^2) and its
floating-point pattern no longer marks the value it was added to (the attack costs about 2^159).

privmed's DP-SGD noise comes from Opacus with ``secure_mode`` on (``privacy/engine.py``);
every other Gaussian release (the feature centre, the one-shot head's statistics, private
evolution's vote histogram) is one call of :func:`gaussian_release`, which draws its noise from
:func:`gaussian_noise` and returns the released value with its accounting record, and nothing
else in privmed draws the noise of a release (``tests/test_mechanisms.py`` greps for it).
"""

from __future__ import annotations

import torch

from .accounting import Mechanism

#: normals summed per coordinate (their sum has std 2 sigma, halved): Opacus's 2 n with n = 2
DRAWS = 4


def gaussian_noise(shape: int | tuple[int, ...] | torch.Size, std: float, generator: torch.Generator, *,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """N(0, ``std``^2) noise of ``shape`` drawn from ``generator`` (for a private release a
    :func:`~privmed.privacy.randomness.secret_generator`), floating-point safe as Opacus's ``secure_mode``:
    one draw thrown away, then the sum of :data:`DRAWS` normals of std ``std``, halved. ``std`` 0 gives zeros
    and draws nothing."""
    size = (shape,) if isinstance(shape, int) else tuple(shape)
    if std < 0:
        raise ValueError(f"the noise's std must be >= 0, got {std}")
    total = torch.zeros(size, dtype=dtype, device=generator.device)
    if std == 0:
        return total
    torch.normal(0.0, std, size=(1, 1), generator=generator, dtype=dtype, device=generator.device)  # thrown away
    for _ in range(DRAWS):
        total += torch.normal(0.0, std, size=size, generator=generator, dtype=dtype, device=generator.device)
    return total / 2


def gaussian_release(value: torch.Tensor, *, sensitivity: float, noise_multiplier: float, generator: torch.Generator,
                     stage: str) -> tuple[torch.Tensor, Mechanism]:
    """The Gaussian mechanism, once: ``value`` (whose L2 sensitivity to one unit is ``sensitivity``) plus
    N(0, (``noise_multiplier`` x ``sensitivity``)^2) per coordinate from :func:`gaussian_noise`, and the release's
    accounting record (``stage``: every unit, one step)."""
    noise = gaussian_noise(value.shape, noise_multiplier * sensitivity, generator, dtype=value.dtype)
    return value + noise.to(value.device), Mechanism(stage, noise_multiplier, 1.0, 1)
