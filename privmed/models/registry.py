"""Model registry: every model privmed can train, with the Opacus settings that go with it.

A plain dict of :class:`ModelInfo` keyed by name (like ``opacus.accountants.registry``)::

    from privmed.models import build_model, grad_sample_mode_for
    model = build_model("resnet9_small", spatial_dims=2, in_channels=1, num_outputs=1, image_size=64)
    engine.make_private(module=model, ..., grad_sample_mode=grad_sample_mode_for("resnet9_small"))

``ModelInfo.grad_sample_mode`` is the fastest Opacus per-sample-gradient mode that gives
correct gradients for the model, as measured by ``benchmarks/dp_speed.py`` (results in
``benchmarks/results/dp_speed.md``); ``ModelInfo.supported_modes`` lists every mode whose
gradients ``tests/test_models.py`` checks against one-sample-at-a-time gradients.

Normalisation: ``norm="group"`` (default) is a per-sample normalisation (GroupNorm; the
ViT's per-token LayerNorm; GroupNorm(affine=False) on scattering features) and is what DP
training needs. ``norm="batch"`` builds the BatchNorm variant for *non-private* baselines
only: BatchNorm mixes the samples of a batch, so per-sample gradients (and the DP
guarantee) are undefined, and Opacus's ``ModuleValidator`` rejects the model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from privmed.errors import MODEL_ARG_FILLED, MODEL_ARG_UNKNOWN, PrivmedError

from .backbones import BACKBONE_FILLED, RECORDED, backbone_builder, is_backbone_name
from .monai_nets import (FILLED_BY_PRIVMED, MONAI_PREFIX, accepted_arguments, build_monai, is_monai_name, monai_class,
                         monai_network_names)
from .descriptors import build_descriptor_linear
from .resnet9 import build_resnet9
from .scatter import build_scatter_cnn, build_scatter_linear
from .vit import build_vit

#: Opacus per-sample-gradient modes privmed knows about (``make_private(grad_sample_mode=...)``).
GRAD_SAMPLE_MODES: tuple[str, ...] = ("hooks", "functorch", "ew", "ghost")
#: Normalisation families accepted by :func:`build_model`.
NORMS: tuple[str, ...] = ("group", "batch")
#: The default CNN (~0.4M parameters, 2D and 3D): what benchmarks time as "the CNN". A run's default model is
#: :attr:`privmed.config.ModelConfig.name` (``scatter_linear``).
DEFAULT_CNN = "resnet9_small"


class ModelConfigError(PrivmedError, ValueError):
    """Unknown model name or an option the model does not support."""


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    Attributes:
        name: registry key.
        builder: ``builder(*, spatial_dims, in_channels, num_outputs, image_size, norm, **overrides)``
            returning an ``nn.Module`` that maps (B, C, *spatial) to logits (B, num_outputs).
        grad_sample_mode: fastest correct Opacus mode for this model, as measured by
            ``benchmarks/dp_speed.py``.
        spatial_dims: supported numbers of spatial dimensions, e.g. (2, 3) or (2,).
        description: one line for ``--help`` and reports.
        supported_modes: the Opacus modes that give correct per-sample gradients
            (checked in ``tests/test_models.py``); ``grad_sample_mode`` is one of them.
        trainable_part: attribute holding the trainable sub-module when the model has a
            frozen, data-independent front end (``"head"`` for scattering models: precompute
            ``model.features(x)`` once and train/make_private ``model.head`` only); ``None``
            when the whole model is trained.
        recorded_args: builder arguments whose default changed: every run records them, even at
            their default (:func:`recorded_defaults`); the values runs written before they were
            recorded were built with are :mod:`privmed.config.migrate`'s.
    """

    name: str
    builder: Callable[..., nn.Module]
    grad_sample_mode: str
    spatial_dims: tuple[int, ...]
    description: str
    supported_modes: tuple[str, ...] = GRAD_SAMPLE_MODES
    trainable_part: str | None = None
    recorded_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.supported_modes) - set(GRAD_SAMPLE_MODES)
        if unknown:
            raise ValueError(f"{self.name}: unknown grad sample modes {sorted(unknown)}")
        if self.grad_sample_mode not in self.supported_modes:
            raise ValueError(
                f"{self.name}: grad_sample_mode={self.grad_sample_mode!r} is not among the "
                f"supported modes {self.supported_modes}"
            )


MODELS: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo, *, force: bool = False) -> None:
    """Add ``info`` to :data:`MODELS`. Re-registering a name needs ``force=True``."""
    if info.name in MODELS and not force:
        raise ValueError(f"model {info.name!r} is already registered (pass force=True to replace it)")
    MODELS[info.name] = info


def recorded_defaults(name: str) -> dict[str, Any]:
    """Today's defaults of the arguments ``name`` records in every run (see ``ModelInfo.recorded_args``)."""
    info = _known_info(name)
    if info is None or not info.recorded_args:
        return {}
    signature = inspect.signature(info.builder).parameters
    return {arg: signature[arg].default for arg in info.recorded_args}


def _known_info(name: str) -> ModelInfo | None:
    """The registered model or backbone ``name`` (None for an unknown one; a MONAI network records nothing)."""
    return _backbone_info(name) if is_backbone_name(name) else MODELS.get(name)


def get_model_info(name: str) -> ModelInfo:
    """The registered model ``name``, a MONAI network named ``monai:Name``, or a timm / torchvision backbone
    (``timm:NAME``, ``torchvision:NAME``: :mod:`privmed.models.backbones`, the ``backbones`` extra)."""
    if is_monai_name(name):
        return _monai_info(name)
    if is_backbone_name(name):
        return _backbone_info(name)
    try:
        return MODELS[name]
    except KeyError:
        raise ModelConfigError(
            f"unknown model {name!r}. Available models: {', '.join(sorted(MODELS))}, or any MONAI network as "
            f"{MONAI_PREFIX}Name (e.g. {MONAI_PREFIX}DenseNet121)."
        ) from None


@functools.cache
def _monai_info(name: str) -> ModelInfo:
    if monai_class(name) is None:
        shown = ", ".join(monai_network_names()[:12])
        raise ModelConfigError(f"MONAI has no network {name[len(MONAI_PREFIX):]!r} (model {name!r}); some it has: "
                               f"{shown}, ... (monai.networks.nets).")
    return ModelInfo(name=name, builder=functools.partial(build_monai, name), grad_sample_mode="hooks",
                     spatial_dims=(2, 3), description=f"MONAI network {name[len(MONAI_PREFIX):]}")


@functools.cache
def _backbone_info(name: str) -> ModelInfo:
    return ModelInfo(name=name, builder=backbone_builder(name), grad_sample_mode="hooks", spatial_dims=(2,),
                     description=f"{name} (pretrained=False; weights from --model-weights)", recorded_args=RECORDED)


#: arguments of every builder that come from the data and --norm, not from model.args
DATA_ARGUMENTS = ("spatial_dims", "in_channels", "num_outputs", "image_size", "norm")


def check_model_args(name: str, args: Mapping[str, Any]) -> None:
    """Refuse ``model.args`` the model does not take (listing those it does) or that privmed fills."""
    if not args:
        return
    info = get_model_info(name)
    if is_monai_name(name):
        accepted, filled = accepted_arguments(monai_class(name)), set(FILLED_BY_PRIVMED)
    elif is_backbone_name(name):  # the rest go to timm.create_model / torchvision.models.get_model, checked there
        accepted, filled = set(args) - set(BACKBONE_FILLED), set(BACKBONE_FILLED)
    else:
        accepted, filled = accepted_arguments(info.builder), set(DATA_ARGUMENTS)
    clash = sorted(set(args) & filled)
    if clash:
        why = ("; nothing downloads at run time: give a weights file with model.weights (--model-weights)"
               if "pretrained" in clash else "")
        raise ModelConfigError(MODEL_ARG_FILLED.format(args=clash, model=name, why=why))
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ModelConfigError(MODEL_ARG_UNKNOWN.format(model=name, args=", ".join(unknown),
                                                        accepted=", ".join(sorted(accepted - filled)) or "none",
                                                        filled=", ".join(sorted(filled & accepted))))


def check_model_choice(name: str, *, spatial_dims: int, norm: str = "group",
                       args: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`ModelConfigError` for an unknown model, a dimension it does not support, an
    unknown norm or ``args`` it does not take: the checks of :func:`build_model` that need no weights,
    so they can run before any data is read."""
    info = get_model_info(name)
    check_model_args(name, args or {})
    if spatial_dims not in info.spatial_dims:
        raise ModelConfigError(
            f"model {name!r} supports spatial_dims {info.spatial_dims}, got {spatial_dims}. "
            f"Models with 3D support: {', '.join(n for n, i in sorted(MODELS.items()) if 3 in i.spatial_dims)}."
        )
    if norm not in NORMS and not is_monai_name(name):  # a MONAI network takes its own `norm` in model.args
        raise ModelConfigError(
            f"unknown norm {norm!r}; use 'group' (DP-compatible) or 'batch' (non-private only)."
        )


def build_model(
    name: str,
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_outputs: int = 1,
    image_size: int = 64,
    norm: str = "group",
    **overrides: Any,
) -> nn.Module:
    """Build a registered model. Outputs raw logits of shape (B, num_outputs).

    Args:
        name: a key of :data:`MODELS`.
        spatial_dims: 2 (images) or 3 (volumes), if the model supports it.
        in_channels, num_outputs: input channels and number of logits.
        image_size: input side length (64, 128, 224, ...). The CNN is size-agnostic;
            the ViT and scattering models are built for exactly this size.
        norm: ``"group"`` (per-sample normalisation, DP-compatible) or ``"batch"``
            (BatchNorm, non-private baselines only: not DP-compatible, Opacus's validator
            rejects it).
        **overrides: model-specific options passed to the builder (e.g. ``width`` for
            ResNet9, ``dim``/``depth``/``patch_size`` for the ViT, ``J`` for scattering).

    Raises:
        ModelConfigError (a ValueError): unknown name, unsupported ``spatial_dims`` or ``norm``, or
        options the model cannot be built with (an image size its architecture does not divide).
    """
    check_model_choice(name, spatial_dims=spatial_dims, norm=norm)
    info = get_model_info(name)
    if is_monai_name(name):  # privmed's group/batch switch is not MONAI's `norm` (e.g. "instance"): passed as given
        overrides = {**overrides, "norm": norm} if norm != "group" else overrides
    else:
        overrides = {**overrides, "norm": norm}
    try:
        return info.builder(spatial_dims=spatial_dims, in_channels=in_channels, num_outputs=num_outputs,
                            image_size=image_size, **overrides)
    except ModelConfigError:
        raise
    except ImportError as err:  # MONAI's optional dependencies (einops for the Swin networks, ...)
        raise ModelConfigError(f"model {name!r} needs a package that is not installed: "
                               f"{str(err).strip().splitlines()[0]} Install it (pip install ...) and run again."
                               ) from None
    except (ValueError, TypeError) as err:  # the builders' own checks (sizes, widths): say which model and what to change
        raise ModelConfigError(f"model {name!r} cannot be built with image_size={image_size}, norm={norm!r}"
                               f"{''.join(f', {k}={v!r}' for k, v in overrides.items() if k != 'norm')}: {err}. "
                               f"Change --image-size "
                               f"or the model's options, or choose another --model (`privmed models` lists them)."
                               ) from err


def grad_sample_mode_for(name: str) -> str:
    """The Opacus ``grad_sample_mode`` to pass to ``make_private`` for model ``name``."""
    return get_model_info(name).grad_sample_mode


def configure_cpu_allocator() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS.

    DP-SGD on CPU allocates large short-lived tensors every step (per-sample gradients,
    unfolded activations). By default glibc serves allocations above its mmap threshold
    (at most 32 MB) with fresh ``mmap`` pages and unmaps them on free, so every step pays
    page faults to zero-fill them again; on the benchmark VM this roughly doubled the DP
    step time of ResNet9 (2.2x instead of 1.4x the non-private step). This disables mmap
    for ``malloc`` and raises the trim threshold (``mallopt``), the runtime equivalent of
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``. The process keeps its peak heap.

    Call once at start-up of a CPU training/benchmark process. Returns False (and does
    nothing) where glibc's ``mallopt`` is unavailable (macOS, Windows, musl).
    """
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    ok = mallopt(m_mmap_max, 0) == 1
    ok &= mallopt(m_trim_threshold, 2**31 - 1) == 1
    ok &= mallopt(m_top_pad, 64 * 2**20) == 1
    return bool(ok)


# ---------------------------------------------------------------------------------------
# Registered models. grad_sample_mode values come from benchmarks/dp_speed.py
# (benchmarks/results/dp_speed.md): the fastest mode whose gradients were correct.


_resnet9_small = functools.partial(build_resnet9, width=0.25)  # width stays settable (model.args)

for _info in (
    ModelInfo(
        name="resnet9",
        builder=build_resnet9,
        grad_sample_mode="ew",
        spatial_dims=(2, 3),
        description="ResNet9 (64-128-256-512, GroupNorm, Mish), ~6.6M parameters; 2D or 3D",
    ),
    ModelInfo(
        name="resnet9_small",
        builder=_resnet9_small,
        grad_sample_mode="ew",
        spatial_dims=(2, 3),
        description="ResNet9 at 1/4 width (16-32-64-128), ~0.4M parameters; 2D or 3D",
    ),
    ModelInfo(
        name="vit",
        builder=build_vit,
        grad_sample_mode="ew",
        spatial_dims=(2,),
        description="Vision Transformer (dim 192, depth 6, 3 heads, 64 patches), ~1.8M parameters; 2D",
    ),
    ModelInfo(
        name="scatter_linear",
        builder=build_scatter_linear,
        grad_sample_mode="ew",
        spatial_dims=(2,),
        description="Per-image grey-level ranks (quantile), second-order scattering (J=2 below 128 px, else 3; "
                    "L=8) averaged over 8 rotations/reflections, 4x4-pooled, log, centred + linear head; 2D",
        trainable_part="head",
        # defaults changed since runs were first recorded (the values older runs were built with: privmed.config.migrate)
        recorded_args=("dihedral", "max_order", "input_norm", "standardise"),
    ),
    ModelInfo(
        name="descriptor_linear",
        builder=build_descriptor_linear,
        grad_sample_mode="ew",
        spatial_dims=(2,),
        description="23 lesion descriptors on grey-level ranks (shape from an Otsu segmentation of the centre, "
                    "margin contrast and sharpness, LBP and co-occurrence texture; scikit-image), centred + "
                    "linear head; 2D, one channel",
        trainable_part="head",
    ),
    ModelInfo(
        name="scatter_cnn",
        builder=build_scatter_cnn,
        grad_sample_mode="ew",
        spatial_dims=(2,),
        description="ScatterNet+CNN (Tramer & Boneh 2021): scattering + GroupNorm + 2-layer tanh CNN; 2D",
        trainable_part="head",
    ),
):
    register_model(_info)
del _info
