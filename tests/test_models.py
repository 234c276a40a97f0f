"""Model zoo: shapes, Opacus validation, and per-sample gradients in every Opacus mode.

Per-sample gradients from each mode (hooks, functorch, expanded weights) are compared
with gradients computed one example at a time; ghost clipping is compared with manual
per-example clipping. Tiny inputs (32 px, 16^3) and small widths keep this fast.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opacus.grad_sample import (  # noqa: E402
    GradSampleModuleFastGradientClipping,
    get_gsm_class,
)
from opacus.optimizers import DPOptimizerFastGradientClipping  # noqa: E402
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping  # noqa: E402
from opacus.validators import ModuleValidator  # noqa: E402

from privmed.models import (  # noqa: E402
    DEFAULT_CNN,
    GRAD_SAMPLE_MODES,
    MODELS,
    ModelConfigError,
    build_model,
    grad_sample_mode_for,
)

torch.set_num_threads(1)
pytestmark = [
    # Opacus's hooks on the first layer fire although the input needs no gradient: harmless
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    pytest.mark.filterwarnings("ignore:In CPU autocast:UserWarning"),
]

BATCH = 4
NUM_OUTPUTS = 2
# Small variants for the gradient checks (architecture unchanged, fewer channels/layers).
TINY: dict[str, dict] = {
    "resnet9": {"width": 0.125},
    "resnet9_small": {},
    "vit": {"dim": 32, "depth": 2, "num_heads": 2},
    "scatter_linear": {},
    "scatter_cnn": {"channels": 16},
}
TINY_3D: dict[str, dict] = {"resnet9": {"width": 0.125}, "resnet9_small": {"width": 0.125}}
CASES = [(name, dims) for name, info in MODELS.items() for dims in info.spatial_dims]


def _ids(case) -> str:
    return f"{case[0]}-{case[1]}d"


def _tiny_model(name: str, dims: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    overrides = (TINY_3D if dims == 3 else TINY).get(name, {})
    size = 16 if dims == 3 else 32
    return build_model(name, spatial_dims=dims, in_channels=1, num_outputs=NUM_OUTPUTS, image_size=size, **overrides)


def _batch(dims: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (BATCH, 1) + ((16,) * 3 if dims == 3 else (32, 32))
    return torch.randn(shape, generator=g), torch.randint(0, NUM_OUTPUTS, (BATCH,), generator=g)


def _reference_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example gradients by looping over single examples: name -> (B, *param.shape)."""
    model = copy.deepcopy(model)
    crit = nn.CrossEntropyLoss(reduction="sum")
    per_example: dict[str, list[torch.Tensor]] = {n: [] for n, p in model.named_parameters() if p.requires_grad}
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        crit(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                per_example[n].append(p.grad.detach().clone())
    return {n: torch.stack(g) for n, g in per_example.items()}


def _opacus_grad_samples(model: nn.Module, mode: str, x, y) -> dict[str, torch.Tensor]:
    """``p.grad_sample`` from Opacus's GradSampleModule for ``mode`` (loss summed over the batch)."""
    cls = get_gsm_class(mode)
    kwargs = {"force_functorch": mode == "functorch"} if mode in ("hooks", "functorch") else {}
    gsm = cls(model, batch_first=True, loss_reduction="sum", **kwargs)
    nn.CrossEntropyLoss(reduction="sum")(gsm(x), y).backward()
    out = {n: p.grad_sample for n, p in model.named_parameters() if p.requires_grad}
    gsm.remove_hooks()
    return out


def _close(a: torch.Tensor, b: torch.Tensor, scale: float | None = None) -> bool:
    """allclose, absolute tolerance relative to ``scale`` (default max |b|). For a clipped sum
    over examples pass the per-example scale: the sum can cancel far below its terms, and
    float32 rounding is relative to the terms."""
    scale = b.abs().max().item() if scale is None else scale
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1e-3))


# ---------------------------------------------------------------------------------------
# registry


def test_registry_contents():
    assert {"resnet9", "resnet9_small", "vit", "scatter_linear", "scatter_cnn"} <= set(MODELS)
    assert DEFAULT_CNN in MODELS
    for name, info in MODELS.items():
        assert info.name == name
        assert info.grad_sample_mode in info.supported_modes
        assert set(info.supported_modes) <= set(GRAD_SAMPLE_MODES)
        assert grad_sample_mode_for(name) == info.grad_sample_mode
    assert MODELS["resnet9"].spatial_dims == (2, 3)
    assert MODELS["vit"].spatial_dims == (2,)


@pytest.mark.parametrize("name,size,why", [("scatter_linear", 70, "divisible by 2\\^J=4"),
                                           ("vit", 70, "patch_size"), ("resnet9", 4, ">= 8")])
def test_a_size_the_model_cannot_take_is_a_clear_error_naming_the_model(name, size, why):
    with pytest.raises(ModelConfigError, match=f"model '{name}' cannot be built with image_size={size}.*{why}"
                                               ".*--image-size"):
        build_model(name, image_size=size)


def test_registry_errors():
    with pytest.raises(ValueError, match="resnet9_small") as err:
        build_model("no_such_net")
    assert isinstance(err.value, ModelConfigError)
    with pytest.raises(ValueError, match="spatial_dims"):
        build_model("vit", spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        build_model("scatter_cnn", spatial_dims=3)
    with pytest.raises(ValueError, match="norm"):
        build_model("resnet9_small", norm="instance_typo")
    with pytest.raises(ValueError):
        grad_sample_mode_for("no_such_net")


def test_parameter_counts():
    def count(name):
        return sum(p.numel() for p in build_model(name).parameters())

    assert 0.3e6 < count("resnet9_small") < 0.5e6
    assert 6e6 < count("resnet9") < 7e6
    assert 1e6 < count("vit") < 3e6


# ---------------------------------------------------------------------------------------
# shapes and validation


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_output_shape_and_validator(case):
    name, dims = case
    model = _tiny_model(name, dims)
    x, _ = _batch(dims)
    assert model(x).shape == (BATCH, NUM_OUTPUTS)
    assert ModuleValidator.validate(model, strict=True) == []


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_norm_variant_is_rejected_by_validator(name):
    model = build_model(name, image_size=32, norm="batch", **TINY.get(name, {}))
    x, _ = _batch(2)
    assert model(x).shape == (BATCH, 1)
    assert ModuleValidator.validate(model, strict=False), f"{name} with BatchNorm passed the validator"


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [64, 128, 224])
@pytest.mark.parametrize("name", [n for n in MODELS if 2 in MODELS[n].spatial_dims])
def test_image_sizes(name, image_size):
    torch.manual_seed(0)
    model = build_model(name, image_size=image_size, num_outputs=3)
    with torch.no_grad():
        assert model(torch.randn(1, 1, image_size, image_size)).shape == (1, 3)


def test_resnet9_3d_full_width_forward():
    model = build_model("resnet9", spatial_dims=3, image_size=16)
    assert any(isinstance(m, nn.Conv3d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 1)


def test_vit_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="divisible"):
        build_model("vit", image_size=64, patch_size=7)
    model = build_model("vit", image_size=64, dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="64x64"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("name", ["scatter_linear", "scatter_cnn"])
def test_scatter_features_frozen_and_separable(name):
    model = build_model(name, image_size=32)
    assert list(model.features.parameters()) == []
    assert len(list(model.features.buffers())) > 0  # scattering filters are buffers
    assert [id(p) for p in model.parameters()] == [id(p) for p in model.head.parameters()]
    assert MODELS[name].trainable_part == "head"
    x, _ = _batch(2)
    with torch.no_grad():
        feats = model.features(x)
        assert torch.allclose(model.head(feats), model(x))
    # per-sample normalisation: a sample's features do not depend on the rest of the batch
    with torch.no_grad():
        assert torch.allclose(model.features(x[:1]), feats[:1], atol=1e-6)
    # Opacus sees only the head
    assert ModuleValidator.validate(model.head, strict=True) == []


# ---------------------------------------------------------------------------------------
# per-sample gradients


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_per_sample_gradients(case, mode):
    name, dims = case
    info = MODELS[name]
    model = _tiny_model(name, dims)
    x, y = _batch(dims)
    ref = _reference_grads(model, x, y)
    if mode not in info.supported_modes:
        # the registry says this mode does not work: it must fail (error or wrong gradients)
        try:
            got = _opacus_grad_samples(model, mode, x, y)
        except Exception:
            return
        assert not all(g is not None and _close(g, ref[n]) for n, g in got.items()), (
            f"{mode} works for {name}: add it to supported_modes"
        )
        return
    got = _opacus_grad_samples(model, mode, x, y)
    assert set(got) == set(ref)
    for n in ref:
        assert got[n] is not None, f"{name}/{mode}: no grad_sample for {n}"
        assert _close(got[n], ref[n]), (
            f"{name}/{mode}: per-sample gradient of {n} differs, max abs err "
            f"{(got[n] - ref[n]).abs().max().item():.3g} (scale {ref[n].abs().max().item():.3g})"
        )


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_ghost_clipping_matches_manual_clipping(case):
    """Opacus's ghost-clipping path (GradSampleModuleFastGradientClipping + DPLoss double
    backward, as wired by make_private(grad_sample_mode="ghost")) gives sum_i clip(g_i)."""
    name, dims = case
    model = _tiny_model(name, dims)
    x, y = _batch(dims)
    ref = _reference_grads(model, x, y)
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in ref.values()]).norm(dim=0)
    max_norm = 0.5 * norms.min().item()  # small enough that every example gets clipped
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    expected = {n: torch.einsum("i,i...->...", coef, g) for n, g in ref.items()}

    def run():
        gsm = GradSampleModuleFastGradientClipping(
            model, batch_first=True, loss_reduction="sum", max_grad_norm=max_norm, use_ghost_clipping=True
        )
        opt = DPOptimizerFastGradientClipping(
            torch.optim.SGD(gsm.parameters(), lr=1.0),
            noise_multiplier=0.0,
            max_grad_norm=max_norm,
            expected_batch_size=BATCH,
            loss_reduction="sum",
        )
        crit = DPLossFastGradientClipping(gsm, opt, nn.CrossEntropyLoss(reduction="sum"), loss_reduction="sum")
        crit(gsm(x), y).backward()
        return gsm, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    if "ghost" not in MODELS[name].supported_modes:
        with pytest.raises(Exception):
            run()
        return
    gsm, got = run()
    assert torch.allclose(gsm.per_sample_gradient_norms, norms, rtol=1e-4)
    for n in expected:
        assert _close(got[n], expected[n], scale=ref[n].abs().max().item()), (
            f"{name}/ghost: clipped gradient of {n} differs"
        )


def test_monai_vit_fails_in_opacus():
    """Why privmed has its own ViT: MONAI's passes the validator, then breaks in Opacus."""
    pytest.importorskip("einops")
    from monai.networks.nets import ViT as MonaiViT

    torch.manual_seed(0)
    kw = dict(in_channels=1, img_size=(32, 32), patch_size=(8, 8), hidden_size=32, mlp_dim=64,
              num_layers=1, num_heads=2, spatial_dims=2, classification=True, num_classes=2)
    x, y = _batch(2)
    assert ModuleValidator.validate(MonaiViT(**kw), strict=False) == []
    for mode in ("hooks", "functorch", "ew"):
        gsm = get_gsm_class(mode)(MonaiViT(**kw), batch_first=True, loss_reduction="sum",
                                  **({"force_functorch": mode == "functorch"} if mode != "ew" else {}))
        with pytest.raises((TypeError, RuntimeError)):
            nn.CrossEntropyLoss(reduction="sum")(gsm(x)[0], y).backward()


def test_configure_cpu_allocator_is_safe():
    from privmed.models import configure_cpu_allocator

    assert isinstance(configure_cpu_allocator(), bool)
    assert build_model("resnet9_small", image_size=32)(torch.randn(1, 1, 32, 32)).shape == (1, 1)


def test_frozen_features_are_cached_on_disk_across_processes(tmp_path, monkeypatch):
    from privmed.models import build_model
    from privmed.training import inputs

    monkeypatch.setenv("PRIVMED_CACHE", str(tmp_path / "cache"))
    model = build_model("scatter_linear", spatial_dims=2, in_channels=1, num_outputs=1, image_size=32, norm="group")
    images = torch.rand(5, 1, 32, 32)
    first = inputs.model_inputs(model, images)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    inputs._FEATURE_CACHE.clear()  # as a new process would start

    def no_compute(*_):
        raise AssertionError("features were computed again")

    monkeypatch.setattr(model.features, "forward", no_compute)
    assert torch.equal(inputs.model_inputs(model, images), first)
    other = torch.rand(5, 1, 32, 32)  # other images: another key, so computing is needed (and fails here)
    with pytest.raises(AssertionError, match="computed again"):
        inputs.model_inputs(model, other)
