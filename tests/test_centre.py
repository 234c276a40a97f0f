"""The head's feature centre: the phantom's (free, the default where it can be drawn) or a private release."""

import math

import numpy as np
import pytest
import torch

from privmed.config import config_from_dict
from privmed.data.phantom import PhantomSpec, generate_phantom
from privmed.errors import PrivmedError
from privmed.models import build_for_run, build_model
from privmed.models.scatter import FeatureCenter
from privmed.training.centre import (CHANNEL_BOUND_FRACTION, PHANTOM_CENTRE_IMAGES, public_centre_inputs,
                                     set_center_by_channel)

SIZE = 32


def _config(**privacy):
    return config_from_dict({"data": {"image_size": SIZE}, "model": {"name": "scatter_linear"}, "privacy": privacy,
                             "training": {"epochs": 2, "batch_size": 32, "augment": False, "bootstrap_resamples": 100}})


def test_the_phantom_centre_is_the_mean_of_the_phantoms_features():
    config = _config(epsilon=2.0)
    model = build_for_run(config, num_outputs=1)
    public = public_centre_inputs(model, config)
    images, _ = generate_phantom(PhantomSpec(n_samples=PHANTOM_CENTRE_IMAGES, image_size=SIZE))
    by_hand = model.features(torch.from_numpy(images).unsqueeze(1)).flatten(1).mean(0)
    assert len(public) == PHANTOM_CENTRE_IMAGES
    torch.testing.assert_close(public.flatten(1).mean(0), by_hand, atol=1e-4, rtol=1e-4)


def test_private_centre_or_a_model_without_one_gets_none():
    assert public_centre_inputs(build_for_run(_config(center="private"), num_outputs=1), _config(center="private")) \
        is None
    cnn = config_from_dict({"data": {"image_size": SIZE}, "model": {"name": "resnet9_small"}})
    assert public_centre_inputs(build_for_run(cnn, num_outputs=1), cnn) is None


def test_phantom_centre_needs_one_channel_images_and_auto_falls_back_to_private():
    rgb = build_model("scatter_linear", spatial_dims=2, in_channels=3, num_outputs=1, image_size=SIZE)
    with pytest.raises(PrivmedError, match="one-channel 2D"):
        public_centre_inputs(rgb, _config(center="phantom"))
    assert public_centre_inputs(rgb, _config(center="auto")) is None


def test_an_unknown_centre_source_is_refused():
    with pytest.raises(PrivmedError, match="center"):
        _config(center="mean")


@pytest.mark.slow
@pytest.mark.parametrize("center,stages", [("auto", ["dp_sgd"]), ("private", ["feature_centering", "dp_sgd"]),
                                           ("channels", ["feature_centering", "dp_sgd"])])
def test_a_run_with_the_phantom_centre_spends_all_of_epsilon_on_dp_sgd(phantom_root, tmp_path, center, stages):
    """``auto`` (the phantom alone, the default before ``channels``) spends nothing on the centre; the default
    (``channels``: no key given) and ``private`` release one and compose it."""
    from privmed import rundir
    from privmed.training.trainer import train

    privacy = {"epsilon": 2.0} if center == "channels" else {"epsilon": 2.0, "center": center}
    config = config_from_dict({**_config(**privacy).to_dict(), "out": str(tmp_path / center),
                               "data": {"path": str(phantom_root), "image_size": SIZE}})
    assert config.privacy.center == center
    out = train(config)
    record = rundir.read_record(out)
    assert [s.stage for s in record.stages] == stages
    assert record.epsilon == pytest.approx(2.0, rel=0.02)
    phantom_sentence = any("phantom patches" in s for s in record.free_inputs)
    assert phantom_sentence == (center != "private")
    assert any("per-channel mean" in s for s in record.free_inputs) == (center == "channels")
    if center == "auto":  # the whole epsilon buys DP-SGD noise: less of it than beside a centre release
        private = rundir.read_record(train(config_from_dict({**config.to_dict(), "out": str(tmp_path / "p"),
                                                             "privacy": {"epsilon": 2.0, "center": "private"}})))
        sgd = lambda r: next(s for s in r.stages if s.stage == "dp_sgd").noise_multiplier  # noqa: E731
        assert sgd(record) < sgd(private)


def test_the_centres_phantom_is_drawn_once_per_process_and_callers_cannot_change_it(monkeypatch):
    from privmed.training import centre

    draws = []
    real = centre.generate_phantom
    monkeypatch.setattr(centre, "generate_phantom", lambda spec: draws.append(spec) or real(spec))
    centre._phantom_centre_draw.cache_clear()
    first = centre.phantom_centre_images(SIZE)
    first.zero_()  # a caller's change must not reach the next one
    second = centre.phantom_centre_images(SIZE)
    assert len(draws) == 1
    images, _ = generate_phantom(PhantomSpec(n_samples=PHANTOM_CENTRE_IMAGES, image_size=SIZE))
    torch.testing.assert_close(second, torch.from_numpy(images).unsqueeze(1))
    centre._phantom_centre_draw.cache_clear()


def _maps(n=40, channels=6, side=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, side, side, generator=g) + torch.arange(channels).view(1, -1, 1, 1)


def test_the_channel_release_without_noise_is_the_base_plus_each_units_mean_channel_offset(monkeypatch):
    import privmed.training.centre as centre

    monkeypatch.setattr(centre, "CHANNEL_BOUND_FRACTION", 1e6)  # no clipping: the formula by hand
    x, base = _maps(), torch.randn(6 * 9, generator=torch.Generator().manual_seed(1))
    groups = np.repeat(np.arange(20), 2)  # 20 patients of 2 images each
    center = FeatureCenter(6 * 9)
    stage = set_center_by_channel(center, x, base=base, noise_multiplier=1e-12, generator=torch.Generator(),
                                  groups=groups)
    offset = (x.double().flatten(1) - base.double()).view(40, 6, 9).mean(2).view(20, 2, 6).mean(1).mean(0)
    by_hand = base.double().view(6, 9) + offset.unsqueeze(1)
    torch.testing.assert_close(center.center.double(), by_hand.reshape(-1), atol=1e-5, rtol=0)
    assert (stage.stage, stage.noise_multiplier, stage.sample_rate, stage.steps) == ("feature_centering", 1e-12, 1.0, 1)


def test_one_patient_moves_the_channel_release_by_at_most_its_bound_over_n():
    x, base, groups = _maps(), torch.zeros(6 * 9), np.repeat(np.arange(20), 2)
    bound = CHANNEL_BOUND_FRACTION * math.sqrt(6)

    def released(features):
        center = FeatureCenter(6 * 9)
        set_center_by_channel(center, features, base=base, noise_multiplier=0.0, generator=torch.Generator(),
                              groups=groups)
        return center.center.double().view(6, 9)[:, 0]  # the correction is the same at every position

    changed = x.clone()
    changed[:2] = 1e4 * torch.randn(2, 6, 3, 3)  # patient 0's two images, anything at all
    assert float((released(changed) - released(x)).norm()) <= 2 * bound / 20 + 1e-6
    assert float((released(changed) - released(x)).norm()) > 0.5 * bound / 20  # and the bound is what binds


def test_the_channel_release_adds_noise_of_its_multiplier_times_the_bound_over_n():
    x, base, groups = _maps(n=20), torch.zeros(6 * 9), np.arange(20)
    bound = CHANNEL_BOUND_FRACTION * math.sqrt(6)
    draws = []
    for seed in range(400):
        center = FeatureCenter(6 * 9)
        set_center_by_channel(center, x, base=base, noise_multiplier=3.0, generator=torch.Generator().manual_seed(seed),
                              groups=groups)
        draws.append(center.center.double().view(6, 9)[:, 0])
    spread = torch.stack(draws).std(0)
    torch.testing.assert_close(spread, torch.full((6,), 3.0 * bound / 20, dtype=torch.float64), rtol=0.12, atol=0)
