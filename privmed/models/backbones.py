"""timm and torchvision backbones by name: ``model.name: timm:swin_tiny_patch4_window7_224`` or ``torchvision:resnet50``.

Needs the ``backbones`` extra (timm, torchvision, peft, safetensors) in an environment whose torch
matches PyPI's torchvision (docs/backbones.md); both libraries are imported here only when such a
model is asked for, so the base install never imports them.

The network is built with ``pretrained=False`` (nothing downloads at run time; its weights come
from ``model.weights``), one input channel and the task's outputs: timm builds a one-channel stem
itself (``in_chans=1``); torchvision's first three-channel convolution is replaced by a one-channel
one. An RGB stem in the weights file is then summed over its colour channels when it loads
(:func:`privmed.models.pretrained.load_weights`), and the file's 1000-class classifier is left fresh.

The input the weights expect is recorded in every run's ``model.args`` (so ``evaluate`` rebuilds the
same model): ``input_size`` (side length: privmed's images, of any ``--image-size``, are resized to
it), ``mean`` and ``std`` (per colour channel; timm's ``pretrained_cfg``, torchvision's ImageNet
statistics) and ``interpolation``. privmed's images are grey levels scaled to [0, 1] per image; with
the stem summed to one channel, an image ``g`` enters as ``(g - mean.mean()) / std.mean()``: the
source model sees the grey picture as three equal channels normalised with the channel-averaged
statistics (ImageNet: 0.449 and 0.226).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from privmed.errors import BACKBONES_MISSING, BACKBONE_UNKNOWN, PrivmedError

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
BACKBONE_PREFIXES = (TIMM_PREFIX, TORCHVISION_PREFIX)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's classification weights are trained and evaluated at 224 px, except these
TORCHVISION_SIZES = {"inception_v3": 299, "efficientnet_b1": 240, "efficientnet_b2": 288, "efficientnet_b3": 300,
                     "efficientnet_b4": 380, "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600,
                     "efficientnet_v2_s": 384, "efficientnet_v2_m": 480, "efficientnet_v2_l": 480}
#: arguments of the network privmed sets itself (model.args may not)
BACKBONE_FILLED = ("pretrained", "in_chans", "num_classes", "weights", "weights_backbone")
#: what every backbone run records in model.args (the input its weights expect)
RECORDED = ("input_size", "mean", "std", "interpolation")
DEFAULT_LORA_RANK = 8


def is_backbone_name(name: str) -> bool:
    """True for ``timm:NAME`` and ``torchvision:NAME``."""
    return name.startswith(BACKBONE_PREFIXES)


def _library(name: str) -> tuple[str, str]:
    prefix = next(p for p in BACKBONE_PREFIXES if name.startswith(p))
    return prefix, name[len(prefix):]


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as err:  # ImportError, or torchvision's "operator torchvision::nms does not exist"
        raise PrivmedError(BACKBONES_MISSING.format(
            module=module, reason=f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}")) from None


@functools.cache
def expected_input(name: str) -> dict[str, Any]:
    """The input the weights of backbone ``name`` expect: ``input_size``, ``mean``, ``std``, ``interpolation``.

    timm: the model's ``pretrained_cfg`` (of the tag given after a dot, else the default one); torchvision:
    ImageNet statistics at 224 px (:data:`TORCHVISION_SIZES` for the few trained larger). Raises
    :class:`PrivmedError` for a name the library does not have."""
    prefix, short = _library(name)
    if prefix == TIMM_PREFIX:
        timm = _import("timm")
        if not timm.is_model(short.split(".")[0]):
            raise PrivmedError(BACKBONE_UNKNOWN.format(
                name=name, library="timm", some=", ".join(timm.list_models(f"*{short.split('_')[0][:6]}*")[:8])))
        cfg = timm.models.get_pretrained_cfg(short) or timm.models.get_pretrained_cfg(short.split(".")[0])
        return {"input_size": int(cfg.input_size[-1]), "mean": [float(v) for v in cfg.mean],
                "std": [float(v) for v in cfg.std], "interpolation": str(cfg.interpolation or "bilinear")}
    models = _import("torchvision.models")
    if short not in models.list_models(module=models):
        shown = [n for n in models.list_models(module=models) if n[:3] == short[:3]] or models.list_models(module=models)
        raise PrivmedError(BACKBONE_UNKNOWN.format(name=name, library="torchvision (classification)",
                                                   some=", ".join(shown[:8])))
    return {"input_size": TORCHVISION_SIZES.get(short, 224), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "interpolation": "bilinear"}


class InputAdapter(nn.Module):
    """privmed's grey images (B, 1, H, W) in [0, 1] -> the backbone's input size and normalisation.

    The colour statistics are averaged over the channels the weights had (the stem's RGB weights are summed
    to one channel). No parameters, nothing in the state dict."""

    def __init__(self, *, input_size: int, mean: Sequence[float], std: Sequence[float], interpolation: str) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.interpolation = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        self.register_buffer("mean", torch.tensor(float(sum(mean)) / len(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(sum(std)) / len(std)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            smooth = self.interpolation != "nearest"
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation,
                              **({"align_corners": False, "antialias": True} if smooth else {}))
        return (x - self.mean) / self.std


class BackboneClassifier(nn.Module):
    """``net(adapt(x))``: a timm or torchvision classifier behind its :class:`InputAdapter`."""

    def __init__(self, net: nn.Module, adapter: InputAdapter, *, lora_rank: int = DEFAULT_LORA_RANK) -> None:
        super().__init__()
        self.adapter = adapter
        self.net = net
        self.lora_rank = int(lora_rank)  # read by ``freeze: lora`` (privmed.models.finetune)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self.adapter(x))
        return out[0] if isinstance(out, (tuple, list)) else out


def build_backbone(name: str, *, spatial_dims: int, in_channels: int, num_outputs: int, image_size: int,
                   norm: str = "group", input_size: int, mean: Sequence[float], std: Sequence[float],
                   interpolation: str = "bilinear", lora_rank: int = DEFAULT_LORA_RANK,
                   **args: Any) -> BackboneClassifier:
    """Build backbone ``name`` (``timm:NAME`` / ``torchvision:NAME``) for one-channel 2D images and ``num_outputs``
    logits; ``args`` go to the library's constructor. ``norm`` (privmed's group/batch switch of its own
    networks) does not apply: a backbone keeps its own normalisation layers."""
    if spatial_dims != 2 or in_channels != 1:
        raise ValueError(f"{name} takes one-channel 2D images (got spatial_dims={spatial_dims}, "
                         f"in_channels={in_channels})")
    prefix, short = _library(name)
    net = _timm_net(short, num_outputs, args) if prefix == TIMM_PREFIX else _torchvision_net(short, num_outputs, args)
    adapter = InputAdapter(input_size=input_size, mean=mean, std=std, interpolation=interpolation)
    return BackboneClassifier(net, adapter, lora_rank=lora_rank)


def _timm_net(short: str, num_outputs: int, args: dict[str, Any]) -> nn.Module:
    timm = _import("timm")
    net = timm.create_model(short, pretrained=False, in_chans=1, num_classes=num_outputs, **args)
    net.reset_classifier(num_outputs)  # the task's head, whatever the architecture's default
    return net


def _torchvision_net(short: str, num_outputs: int, args: dict[str, Any]) -> nn.Module:
    models = _import("torchvision.models")
    net = models.get_model(short, weights=None, num_classes=num_outputs, **args)
    _one_channel_stem(net)
    return net


def _one_channel_stem(net: nn.Module) -> None:
    """Replace the first convolution taking three channels by the same convolution taking one."""
    for qualified, conv in net.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
            grey = nn.Conv2d(1, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                             dilation=conv.dilation, groups=1, bias=conv.bias is not None,
                             padding_mode=conv.padding_mode)
            net.set_submodule(qualified, grey)
            return
    raise ValueError(f"{type(net).__name__} has no three-channel first convolution to take grey images")


def backbone_builder(name: str):
    """``build_backbone`` for ``name`` with the weights' expected input as its (recorded) defaults."""
    return functools.partial(build_backbone, name, **expected_input(name))
