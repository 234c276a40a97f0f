"""The randomness a DP guarantee rests on: secret, drawn from the operating system.

Differential privacy holds only while the noise and the Poisson batches stay unknown
to an attacker. A generator seeded from a recorded ``--seed`` would let anyone holding
the run directory regenerate every noise draw and subtract it. So every draw the
guarantee rests on (Poisson sampling, DP-SGD noise, the feature-centre release, the DP
generator's discriminator steps) comes from :func:`secret_generator`: a
``torch.Generator`` seeded from the operating system's entropy (``secrets``), never
written to disk or logs and independent of ``--seed``, which keeps fixing everything
else (initialisation, augmentation, splits, the bootstrap).

Opacus's own ``secure_mode`` would use ``torchcsprng``, which has no build for current
torch releases; privmed hands Opacus an OS-seeded generator instead (its
``noise_generator`` and the sampler's generator) and switches on Opacus's
floating-point-safe noise sampling (``DPOptimizer.secure_mode``, which needs no csprng).

``replay_seed`` (``privacy.replayable_noise``) derives the generator from the run's
seed instead, for debugging and exact reproduction; such a run's ledger says it is not
private.
"""

from __future__ import annotations

import secrets

import torch

#: Offsets that keep a replayable run's sampling and noise streams apart from each other and from --seed.
SAMPLING_STREAM = 0x5A3D
NOISE_STREAM = 0x7E11
CENTRE_STREAM = 0x1C4E

REPLAYABLE_NOT_PRIVATE = ("The DP noise and Poisson sampling were derived from the recorded seed "
                          "(privacy.replayable_noise), so anyone with this run directory can regenerate and remove "
                          "them: the noise protects nothing.")


def replay_seed_for(*, private: bool, replayable: bool, seed: int) -> int | None:
    """The seed a run's sampling and noise are derived from: None (secret) for a private run, ``seed``
    for a replayable one or a non-private one (nothing to protect; reproducible batches)."""
    return seed if replayable or not private else None


def secret_generator(*, stream: int, replay_seed: int | None = None, device: str = "cpu") -> torch.Generator:
    """A generator for one stream of guarantee-bearing draws.

    Seeded from the operating system's entropy, unless ``replay_seed`` is given (then
    from ``replay_seed`` and ``stream``: reproducible, and not private). The seed is held
    only by the generator object and never returned.
    """
    generator = torch.Generator(device=device)
    if replay_seed is None:
        generator.manual_seed(secrets.randbits(63))
    else:
        generator.manual_seed((replay_seed * 1_000_003 + stream) % (2**63))
    return generator
