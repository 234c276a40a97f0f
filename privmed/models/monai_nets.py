"""MONAI networks by name: ``model.name: monai:DenseNet121`` (any class of ``monai.networks.nets``).

privmed fills what the data decides — ``spatial_dims``, the input channels
(``in_channels`` / ``n_input_channels`` / ``in_chans``), the outputs (``out_channels`` /
``num_classes``) and ``img_size`` where the network takes them — and passes the rest
of ``model.args`` through, checked against the network's signature. ``pretrained`` is
always False (nothing downloads at run time; give a file with ``model.weights``), and a
network with a ``classification`` switch (MONAI's ViT) is built as a classifier.

A network without an output argument (``SwinTransformer``, a feature backbone) gets a
global average pool over its last feature map and a linear head. A network returning a
tuple or list (ViT: logits and hidden states) is read at its first element when it is a
classifier, at its last (the deepest feature map) when it is a backbone.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from privmed.errors import NOT_A_CLASSIFIER, PrivmedError

MONAI_PREFIX = "monai:"
IN_KEYS = ("in_channels", "n_input_channels", "in_chans")
OUT_KEYS = ("out_channels", "num_classes")
#: keyword arguments privmed fills itself: the user cannot set them in model.args
FILLED_BY_PRIVMED = ("spatial_dims", *IN_KEYS, *OUT_KEYS, "img_size", "pretrained", "classification")
#: modules of MONAI networks that are not exported by ``monai.networks.nets`` under their own name
_EXTRA_MODULES = ("monai.networks.nets.swin_unetr",)


def is_monai_name(name: str) -> bool:
    return name.startswith(MONAI_PREFIX)


@functools.cache
def monai_class(name: str) -> type[nn.Module] | None:
    """The MONAI network class for ``monai:Name`` (None when MONAI has no such network)."""
    import importlib

    import monai.networks.nets as nets

    short = name[len(MONAI_PREFIX):] if is_monai_name(name) else name
    for module in (nets, *(importlib.import_module(m) for m in _EXTRA_MODULES)):
        cls = getattr(module, short, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    return None


def monai_network_names() -> list[str]:
    """Some network classes of ``monai.networks.nets`` (for messages)."""
    import monai.networks.nets as nets

    return sorted(n for n, c in vars(nets).items() if isinstance(c, type) and issubclass(c, nn.Module)
                  and n[0].isupper())


def accepted_arguments(target: Any) -> set[str]:
    """Keyword arguments a builder or network class accepts, following ``**kwargs`` to its base classes."""
    names: set[str] = set()
    signature = inspect.signature(target)
    names |= {p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()) and isinstance(target, type):
        for base in target.__mro__[1:]:
            if base is nn.Module or not issubclass(base, nn.Module):
                break
            names |= {p.name for p in inspect.signature(base).parameters.values()
                      if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names


class MonaiClassifier(nn.Module):
    """A MONAI network as a privmed classifier: (B, C, *spatial) -> logits (B, num_outputs)."""

    def __init__(self, net: nn.Module, *, head: nn.Linear | None) -> None:
        super().__init__()
        self.net = net
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0] if self.head is None else out[-1]
        if self.head is None:
            if out.ndim != 2:  # a segmentation network's maps: refused by name, not by a loss's shape error
                raise PrivmedError(NOT_A_CLASSIFIER.format(name=type(self.net).__name__, shape=tuple(out.shape)))
            return out
        return self.head(global_pool(out))


def global_pool(out: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C) by averaging; (B, C) unchanged."""
    return out.flatten(2).mean(-1) if out.ndim > 2 else out


def build_monai(class_name: str, *, spatial_dims: int, in_channels: int, num_outputs: int, image_size: int,
                **args: Any) -> MonaiClassifier:
    """Build ``monai.networks.nets.<class_name>`` with the data's dimensions filled in and ``args`` passed
    through (a ``norm`` among them is the network's own, e.g. ``"instance"``)."""
    cls = monai_class(class_name)
    if cls is None:
        raise ValueError(f"MONAI has no network {class_name!r}")
    accepted = accepted_arguments(cls)
    filled: dict[str, Any] = {}
    values = {"spatial_dims": spatial_dims, "img_size": image_size, "pretrained": False, "classification": True,
              **{k: in_channels for k in IN_KEYS}}
    filled.update({k: v for k, v in values.items() if k in accepted})
    out_key = next((k for k in OUT_KEYS if k in accepted), None)
    if out_key is not None:
        filled[out_key] = num_outputs
    net = cls(**filled, **args)
    head = None if out_key is not None else nn.Linear(_feature_channels(net, in_channels, spatial_dims, image_size),
                                                      num_outputs)
    return MonaiClassifier(net, head=head)


@torch.no_grad()
def _feature_channels(net: nn.Module, in_channels: int, spatial_dims: int, image_size: int) -> int:
    """Channels of a backbone's deepest feature map, from one forward pass of a blank input."""
    was_training = net.training
    net.eval()
    out = net(torch.zeros(1, in_channels, *([image_size] * spatial_dims)))
    net.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[-1]
    return int(out.shape[1])
