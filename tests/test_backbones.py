"""timm and torchvision backbones from a weights file, and DP fine-tuning beyond a frozen backbone (issue 35).

Needs the ``backbones`` extra (timm, torchvision, peft, safetensors) beside the torch PyPI's torchvision
was built with: ``make test-backbones`` installs it into ``.venv-backbones`` and runs this file. In the
base environment every test here skips, saying so. Every weights file is written by the test itself,
the way the library saves it: nothing downloads.
"""

from __future__ import annotations

import argparse
import copy
import fractions
import json

import pytest
import torch
from torch import nn

from privmed.config import config_from_dict
from privmed.errors import PrivmedError


def _missing_backbones() -> str | None:
    try:
        import peft  # noqa: F401
        import safetensors  # noqa: F401
        import timm  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as err:  # ImportError, or torchvision's operator error beside another torch build
        return (f"needs the backbones extra ({type(err).__name__}: {str(err).splitlines()[0][:100]}); "
                f"`make test-backbones` installs it into .venv-backbones and runs these tests")
    return None


MISSING = _missing_backbones()
pytestmark = [pytest.mark.backbones, pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")]
needs_backbones = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

SWIN = "swin_tiny_patch4_window7_224"
#: a Swin of the same family, small enough for gradient checks on 2 cores (32 px, one block a stage)
TINY_SWIN = {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
             "drop_path_rate": 0.0, "input_size": 32}  # no stochastic depth: the two passes compared must agree


def _config(name: str, *, image_size: int = 224, private: bool = False, **model):
    raw = {"data": {"image_size": image_size}, "model": {"name": name, **model}}
    if private:
        raw["privacy"] = {"epsilon": 1.0}
    return config_from_dict(raw)


def _grey_input(x: torch.Tensor, mean, std) -> torch.Tensor:
    """What the source (RGB) model sees of grey images: three equal channels, channel-averaged statistics."""
    return ((x - sum(mean) / 3) / (sum(std) / 3)).repeat(1, 3, 1, 1)


def _saved_swin(tmp_path, fmt: str):
    import timm

    torch.manual_seed(1)
    source = timm.create_model(SWIN, pretrained=False).eval()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file(source.state_dict(), str(path))
    else:  # timm's train.py: the weights beside an argparse Namespace of its arguments
        path = tmp_path / "model_best.pth.tar"
        torch.save({"epoch": 3, "arch": SWIN, "state_dict": source.state_dict(),
                    "args": argparse.Namespace(model=SWIN, lr=5e-4, epochs=3, smoothing=0.1)}, path)
    return source, path


@needs_backbones
@pytest.mark.parametrize("fmt", ["pth.tar", "safetensors"])
def test_a_timm_swin_checkpoint_loads_by_name_and_gives_the_source_models_outputs(tmp_path, fmt):
    from privmed.models import build_for_run

    source, path = _saved_swin(tmp_path, fmt)
    config = _config(f"timm:{SWIN}", weights=str(path), freeze="backbone")
    args = config.model.args
    assert (args["input_size"], args["interpolation"]) == (224, "bicubic")  # timm's pretrained_cfg, recorded
    model = build_for_run(config, num_outputs=2).eval()
    x = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        expected = source.forward_head(source.forward_features(_grey_input(x, args["mean"], args["std"])),
                                       pre_logits=True)
        torch.testing.assert_close(model.features(x), expected, rtol=1e-4, atol=1e-5)
        source.reset_classifier(2)
        source.head.fc.load_state_dict(model.head.state_dict())  # the replaced head: the task's 2 outputs
        torch.testing.assert_close(model(x), source(_grey_input(x, args["mean"], args["std"])), rtol=1e-4,
                                   atol=1e-5)


@needs_backbones
@pytest.mark.parametrize("file_name", ["resnet18.pth", "pytorch_model.bin"])
def test_torchvision_weights_load_by_name_and_give_the_source_models_logits(tmp_path, file_name):
    import torchvision

    from privmed.models import build_for_run

    torch.manual_seed(2)
    source = torchvision.models.resnet18(weights=None).eval()
    for bn in source.modules():  # stored statistics that are not the defaults, so loading them is checked
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0)
    torch.save(source.state_dict(), tmp_path / file_name)
    config = _config("torchvision:resnet18", weights=str(tmp_path / file_name))
    model = build_for_run(config, num_outputs=3).eval()
    source.fc = copy.deepcopy(model.net.fc)
    x = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(_grey_input(x, config.model.args["mean"],
                                                                config.model.args["std"])), rtol=1e-4, atol=1e-5)


@needs_backbones
def test_a_checkpoint_pickling_any_other_class_is_refused(tmp_path):
    from privmed.models.pretrained import read_state_dict

    path = tmp_path / "odd.pth.tar"
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": fractions.Fraction(1, 3)}, path)
    with pytest.raises(PrivmedError, match="cannot read weights file"):
        read_state_dict(path)


@needs_backbones
def test_the_expected_input_is_recorded_and_an_unknown_name_lists_some_the_library_has():
    args = _config("torchvision:resnet50").model.args
    assert args == {"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                    "interpolation": "bilinear"}
    assert _config("torchvision:resnet50", args={"input_size": 192}).model.args["input_size"] == 192  # the user's value wins
    with pytest.raises(PrivmedError, match="timm has no model 'timm:swin_tinny"):
        _config("timm:swin_tinny")
    with pytest.raises(PrivmedError, match="come from the data"):
        _config("timm:resnet18", args={"pretrained": True})


# --------------------------------------------------------------------------- DP fine-tuning modes


def _tiny(name: str, freeze: str, tmp_path):
    """A small model of ``name``'s family with weights from a file and ``freeze`` applied, in float64 (so a wrong
    per-sample gradient stands out from rounding)."""
    from privmed.models import build_model
    from privmed.models.finetune import apply_freeze
    from privmed.models.pretrained import last_linear, load_weights

    extra = dict(TINY_SWIN) if name.startswith("timm:") else {"input_size": 32}
    torch.manual_seed(3)
    model = build_model(name, num_outputs=2, image_size=32, **extra)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    load_weights(model, tmp_path / "w.pt", head=last_linear(model))
    return apply_freeze(model.double(), freeze)


def _reference_grads(model: nn.Module, x, y) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model)
    grads: dict[str, list] = {n: [] for n, p in model.named_parameters() if p.requires_grad}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1], reduction="sum").backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                grads[n].append(p.grad.detach().clone())
    return {n: torch.stack(g) for n, g in grads.items()}


@needs_backbones
@pytest.mark.parametrize("freeze", ["lora", "bias", "last_block"])
@pytest.mark.parametrize("name", [f"timm:{SWIN}", "torchvision:resnet18"])
def test_per_sample_gradients_of_the_fine_tuned_part_match_one_sample_at_a_time(tmp_path, name, freeze):
    from opacus.grad_sample import get_gsm_class

    from privmed.models.parts import is_feature_model, trainable_part

    model = _tiny(name, freeze, tmp_path)
    x, y = torch.rand(4, 1, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    if is_feature_model(model):  # last_block: the frozen part is computed once, the rest trains
        with torch.no_grad():
            x = model.features(x)
    net = trainable_part(model).train()
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    kind = {"lora": ".lora_", "bias": "bias", "last_block": ""}[freeze]
    assert trained and all(kind in n or n.startswith(("net.head", "net.fc")) for n in trained)
    if name.startswith("timm:") and freeze != "last_block":  # window attention, its windows folded per image
        assert any(".mlp.fc1." in n for n in trained)
        assert {"qkv", "proj"} <= {n.split(".attn.")[1].split(".")[0] for n in trained if "blocks.0.attn." in n}
        assert not any("relative_position_bias_table" in n for n in trained)  # a module with a buffer: frozen
    ref = _reference_grads(net, x, y)
    gsm = get_gsm_class("hooks")(net, batch_first=True, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    for n, p in net.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad_sample, ref[n], rtol=1e-7, atol=1e-10 * max(ref[n].abs().max(), 1e-3),
                                       msg=lambda m, n=n: f"{name}/{freeze}: {n}: {m}")
    assert any(ref[n].abs().max() > 0 for n in ref)  # not a check of zeros against zeros


@needs_backbones
def test_last_block_caches_what_comes_before_it_and_a_batchnorm_stays_per_sample(tmp_path):
    from privmed.models.finetune import FrozenBatchNorm, LastBlockClassifier

    model = _tiny("torchvision:resnet18", "last_block", tmp_path)
    assert isinstance(model, LastBlockClassifier) and model.features.block == "net.layer4"
    assert not any(p.requires_grad for p in model.features.parameters())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm) for m in model.head.net.layer4.modules())
    model.train()
    x = torch.rand(3, 1, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(model(x)[:1], model(x[:1]))  # no batch statistics, in training mode too


def test_the_freeze_modes_of_the_config_the_cli_and_the_models_agree():
    from privmed.cli import build_parser
    from privmed.config import FREEZE_MODES
    from privmed.models.finetune import FREEZE_MODES as APPLIED

    assert FREEZE_MODES == tuple(APPLIED)
    assert build_parser().parse_args(["train", "--freeze", "last_block"]).freeze == "last_block"


@pytest.mark.parametrize("freeze", ["bias", "last_block"])
def test_bias_and_last_block_fine_tune_privmeds_own_cnn_under_dp_without_the_extra(tmp_path, freeze):
    """The two modes that need no peft work on any network with a linear head, in the base install too."""
    from opacus.grad_sample import get_gsm_class

    from privmed.models import build_for_run, build_model
    from privmed.models.parts import is_feature_model, trainable_part

    torch.manual_seed(4)
    torch.save(build_model("resnet9_small", image_size=32, num_outputs=2).state_dict(), tmp_path / "w.pt")
    config = config_from_dict({"data": {"image_size": 32}, "privacy": {"epsilon": 1.0},
                               "model": {"name": "resnet9_small", "weights": str(tmp_path / "w.pt"), "freeze": freeze}})
    model = build_for_run(config, num_outputs=2).double()  # checked by Opacus's validator for DP-SGD
    x, y = torch.rand(4, 1, 32, 32, dtype=torch.float64), torch.tensor([1, 0, 0, 1])
    if is_feature_model(model):
        with torch.no_grad():
            x = model.features(x)
    net = trainable_part(model).train()
    trained = [n for n, p in net.named_parameters() if p.requires_grad]
    if freeze == "bias":
        assert all(n.endswith(".bias") or n.startswith("head.") for n in trained) and len(trained) > 2
    else:  # the last residual block (features.5) and the head; everything before it computed once
        assert model.features.block == "features.5" and {n.split(".")[0] for n in trained} == {"features", "head"}
        assert all(n.startswith(("features.5.", "head.")) for n in trained)
    ref = _reference_grads(net, x, y)
    gsm = get_gsm_class("hooks")(net, batch_first=True, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    for n, p in net.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad_sample, ref[n], rtol=1e-7, atol=1e-10 * max(ref[n].abs().max(), 1e-3))


class _Windowed(nn.Module):
    """A toy of a Swin's window attention: 4 x 4-pixel windows of every image stacked in dimension 0, a linear
    layer over each window's tokens, then a head. ``image_major``: each image's windows are one block of rows
    (as timm and torchvision partition); otherwise window-major, rows of all images interleaved."""

    def __init__(self, *, image_major: bool = True) -> None:
        super().__init__()
        self.embed, self.mix, self.head = nn.Conv2d(1, 4, 1), nn.Linear(4, 4), nn.Linear(4, 2)
        self.image_major = image_major

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).permute(0, 2, 3, 1)  # B, H, W, C
        b, h, w, c = x.shape
        windows = x.reshape(b, h // 4, 4, w // 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, 16, c)
        rows = windows if self.image_major else windows.transpose(0, 1)
        mixed = self.mix(rows.reshape(-1, 16, c)).tanh().reshape(rows.shape)
        mixed = mixed if self.image_major else mixed.transpose(0, 1)
        return self.head(mixed.reshape(b, -1, c).mean(1))


def test_windows_stacked_per_image_are_folded_so_their_per_sample_gradients_are_per_image():
    """The base install's check of what lets a Swin's attention train under DP-SGD (``WindowFolded``)."""
    from opacus.grad_sample import get_gsm_class

    from privmed.models.finetune import WindowFolded, fold_windows

    torch.manual_seed(5)
    model = _Windowed().double()
    x, y = torch.rand(4, 1, 64, 64, dtype=torch.float64), torch.tensor([1, 0, 0, 1])
    before = model(x)
    fold_windows(model)
    assert isinstance(model.mix, WindowFolded) and model.mix.windows == (64 // 4) ** 2
    assert not isinstance(model.head, WindowFolded)
    torch.testing.assert_close(model(x), before)  # the same network, row for row
    ref = _reference_grads(model, x, y)
    gsm = get_gsm_class("hooks")(model, batch_first=True, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    for n, p in model.named_parameters():
        assert p.grad_sample.shape[0] == len(x), n  # one gradient per image, not per window
        torch.testing.assert_close(p.grad_sample, ref[n], rtol=1e-7, atol=1e-12)


def test_windows_interleaved_across_images_are_left_alone():
    from privmed.models.finetune import WindowFolded, fold_windows

    model = fold_windows(_Windowed(image_major=False))
    assert not any(isinstance(m, WindowFolded) for m in model.modules())


# --------------------------------------------------------------------------- the paper's recipe, end to end


@needs_backbones
def test_the_papers_recipe_runs_end_to_end_on_a_timm_swin_from_a_weights_file(tmp_path, monkeypatch, capsys):
    """Osuala et al.: ImageNet-pretrained Swin-T, frozen backbone, DP-trained head -> ledger, metrics, evaluate;
    the same recipe as a one-cell study -> report."""
    import yaml

    from privmed.cli import main
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    monkeypatch.setenv("PRIVMED_CACHE", str(tmp_path / "cache"))  # the study reuses the run's Swin features
    data = tmp_path / "phantom"
    write_phantom_dataset(data, PhantomSpec(n_samples=120, image_size=32, seed=4))
    _, weights = _saved_swin(tmp_path, "pth.tar")
    run = tmp_path / "run"
    recipe = ["--model", f"timm:{SWIN}", "--model-weights", str(weights), "--freeze", "backbone"]
    assert main(["train", "--data", str(data), *recipe, "--epsilon", "1", "--image-size", "32", "--epochs", "2",
                 "--batch-size", "32", "--bootstrap", "100", "--out", str(run)]) == 0
    ledger = json.loads((run / "privacy.json").read_text())
    assert ledger["private"] and ledger["epsilon"] == pytest.approx(1, rel=0.02)
    (stated,) = ledger["free_inputs"]
    assert stated.startswith("Pretrained weights 'model_best.pth.tar' (SHA-256 ") and "frozen backbone" in stated
    recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert recorded["args"]["input_size"] == 224 and recorded["args"]["interpolation"] == "bicubic"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["splits"]["test"]["auroc"]["value"] <= 1
    assert main(["evaluate", str(run), "--bootstrap", "100"]) == 0
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "swin-recipe", "workers": 1, "strategies": {"frozen_swin": {}}, "epsilons": [1], "seeds": [0],
        "base": {"data": {"path": str(data), "image_size": 32},
                 "model": {"name": f"timm:{SWIN}", "weights": str(weights), "freeze": "backbone"},
                 "training": {"epochs": 2, "batch_size": 32, "bootstrap_resamples": 100}}}))
    assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 0
    assert main(["report", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"timm:{SWIN}" in report and "model_best.pth.tar" in report


@pytest.mark.skipif(MISSING is None, reason="the backbones extra is installed here")
def test_without_the_extra_a_backbone_name_says_how_to_install_it():
    with pytest.raises(PrivmedError, match=r"backbones extra.*torch==2\.14\.1 torchvision==0\.29\.1.*make test-backbones"):
        _config("timm:resnet18")
