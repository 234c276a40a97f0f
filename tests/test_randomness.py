"""Secret randomness: the recorded seed does not let anyone take the centre's noise away again."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from privmed import rundir
from privmed.config import config_from_dict
from privmed.data.sources import load_dataset
from privmed.models import build_model
from privmed.privacy.mechanisms import gaussian_noise
from privmed.privacy.randomness import CENTRE_STREAM, secret_generator
from privmed.training.inputs import model_inputs
from privmed.training.trainer import train


def _config(root, out, **privacy):
    return config_from_dict({
        "out": str(out), "data": {"path": str(root), "image_size": 32}, "model": {"name": "scatter_linear"},
        "privacy": {"epsilon": 3.0, "center": "private", **privacy},  # the centre release is what is attacked
        "training": {"epochs": 1, "batch_size": 32, "bootstrap_resamples": 100, "seed": 5},
    })


def _replay_residuals(run, config) -> list[float]:
    """What an attacker does with a run directory: exact clipped patient-mean sum from the data,
    regenerate the centre's noise from the recorded seed (the old and the replayable derivations),
    and measure how far the stored centre is from 'exact sum + regenerated noise'."""
    recorded = rundir.read_config_dict(run)
    seed = recorded["training"]["seed"]
    sigma = json.loads((run / rundir.PRIVACY).read_text())["stages"][0]["noise_multiplier"]
    data = load_dataset(config.data).split("train")
    model = build_model("scatter_linear", spatial_dims=2, in_channels=1, num_outputs=1, image_size=32, norm="group")
    flat = model_inputs(model, data.image_tensor).flatten(1).double()
    d = flat.shape[1]
    bound = d ** 0.5
    clipped = flat * (bound / flat.norm(dim=1, keepdim=True)).clamp(max=1.0)
    _, groups = np.unique(data.table["patient_id"].astype(str), return_inverse=True)
    means = pd.DataFrame(clipped.numpy()).groupby(groups).mean().to_numpy()
    exact_sum = torch.from_numpy(means.sum(0))
    state = torch.load(run / rundir.CHECKPOINTS / rundir.BEST, weights_only=False)["model"]
    stored = next(v for k, v in state.items() if k.endswith("center")).double()
    released_sum = stored * len(means)
    guesses = [torch.Generator().manual_seed(seed + 7919), secret_generator(stream=CENTRE_STREAM, replay_seed=seed)]
    return [((released_sum - exact_sum - gaussian_noise(d, sigma * bound, g)).norm()
             / (sigma * bound * d ** 0.5)).item() for g in guesses]


@pytest.mark.slow
def test_the_recorded_seed_does_not_regenerate_the_centre_noise(phantom_root, tmp_path):
    config = _config(phantom_root, tmp_path / "secret")
    residuals = _replay_residuals(train(config), config)
    # subtracting a wrong noise guess leaves about sqrt(2) noise norms; the right one would leave ~0
    assert min(residuals) > 0.5, residuals


def test_replayable_noise_is_regenerated_from_the_seed(phantom_root, tmp_path):
    """The attack above works on a replayable run, so the secret-noise test can fail."""
    config = _config(phantom_root, tmp_path / "replay", replayable_noise=True)
    residuals = _replay_residuals(train(config), config)
    assert residuals[1] < 1e-4, residuals


def test_a_private_centre_needs_a_generator_and_the_exact_mean_draws_nothing():
    from privmed.models.scatter import FeatureCenter
    from privmed.training.centre import set_center

    features = torch.randn(20, 6, generator=torch.Generator().manual_seed(0))  # test data, not DP noise
    centre = FeatureCenter(6)
    assert set_center(centre, features, noise_multiplier=None) is None
    assert torch.allclose(centre.center, features.mean(0))
    with pytest.raises(ValueError, match="secret generator"):
        set_center(centre, features, noise_multiplier=5.0)
    assert torch.allclose(centre.center, features.mean(0))  # the refused release left the centre as it was


def test_pretraining_on_synthetic_images_follows_the_seed_and_draws_from_no_secret_stream(monkeypatch):
    """No guarantee rests on the sampling of synthetic images (not this run's private data): it is public,
    reproducible from training.seed, and never taken from the guarantee-bearing streams."""
    import privmed.privacy.engine as engine
    from privmed.training.start import pretrain
    from privmed.training.state import SyntheticInputs

    def refuse(**_):
        raise AssertionError("pretraining drew from a guarantee-bearing stream")

    monkeypatch.setattr(engine, "secret_generator", refuse)
    g = torch.Generator().manual_seed(0)
    synthetic = SyntheticInputs(torch.rand(40, 6, generator=g), torch.randint(0, 2, (40, 1), generator=g).float(),
                                source=None)

    def pretrained(seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        net = torch.nn.Linear(6, 1)
        config = config_from_dict({"training": {"batch_size": 8, "seed": seed},
                                   "synthetic": {"pretrain_epochs": 2}})
        pretrain(net, synthetic, config, "cpu")
        return net.weight.detach().clone()

    assert torch.equal(pretrained(1), pretrained(1))
    assert not torch.equal(pretrained(1), pretrained(2))
