"""The head's feature centre: the phantom's (free, the default where it can be drawn) or a private release."""

import math

import numpy as np
import pytest
import torch

from privmed.config import config_from_dict
from privmed.data.phantom import PhantomSpec, generate_phantom
from privmed.errors import PrivmedError
from privmed.models import build_for_run, build_model
from privmed.training.inputs import find_center, model_inputs, trainable_part
from privmed.training.start import PHANTOM_CENTRE_IMAGES, public_centre_inputs

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
@pytest.mark.parametrize("center,stages", [("auto", ["dp_sgd"]), ("private", ["feature_centering", "dp_sgd"])])
def test_a_run_with_the_phantom_centre_spends_all_of_epsilon_on_dp_sgd(phantom_root, tmp_path, center, stages):
    from privmed import rundir
    from privmed.training.trainer import train

    config = config_from_dict({**_config(epsilon=2.0, center=center).to_dict(), "out": str(tmp_path / center),
                               "data": {"path": str(phantom_root), "image_size": SIZE}})
    out = train(config)
    record = rundir.read_record(out)
    assert [s.stage for s in record.stages] == stages
    assert record.epsilon == pytest.approx(2.0, rel=0.02)
    phantom_sentence = any("phantom patches" in s for s in record.free_inputs)
    assert phantom_sentence == (center == "auto")
    if center == "auto":  # the whole epsilon buys DP-SGD noise: less of it than beside a centre release
        private = rundir.read_record(train(config_from_dict({**config.to_dict(), "out": str(tmp_path / "p"),
                                                             "privacy": {"epsilon": 2.0, "center": "private"}})))
        sgd = lambda r: next(s for s in r.stages if s.stage == "dp_sgd").noise_multiplier  # noqa: E731
        assert sgd(record) < sgd(private)


def test_the_centres_phantom_is_drawn_once_per_process_and_callers_cannot_change_it(monkeypatch):
    from privmed.training import start

    draws = []
    real = start.generate_phantom
    monkeypatch.setattr(start, "generate_phantom", lambda spec: draws.append(spec) or real(spec))
    start._phantom_centre_draw.cache_clear()
    first = start.phantom_centre_images(SIZE)
    first.zero_()  # a caller's change must not reach the next one
    second = start.phantom_centre_images(SIZE)
    assert len(draws) == 1
    images, _ = generate_phantom(PhantomSpec(n_samples=PHANTOM_CENTRE_IMAGES, image_size=SIZE))
    torch.testing.assert_close(second, torch.from_numpy(images).unsqueeze(1))
    start._phantom_centre_draw.cache_clear()
