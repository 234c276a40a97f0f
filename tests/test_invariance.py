"""Free invariances (dihedral averaging, per-image intensity standardisation) and the scanner shift."""

import pytest
import torch

from privmed.data.shift import acquisition_augment, digital_scanner
from privmed.models.invariance import InvariantFeatures, IntensityStandardise, dihedral_views
from privmed.models.scatter import ScatterFeatures


def _images(n=3, size=32):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0))


def test_dihedral_views_are_the_eight_distinct_transforms():
    views = dihedral_views(_images(1))
    assert len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_dihedral_average_of_scattering_is_invariant_to_rotation_and_flip():
    front = InvariantFeatures(ScatterFeatures(1, 32, J=2, pool_size=4, log_scale=True, norm_groups=1), dihedral=True)
    x = _images()
    reference = front(x)
    for view in dihedral_views(x)[1:]:
        assert torch.allclose(front(view), reference, atol=1e-5)
    assert not torch.allclose(ScatterFeatures(1, 32, J=2, pool_size=4, log_scale=True)(x.rot90(1, (-2, -1))),
                              ScatterFeatures(1, 32, J=2, pool_size=4, log_scale=True)(x), atol=1e-3)
    assert front.output_shape == front.inner.output_shape


@pytest.mark.parametrize("mode", ["zscore", "quantile"])
def test_standardisation_removes_the_grey_level_curve(mode):
    x = _images()
    norm = IntensityStandardise(mode)
    curve = 0.1 + 0.5 * x if mode == "zscore" else x**2.2  # affine for zscore, any increasing curve for quantile
    assert torch.allclose(norm(curve), norm(x), atol=1e-4)


def test_unknown_input_norm_is_refused():
    with pytest.raises(ValueError, match="input_norm"):
        IntensityStandardise("clahe")


def test_digital_scanner_is_fixed_darker_and_higher_contrast():
    x = 0.52 + 0.09 * torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(2))
    shifted = digital_scanner(x)
    assert torch.equal(shifted, digital_scanner(x))  # a fixed transform
    assert shifted.shape == x.shape
    assert shifted.mean() < x.mean() - 0.08
    assert shifted.flatten(1).std(1).mean() > 1.4 * x.flatten(1).std(1).mean()


def test_acquisition_augment_differs_per_image_and_stays_in_range():
    x = torch.full((5, 1, 16, 16), 0.5) + 0.05 * torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = acquisition_augment(x, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert len({round(v, 4) for v in out.flatten(1).std(1).tolist()}) == 5


def test_scatter_linear_reads_grey_level_ranks_by_default_and_its_options_build_an_invariant_model():
    from privmed.models.scatter import build_scatter_linear

    plain = build_scatter_linear(image_size=32, dihedral=False, input_norm="none", standardise=True)
    assert isinstance(plain.features, ScatterFeatures)  # the plain front end (and its cached features) as it was
    default = build_scatter_linear(image_size=32).eval()
    assert isinstance(default.features, InvariantFeatures) and default.features.dihedral
    x = _images(2)
    with torch.no_grad():  # no grey-level curve a scanner applies moves the default's output, nor a rotation
        for scanner in (lambda v: v ** 1.7, lambda v: 0.1 + 0.6 * v, torch.sqrt):
            assert torch.allclose(default(scanner(x)), default(x), atol=1e-4)
        assert torch.allclose(default(x.rot90(1, (-2, -1))), default(x), atol=1e-4)
    model = build_scatter_linear(image_size=32, dihedral=True, input_norm="quantile").eval()
    x = _images(2)
    with torch.no_grad():
        reference = model(x)
        assert torch.allclose(model(x.flip(-1) ** 1.7), reference, atol=1e-4)
    assert model.features.output_shape == plain.features.output_shape == default.features.output_shape


def test_the_invariances_are_model_args_of_scatter_linear_and_refused_for_other_models():
    from privmed.config import config_from_dict
    from privmed.errors import PrivmedError
    from privmed.models import build_for_run
    from privmed.models.invariance import InvariantFeatures

    config = config_from_dict({"data": {"image_size": 32}, "model": {"args": {"dihedral": True, "input_norm": "zscore"}}})
    assert isinstance(build_for_run(config, num_outputs=1).features, InvariantFeatures)
    plain = config_from_dict({"data": {"image_size": 32},
                              "model": {"args": {"input_norm": "none", "standardise": True, "dihedral": False}}})
    assert not isinstance(build_for_run(plain, num_outputs=1).features, InvariantFeatures)
    with pytest.raises(PrivmedError, match="dihedral"):
        config_from_dict({"model": {"name": "resnet9_small", "args": {"dihedral": True}}})


def test_low_pass_keeps_the_mean_removes_fine_detail_and_is_off_at_zero():
    from privmed.models.invariance import LowPass

    x = _images(2)
    assert torch.equal(LowPass(0.0)(x), x)
    smooth = LowPass(1.0)(x)
    assert smooth.shape == x.shape
    assert torch.allclose(smooth.mean(), x.mean(), atol=2e-2)
    # a checkerboard (the finest scale) is nearly erased, a constant image kept
    checker = (torch.arange(32).view(-1, 1) + torch.arange(32).view(1, -1)) % 2
    checker = checker.float().view(1, 1, 32, 32)
    assert LowPass(1.0)(checker)[..., 4:-4, 4:-4].std() < 0.02 * checker.std()
    assert torch.allclose(LowPass(2.0)(torch.full((1, 1, 16, 16), 0.3)), torch.full((1, 1, 16, 16), 0.3))
    with pytest.raises(ValueError, match="blur"):
        LowPass(-1.0)


def test_blur_is_a_model_arg_of_scatter_linear_and_keys_the_feature_cache():
    from privmed.config import config_from_dict
    from privmed.models import build_for_run

    model = build_for_run(config_from_dict({"data": {"image_size": 32}, "model": {"args": {"blur": 1.0}}}),
                          num_outputs=1)
    assert isinstance(model.features, InvariantFeatures) and model.features.low_pass.sigma == 1.0
    assert "sigma=1.0" in repr(model.features)


def test_a_run_records_its_front_end_and_a_run_from_before_the_defaults_changed_is_rebuilt_as_trained(
        phantom_root, tmp_path, capsys):
    import json

    import yaml

    from privmed import rundir
    from privmed.cli import main
    from privmed.evaluation.external import load_run

    fast = ["--data", str(phantom_root), "--image-size", "32", "--epochs", "2", "--batch-size", "32", "--bootstrap", "100"]
    assert main(["train", *fast, "--out", str(tmp_path / "new")]) == 0
    assert rundir.read_config_dict(tmp_path / "new")["model"]["args"] == TODAY
    # a run written before any default changed: trained on the plain second-order front end on raw grey levels,
    # standardised, its config.yaml without any of the keys
    old = tmp_path / "old"
    plain_second_order = ["--model-arg", "dihedral=false", "--model-arg", "max_order=2", "--model-arg",
                          "input_norm=none", "--model-arg", "standardise=true"]
    assert main(["train", *fast, "--out", str(old), *plain_second_order]) == 0
    raw = rundir.read_config_dict(old)
    (old / "seals.json").unlink()  # written before keyed seals too
    del raw["config_version"]  # and before config versions (privmed.config.migrate: such a run is version 1)
    for key in TODAY:
        del raw["model"]["args"][key]
    (old / rundir.CONFIG).write_text(yaml.safe_dump(raw, sort_keys=False))
    _, model, _ = load_run(old)
    assert not isinstance(model.features, InvariantFeatures) and model.features.max_order == 2
    assert isinstance(model.features.norm, torch.nn.GroupNorm)
    # so is one from before privacy.center existed: its head was centred by the released training mean
    del raw["privacy"]["center"]
    (old / rundir.CONFIG).write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_run(old)[0].privacy.center == "private"
    capsys.readouterr()
    assert main(["evaluate", str(old), "--split", "test", "--bootstrap", "100"]) == 0
    evaluated = json.loads((old / "evaluations" / phantom_root.name / "test" / rundir.METRICS).read_text())
    trained = json.loads((old / rundir.METRICS).read_text())
    assert evaluated["splits"]["test"]["auroc"]["value"] == pytest.approx(
        trained["splits"]["test"]["auroc"]["value"], abs=1e-6)
    # resuming it under today's defaults would switch its front end: refused, naming the arguments
    code = main(["train", *fast, "--out", str(old), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "input_norm" in err and "standardise" in err


#: scatter_linear's front-end arguments today, recorded in every run
TODAY = {"dihedral": True, "max_order": 2, "input_norm": "quantile", "standardise": False}


def test_runs_recorded_between_the_default_changes_are_rebuilt_as_they_were_trained():
    from privmed.config import config_from_dict, config_from_run_dict

    assert config_from_dict({}).model.args == TODAY
    # written after dihedral was recorded and before max_order was: dihedral as recorded, the second order, raw grey
    # levels, standardised
    between = config_from_run_dict({"model": {"name": "scatter_linear", "args": {"dihedral": True}}})
    assert between.model.args == {"dihedral": True, "max_order": 2, "input_norm": "none", "standardise": True}
    # written after max_order was recorded (the first-order, rotation-averaged default) and before input_norm was
    later = config_from_run_dict({"model": {"name": "scatter_linear", "args": {"dihedral": True, "max_order": 1}}})
    assert later.model.args == {"dihedral": True, "max_order": 1, "input_norm": "none", "standardise": True}


def test_first_order_scattering_keeps_the_first_1_plus_jl_coefficients_of_the_second_order_transform():
    """``max_order=1`` (a front-end option of ``scatter_linear``) computes the order-0 and order-1 coefficients
    alone: the same numbers as the first 1 + JL channels of the full transform, 25 of 217 at J=3."""
    from privmed.models.scatter import build_scatter_linear, make_scattering, scattering_channels

    x = _images(2)
    full, first = make_scattering(2, 32, 8)(x), make_scattering(2, 32, 8, max_order=1)(x)
    assert first.shape[2] == scattering_channels(2, 8, max_order=1) == 1 + 2 * 8
    torch.testing.assert_close(first, full[:, :, :first.shape[2]])
    model = build_scatter_linear(image_size=128, max_order=1)
    assert model.features.output_shape == (25, 4, 4) and scattering_channels(3, 8) == 217


def test_an_order_privmed_does_not_build_is_a_clear_error():
    from privmed.models import build_model
    from privmed.models.registry import ModelConfigError

    with pytest.raises(ModelConfigError, match="max_order=3 is not a scattering order privmed builds; use 1 or 2"):
        build_model("scatter_linear", spatial_dims=2, in_channels=1, num_outputs=1, image_size=32, max_order=3)


def test_the_feature_cache_tells_the_orders_apart_even_without_a_normalisation_that_counts_channels():
    from privmed.models.scatter import build_scatter_linear
    from privmed.training.inputs import _front_end_key

    key = lambda order: _front_end_key(build_scatter_linear(image_size=32, norm="batch", max_order=order).features)  # noqa: E731
    assert key(1) != key(2)
