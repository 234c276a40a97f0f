"""Front ends that see the lesion, not the scanner: lesion descriptors and the lesion window."""

from __future__ import annotations

import numpy as np
import torch

from privmed.models import build_model
from privmed.models.descriptors import NAMES, describe
from privmed.models.invariance import LesionWindow
from privmed.models.parts import is_feature_model, trainable_part

SIDE = 64


def _lesion(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A bright central mass on a textured background: a round one, or one with eight spicules."""
    yy, xx = np.mgrid[:SIDE, :SIDE] - (SIDE - 1) / 2
    radius, angle = np.hypot(xx, yy), np.arctan2(yy, xx)
    edge = 9.0 if kind == "round" else 7.0 + 5.0 * np.clip(np.cos(8 * angle), 0, None) ** 4
    mass = 1 / (1 + np.exp((radius - edge) * 2))
    return np.clip(0.3 + 0.4 * mass + rng.normal(0, 0.02, (SIDE, SIDE)), 0, 1)


def test_descriptors_do_not_move_when_the_scanner_changes_the_grey_level_curve():
    image = _lesion("spiculated", np.random.default_rng(0))
    for scanner in (lambda x: x ** 1.7, lambda x: 0.2 + 0.5 * x, lambda x: np.sqrt(x)):
        assert np.allclose(describe(scanner(image)), describe(image))


def test_a_spiculated_margin_is_less_compact_and_more_irregular_than_a_round_one():
    rng = np.random.default_rng(1)
    round_, spiculated = describe(_lesion("round", rng)), describe(_lesion("spiculated", rng))
    for name in ("compactness", "radial_spread"):
        i = NAMES.index(name)
        assert spiculated[i] > round_[i], name
    assert round_[NAMES.index("solidity")] > spiculated[NAMES.index("solidity")]


def test_descriptor_linear_is_a_frozen_front_end_with_a_linear_head():
    model = build_model("descriptor_linear", image_size=SIDE)
    assert is_feature_model(model) and not list(model.features.parameters())
    x = torch.from_numpy(np.stack([_lesion("round", np.random.default_rng(s)) for s in range(3)])).float().unsqueeze(1)
    assert model.features(x).shape == (3, len(NAMES), 1, 1)
    assert model(x).shape == (3, 1)
    assert sum(p.numel() for p in trainable_part(model).parameters()) == len(NAMES) + 1


def test_the_lesion_window_keeps_the_centre_and_flattens_the_rest_to_its_mean():
    x = torch.rand(2, 1, SIDE, SIDE)
    window = LesionWindow(0.5, taper=0.125)
    out = window(x)
    centre = slice(SIDE // 4, 3 * SIDE // 4)
    assert torch.allclose(out[..., centre, centre], x[..., centre, centre])
    w = window.window(SIDE, x.device, x.dtype)
    weights = w[:, None] * w[None, :]
    mean = (x * weights).sum((-2, -1)) / weights.sum()
    assert torch.allclose(out[..., 0, 0], mean) and torch.allclose(out[..., -1, 5], mean)


def test_scatter_linear_without_standardisation_leaves_the_log_features_raw():
    plain = build_model("scatter_linear", image_size=32, dihedral=False, standardise=False)
    standardised = build_model("scatter_linear", image_size=32, dihedral=False, standardise=True)
    x = torch.rand(4, 1, 32, 32)
    raw, std = plain.features(x).flatten(1), standardised.features(x).flatten(1)
    assert torch.allclose(std, (raw - raw.mean(1, keepdim=True)) / raw.std(1, unbiased=False, keepdim=True),
                          atol=1e-3)
    assert not torch.allclose(raw.mean(1), torch.zeros(4), atol=1e-2)
