"""Model zoo: ResNet9 (2D/3D), a small ViT and ScatterNet models, all DP-SGD ready, and MONAI networks by name.

See :mod:`privmed.models.registry` for the registry and :func:`build_model`, and
:mod:`privmed.models.configured` for :func:`build_for_run` (model.args, pretrained weights,
a frozen backbone).
"""

from .registry import (
    DEFAULT_CNN,
    GRAD_SAMPLE_MODES,
    MODELS,
    NORMS,
    ModelConfigError,
    ModelInfo,
    build_model,
    configure_cpu_allocator,
    get_model_info,
    grad_sample_mode_for,
    register_model,
)
from .configured import build_for_run, check_dp_trainable
from .pretrained import FrozenBackboneClassifier, freeze_backbone, load_weights, read_state_dict
from .resnet9 import ResNet9
from .scatter import ScatterFeatures, ScatterNet
from .vit import ViT

__all__ = [
    "DEFAULT_CNN",
    "GRAD_SAMPLE_MODES",
    "MODELS",
    "NORMS",
    "ModelConfigError",
    "ModelInfo",
    "ResNet9",
    "ScatterFeatures",
    "ScatterNet",
    "ViT",
    "FrozenBackboneClassifier",
    "build_for_run",
    "build_model",
    "check_dp_trainable",
    "freeze_backbone",
    "load_weights",
    "read_state_dict",
    "configure_cpu_allocator",
    "get_model_info",
    "grad_sample_mode_for",
    "register_model",
]
