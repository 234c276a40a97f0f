"""Pretrained weights, frozen backbones, model.args and MONAI networks by name (issue 18).

Every weights file is saved by the test itself: nothing downloads.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

from privmed.config import config_from_dict
from privmed.errors import PrivmedError, WEIGHTS_MISSING
from privmed.models import ModelConfigError, build_for_run, build_model

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

SIZE = 32
TINY_DENSENET = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1]}


def _config(private: bool = True, **model):
    raw = {"data": {"image_size": SIZE}, "model": {"name": "resnet9_small", **model},
           "training": {"epochs": 2, "batch_size": 32, "augment": False, "bootstrap_resamples": 100}}
    if private:
        raw["privacy"] = {"epsilon": 2.0}
    return config_from_dict(raw)


def _saved_resnet(tmp_path, *, seed=5, wrap=None, **kwargs):
    torch.manual_seed(seed)
    model = build_model("resnet9_small", image_size=SIZE, **kwargs)
    state = model.state_dict()
    torch.save(wrap(state) if wrap else state, tmp_path / "w.pt")
    return model.eval(), tmp_path / "w.pt"


@pytest.mark.parametrize("wrap", [None, lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},
                                  lambda s: {"model": s, "optimizer": {}}], ids=["plain", "ddp-checkpoint", "torchvision"])
@pytest.mark.parametrize("freeze", ["none", "backbone"])
def test_loaded_weights_give_the_saved_models_outputs(tmp_path, wrap, freeze):
    saved, path = _saved_resnet(tmp_path, wrap=wrap)
    torch.manual_seed(99)  # another initialisation: only the file can make them equal
    loaded = build_for_run(_config(weights=str(path), freeze=freeze), num_outputs=1).eval()
    x = torch.rand(6, 1, SIZE, SIZE)
    torch.testing.assert_close(loaded(x), saved(x), rtol=0, atol=1e-6)
    fresh = build_for_run(_config(), num_outputs=1).eval()
    assert not torch.allclose(fresh(x), saved(x))


def test_a_frozen_backbone_keeps_only_the_classifier_trainable(tmp_path):
    _, path = _saved_resnet(tmp_path)
    model = build_for_run(_config(weights=str(path), freeze="backbone"), num_outputs=1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    assert model.frozen_front_end and isinstance(model.head, nn.Linear)
    model.train()
    assert not model.features.training  # a frozen backbone never normalises with batch statistics


def test_frozen_backbone_is_bit_identical_after_dp_training(tmp_path):
    from privmed.training.inputs import model_inputs
    from privmed.training.trainer import train_in_memory

    _, path = _saved_resnet(tmp_path)
    config = _config(weights=str(path), freeze="backbone")
    model = build_for_run(config, num_outputs=1)
    backbone = {k: v.clone() for k, v in model.features.state_dict().items()}
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 1, SIZE, SIZE, generator=g), torch.randint(0, 2, (200, 1), generator=g).float()
    feats = model_inputs(model, x)
    fitted = train_in_memory(config, build=lambda: model, x_train=feats[:160], y_train=y[:160], x_val=feats[160:],
                             y_val=y[160:])
    assert fitted.ledger.mechanisms and fitted.ledger.mechanisms[-1].steps > 0  # DP-SGD really ran
    for key, value in model.features.state_dict().items():
        assert torch.equal(value, backbone[key]), key
    assert any(not torch.equal(v, head[k]) for k, v in model.head.state_dict().items())


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(PrivmedError) as err:
        build_for_run(_config(weights=str(tmp_path / "nope.pt")), num_outputs=1)
    assert str(err.value) == WEIGHTS_MISSING.format(path=tmp_path / "nope.pt")


def test_weights_of_another_model_list_missing_and_unexpected_keys(tmp_path):
    torch.manual_seed(0)
    other = build_model("vit", image_size=SIZE, dim=32, depth=1, num_heads=2)
    torch.save(other.state_dict(), tmp_path / "vit.pt")
    with pytest.raises(PrivmedError, match=r"missing keys: features\.0\.0\.weight.*and \d+ more; unexpected keys: "
                                           r"patch_embed.*Choose the model"):
        build_for_run(_config(weights=str(tmp_path / "vit.pt")), num_outputs=1)
    _, path = _saved_resnet(tmp_path, width=0.5)  # same keys, other widths
    with pytest.raises(PrivmedError, match=r"other shapes: features\.0\.0\.weight \(32, 1, 3, 3\) vs \(16, 1, 3, 3\)"):
        build_for_run(_config(weights=str(path)), num_outputs=1)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_a_file_without_a_state_dict_is_refused(tmp_path, content):
    path = tmp_path / "w.pt"
    if content is None:
        torch.save({"epoch": 3, "args": [1, 2]}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(PrivmedError, match="cannot read weights file .*torch.save\\(model.state_dict\\(\\), PATH\\)"):
        build_for_run(_config(weights=str(path)), num_outputs=1)


def test_rgb_weights_and_another_head_size_are_adapted(tmp_path, caplog):
    torch.manual_seed(1)
    rgb = build_model("resnet9_small", image_size=SIZE, in_channels=3, num_outputs=5)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    model = build_for_run(_config(weights=str(tmp_path / "rgb.pt")), num_outputs=1)
    first = rgb.state_dict()["features.0.0.weight"]
    torch.testing.assert_close(model.state_dict()["features.0.0.weight"], first.sum(1, keepdim=True))
    assert model.head.weight.shape == (1, model.head.in_features)
    assert "head.weight" in caplog.text  # told (logged; the CLI shows it) that the classifier starts fresh


def test_a_raw_monai_networks_weights_load_into_privmeds_wrapper(tmp_path):
    from privmed.models.monai_nets import monai_class

    torch.manual_seed(2)
    raw = monai_class("DenseNet121")(spatial_dims=2, in_channels=1, out_channels=1, **TINY_DENSENET).eval()
    torch.save(raw.state_dict(), tmp_path / "dense.pt")
    model = build_for_run(_config(private=False, name="monai:DenseNet121", args=TINY_DENSENET,
                                  weights=str(tmp_path / "dense.pt")), num_outputs=1).eval()
    x = torch.rand(3, 1, SIZE, SIZE)
    torch.testing.assert_close(model(x), raw(x), rtol=0, atol=1e-6)
    features = monai_class("ResNetFeatures")("resnet10", pretrained=False, spatial_dims=2, in_channels=1)
    torch.save(features.state_dict(), tmp_path / "backbone.pt")  # no classifier in the file: the head starts fresh
    model = build_for_run(_config(name="monai:ResNetFeatures", args={"model_name": "resnet10"},
                                  weights=str(tmp_path / "backbone.pt"), freeze="backbone"), num_outputs=1)
    torch.testing.assert_close(model.features.net.net.conv1.weight, features.conv1.weight)


def test_model_args_reach_the_network_and_unknown_ones_list_the_accepted():
    narrow = build_for_run(_config(private=False), num_outputs=1)
    wide = build_for_run(_config(private=False, args={"width": 0.5}), num_outputs=1)
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in narrow.parameters())
    with pytest.raises(ModelConfigError, match="takes no argument widht; it accepts: act, channels, width"):
        _config(args={"widht": 0.5})
    with pytest.raises(ModelConfigError, match=r"\['image_size'\] .* come from the data"):
        _config(args={"image_size": 64})
    with pytest.raises(ModelConfigError, match="nothing downloads"):
        config_from_dict({"model": {"name": "monai:DenseNet121", "args": {"pretrained": True}}})
    with pytest.raises(ModelConfigError, match="MONAI has no network 'NoSuchNet'"):
        config_from_dict({"model": {"name": "monai:NoSuchNet"}})


def test_the_cli_passes_model_args_as_yaml_values(tmp_path):
    from privmed.cli import build_parser, cli_overrides

    args = build_parser().parse_args(["train", "--model-arg", "width=0.5", "--model-arg", "channels=[8,8,16,16]",
                                 "--model-weights", "w.pt", "--freeze", "backbone"])
    model = cli_overrides(args)["model"]
    assert model == {"args": {"width": 0.5, "channels": [8, 8, 16, 16]}, "weights": "w.pt", "freeze": "backbone"}


def test_a_frozen_backbone_needs_weights():
    with pytest.raises(PrivmedError, match="needs --model-weights"):
        _config(freeze="backbone")


def test_monai_networks_by_name_fill_the_datas_dimensions():
    x = torch.rand(2, 1, SIZE, SIZE)
    dense = build_model("monai:DenseNet121", image_size=SIZE, num_outputs=3, **TINY_DENSENET)
    backbone = build_model("monai:ResNetFeatures", image_size=SIZE, num_outputs=2, model_name="resnet10")
    assert dense(x).shape == (2, 3) and backbone(x).shape == (2, 2)
    assert isinstance(backbone.head, nn.Linear)  # a feature backbone gets a pooled linear head
    unet = build_model("monai:BasicUNet", image_size=SIZE, features=[4, 4, 4, 4, 4, 4])
    with pytest.raises(PrivmedError, match=r"BasicUNet returns outputs of shape \(2, 1, 32, 32\).*not a classifier"):
        unet(x)
    volume = build_model("monai:DenseNet121", spatial_dims=3, image_size=16, **TINY_DENSENET)
    assert volume(torch.rand(2, 1, 16, 16, 16)).shape == (2, 1)


def test_monai_transformers_keep_their_logits():
    if importlib.util.find_spec("einops") is None:  # MONAI's ViT and Swin networks need it
        with pytest.raises(ModelConfigError, match="needs a package that is not installed.*einops"):
            build_model("monai:ViT", image_size=SIZE, patch_size=8)
        pytest.skip("einops is not installed (MONAI's transformers need it); the message was checked instead")
    vit = build_model("monai:ViT", image_size=SIZE, num_outputs=2, patch_size=8, hidden_size=16, mlp_dim=16,
                      num_layers=1, num_heads=2)  # returns (logits, hidden states): the logits are kept
    assert vit(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2)


def test_batchnorm_gets_one_message_naming_the_layer_and_the_ways_out(tmp_path):
    args = dict(name="monai:DenseNet121", args=TINY_DENSENET)
    with pytest.raises(PrivmedError) as err:
        build_for_run(_config(**args), num_outputs=1)
    message = str(err.value)
    assert message.startswith("layer 'net.features.norm0' (BatchNorm2d) of model 'monai:DenseNet121' cannot be "
                              "trained with DP-SGD: BatchNorm cannot support training with differential privacy.")
    assert "--freeze backbone" in message and "--replace-batchnorm" in message and len(message) < 700
    build_for_run(_config(private=False, **args), num_outputs=1)  # non-private: BatchNorm is allowed
    fixed = build_for_run(_config(replace_batchnorm=True, **args), num_outputs=1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fixed.modules())
    torch.manual_seed(0)
    torch.save(build_model("monai:DenseNet121", image_size=SIZE, **TINY_DENSENET).state_dict(), tmp_path / "d.pt")
    frozen = build_for_run(_config(weights=str(tmp_path / "d.pt"), freeze="backbone", **args), num_outputs=1)
    frozen.train()
    x = torch.rand(4, 1, SIZE, SIZE)  # BatchNorm in the frozen backbone uses stored statistics: per sample
    torch.testing.assert_close(frozen.features(x)[:1], frozen.features(x[:1]))


def test_the_first_reference_recipe_runs_end_to_end_from_a_weights_file(tmp_path, phantom_root, capsys):
    """Frozen pretrained backbone, DP-trained head: ledger and report from `privmed train`."""
    from privmed.cli import main

    _, weights = _saved_resnet(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(phantom_root), "--model", "resnet9_small", "--model-weights", str(weights),
                 "--freeze", "backbone", "--epsilon", "2", "--image-size", str(SIZE), "--epochs", "2",
                 "--batch-size", "32", "--bootstrap", "100", "--out", str(run)]) == 0
    ledger = json.loads((run / "privacy.json").read_text())
    assert ledger["private"] and ledger["epsilon"] == pytest.approx(2, rel=0.02)
    (stated,) = ledger["free_inputs"]
    assert stated.startswith("Pretrained weights 'w.pt' (SHA-256 ") and "a frozen backbone" in stated
    assert "if they were trained on the private data, the epsilon above does not hold" in ledger["summary"]
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["splits"]["test"]["auroc"]["value"])
    assert main(["evaluate", str(run), "--bootstrap", "100"]) == 0
    # the frozen backbone comes from the file again: another file at that path is refused, with what to do
    torch.save({k: v + 1 for k, v in torch.load(weights).items()}, weights)
    assert main(["evaluate", str(run), "--bootstrap", "100"]) == 2
    assert "is not the one this run was trained from" in capsys.readouterr().err
    missing = tmp_path / "run2"
    assert main(["train", "--data", str(phantom_root), "--model-weights", str(tmp_path / "gone.pt"), "--freeze",
                 "backbone", "--epsilon", "2", "--image-size", str(SIZE), "--out", str(missing)]) == 2
    assert not missing.exists()


def test_a_monai_network_with_its_own_norm_trains_under_dp_sgd():
    from privmed.training.trainer import train_in_memory

    config = config_from_dict({"data": {"image_size": SIZE}, "privacy": {"noise_multiplier": 1.0},
                               "model": {"name": "monai:DenseNet121", "args": {**TINY_DENSENET, "norm": "instance"}},
                               "training": {"epochs": 1, "batch_size": 32, "augment": False}})
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(160, 1, SIZE, SIZE, generator=g), torch.randint(0, 2, (160, 1), generator=g).float()
    model = build_for_run(config, num_outputs=1)
    assert any(isinstance(m, nn.InstanceNorm2d) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fitted = train_in_memory(config, build=lambda: model, x_train=x[:128], y_train=y[:128], x_val=x[128:],
                             y_val=y[128:])
    assert fitted.ledger.mechanisms[-1].steps == 4
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_frozen_backbone_run_records_its_weights_and_refuses_another_file(tmp_path):
    from privmed import rundir
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset
    from privmed.errors import WEIGHTS_CHANGED
    from privmed.evaluation.external import load_run
    from privmed.models.pretrained import weights_digest
    from privmed.training.trainer import train

    _, path = _saved_resnet(tmp_path)
    data = write_phantom_dataset(tmp_path / "data", PhantomSpec(n_samples=120, image_size=SIZE))
    raw = {"data": {"path": str(data), "image_size": SIZE}, "out": str(tmp_path / "run"),
           "model": {"name": "resnet9_small", "weights": str(path), "freeze": "backbone"},
           "training": {"epochs": 1, "batch_size": 32, "augment": False, "bootstrap_resamples": 100}}
    run = train(config_from_dict(raw))
    recorded = weights_digest(path)
    state = torch.load(run / rundir.CHECKPOINTS / rundir.BEST, weights_only=False)
    assert state["weights_sha256"] == recorded
    assert recorded[:16] in " ".join(rundir.read_record(run).free_inputs)
    load_run(run)  # the same file: accepted

    _saved_resnet(tmp_path, seed=6)  # other weights, same path and size
    assert weights_digest(path) != recorded  # a changed file is hashed again, not read from the memo
    with pytest.raises(PrivmedError) as err:
        load_run(run)
    assert str(err.value) == WEIGHTS_CHANGED.format(path=path, recorded=recorded[:16], now=weights_digest(path)[:16])
