"""Model zoo: ResNet9 (2D/3D), a small ViT and ScatterNet models, all DP-SGD ready.

See :mod:`privmed.models.registry` for the registry and :func:`build_model`.
"""

from .registry import (
    DEFAULT_MODEL,
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
from .resnet9 import ResNet9
from .scatter import ScatterFeatures, ScatterNet
from .vit import ViT

__all__ = [
    "DEFAULT_MODEL",
    "GRAD_SAMPLE_MODES",
    "MODELS",
    "NORMS",
    "ModelConfigError",
    "ModelInfo",
    "ResNet9",
    "ScatterFeatures",
    "ScatterNet",
    "ViT",
    "build_model",
    "configure_cpu_allocator",
    "get_model_info",
    "grad_sample_mode_for",
    "register_model",
]
