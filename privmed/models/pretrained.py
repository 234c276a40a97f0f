"""Pretrained weights and frozen backbones: ``model.weights: PATH`` and ``model.freeze: backbone``.

The weights file is read from disk (nothing downloads): a plain state dict, or a
checkpoint dict holding it under ``state_dict`` / ``model`` / ``state_dict_ema`` (timm,
torchvision's reference scripts, Lightning, privmed's own ``checkpoints/best.pt``), with
a ``module.`` (DDP) or ``model.`` (Lightning) prefix stripped when that is what fits; a
raw MONAI network's state dict loads into privmed's wrapper of it. Every tensor must land:
a missing or unexpected key is an error listing a few of each. Two mismatches are
expected of pretrained weights and handled: an RGB first convolution loading into a
one-channel model is summed over its colour channels (as timm does), and a classifier
layer of another size (ImageNet's 1000 classes) or missing from the file (a backbone
export) is left freshly initialised.

``freeze: backbone`` splits the network at its last linear layer (a MONAI backbone
without one gets a pooled linear head): everything before it is frozen (``requires_grad``
False, always in eval mode, so a BatchNorm in it normalises with its stored statistics,
one sample at a time) and becomes a frozen front end: the trainer computes its features
once and trains only the head, and only the head goes through Opacus. The features'
cache key carries a hash of the backbone's weights.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from privmed.errors import PrivmedError, WEIGHTS_CHANGED, WEIGHTS_KEYS_MISMATCH, WEIGHTS_MISSING, WEIGHTS_UNREADABLE

from .parts import FrontEndClassifier, is_feature_model

#: where checkpoint dicts keep their state dict, in the order tried
STATE_KEYS = ("state_dict", "model", "state_dict_ema", "model_state_dict", "module")
PREFIXES = ("", "module.", "model.")  # dropped from the file's keys (DDP, Lightning)
WRAPPER_PREFIXES = ("", "net.")  # added: privmed's MonaiClassifier holds the MONAI network as `net`
SHOWN_KEYS = 5


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: tensors loaded, those adapted (RGB summed to grey), and the
    classifier tensors left at their fresh initialisation because their shape differs."""

    loaded: int
    adapted: tuple[str, ...]
    reinitialised: tuple[str, ...]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (tensors only: ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise PrivmedError(WEIGHTS_MISSING.format(path=path))
    try:
        raw = _load_safetensors(path) if path.suffix == ".safetensors" else _load_torch(path)
    except Exception as err:  # pickle, zip and torch errors alike: one message
        raise PrivmedError(WEIGHTS_UNREADABLE.format(path=path, reason=f"{type(err).__name__}: "
                                                                         f"{str(err).splitlines()[0][:160]}")) from None
    state = raw
    while isinstance(state, Mapping) and not _is_state(state):
        inner = next((state[k] for k in STATE_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not _is_state(state):
        keys = sorted(map(str, raw))[:SHOWN_KEYS] if isinstance(raw, Mapping) else type(raw).__name__
        raise PrivmedError(WEIGHTS_UNREADABLE.format(
            path=path, reason=f"no state dict of tensors in it (top level: {keys}; looked under {list(STATE_KEYS)})"))
    return dict(state)


def _load_torch(path: Path):
    """``torch.load(weights_only=True)``, with argparse's ``Namespace`` allowed as well: timm's training script
    saves its arguments beside the weights (``{'state_dict': ..., 'args': Namespace(...)}``). Any other class
    in the pickle is still refused."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (timm and Hugging Face's format): tensors only, no pickle."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError("reading .safetensors needs the safetensors package (pip install safetensors, or the "
                          "backbones extra)") from None
    return load_file(str(path), device="cpu")


def _is_state(d: Mapping) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def load_weights(model: nn.Module, path: str | Path, *, head: str | None) -> LoadReport:
    """Load the weights file at ``path`` into ``model``; ``head`` is the qualified name of its classifier
    layer, whose tensors stay freshly initialised when the file lacks them or has them in another shape."""
    own = model.state_dict()
    given = _renamed(read_state_dict(path), own)
    in_head = (lambda key: key.startswith(head + ".")) if head is not None else (lambda key: False)
    missing = [k for k in own if k not in given and not in_head(k)]
    unexpected = [k for k in given if k not in own]
    adapted, wrong = [], []
    reinitialised = [k for k in own if k not in given and in_head(k)]
    for key in [k for k in given if k in own and given[k].shape != own[k].shape]:
        if _rgb_to_grey(given[key], own[key]):
            given[key] = given[key].sum(1, keepdim=True)
            adapted.append(key)
        elif in_head(key):
            del given[key]
            reinitialised.append(key)
        else:
            wrong.append(f"{key} {tuple(given[key].shape)} vs {tuple(own[key].shape)}")
    if missing or unexpected or wrong:
        raise PrivmedError(WEIGHTS_KEYS_MISMATCH.format(
            path=path, model=type(model).__name__, missing=_few(missing), unexpected=_few(unexpected),
            shapes=_few(wrong)))
    model.load_state_dict({**own, **given})
    return LoadReport(len(given), tuple(adapted), tuple(reinitialised))


def _renamed(given: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``given`` with the prefix dropped (``module.``, ``model.``) and added (``net.``: privmed's wrapper of a
    MONAI network) that makes the most of its keys name tensors of the model."""
    options = [(drop, add) for drop in PREFIXES for add in WRAPPER_PREFIXES]
    drop, add = max(options, key=lambda o: sum(add_key in own for add_key in _keys(given, *o)))
    return dict(zip(_keys(given, drop, add), (v for k, v in given.items() if k.startswith(drop))))


def _keys(given: Mapping[str, torch.Tensor], drop: str, add: str) -> list[str]:
    return [add + k[len(drop):] for k in given if k.startswith(drop)]


def _rgb_to_grey(given: torch.Tensor, own: torch.Tensor) -> bool:
    """A convolution's RGB input weights where the model takes one channel."""
    return given.ndim >= 3 and given.ndim == own.ndim and given.shape[1] == 3 and own.shape[1] == 1 \
        and given.shape[0] == own.shape[0] and given.shape[2:] == own.shape[2:]


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:SHOWN_KEYS]) + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def last_linear(model: nn.Module) -> str | None:
    """Qualified name of the last ``nn.Linear`` of ``model`` (its classifier layer), if any."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


class FrozenBackbone(nn.Module):
    """A network cut before its classifier layer, frozen and always in eval mode: (B, C, ...) -> (B, F).

    ``state_sha256`` (the hash of its weights) is part of the key its cached features are stored under.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.requires_grad_(False)
        self.state_sha256 = state_hash(net)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.flatten(2).mean(-1) if out.ndim > 2 else out


class FrozenBackboneClassifier(FrontEndClassifier):
    """``head(features(x))`` with a frozen pretrained backbone as the front end."""


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Freeze everything before the classifier layer; returns a model whose ``head`` alone trains.

    A model that already has a frozen front end (the scattering models) is returned unchanged.
    """
    if is_feature_model(model):
        return model
    name = last_linear(model)
    if name is None:
        raise PrivmedError(f"model {type(model).__name__} has no linear classifier layer to keep trainable, so "
                           f"model.freeze = 'backbone' does not apply; use model.freeze 'none'.")
    head = model.get_submodule(name)
    model.set_submodule(name, nn.Identity())
    return FrozenBackboneClassifier(FrozenBackbone(model), head)


def state_hash(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if value.numel() else b"")
    return digest.hexdigest()


def weights_digest(path: str | Path | None) -> str | None:
    """SHA-256 of a weights file's bytes (None without a file). Read once per process while the file's
    size and modification time stay the same: a run asks for it for its ledger and again for its checkpoint."""
    if path is None or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _read_sha256(path)


def _read_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def check_same_weights(path: str | Path, *, recorded: str | None) -> None:
    """Refuse a weights file whose bytes are not those a run was trained from (``recorded``: their SHA-256,
    None for runs that did not record it): a frozen backbone must give the features its head was trained on.
    The bytes are read afresh, not through :func:`weights_digest`'s memo: a file rewritten within the file
    system's timestamp resolution, at the same size, would otherwise pass as unchanged."""
    now = _read_sha256(path) if Path(path).is_file() else None
    if recorded is not None and now is not None and now != recorded:
        raise PrivmedError(WEIGHTS_CHANGED.format(path=path, recorded=recorded[:16], now=now[:16]))


#: what the weights were, per ``model.freeze`` (the ledger's sentence); any other: the starting point of training
FROZEN_PARTS = {
    "backbone": "a frozen backbone (only the classifier layer was trained)",
    "last_block": "frozen but for their last block and the classifier layer (which were trained)",
    "bias": "frozen but for their biases and the classifier layer (BiTFiT: those were trained)",
    "lora": "frozen; low-rank adapters (LoRA) and the classifier layer were trained",
}


def pretrained_inputs(model_config) -> list[str]:
    """The ledger's sentence on the weights a run started from (none without ``model.weights``): what they
    are (file name and SHA-256) and the assumption that makes them cost no privacy."""
    if model_config.weights is None:
        return []
    path = Path(model_config.weights)
    digest = weights_digest(path) or "unknown (file missing)"
    part = FROZEN_PARTS.get(model_config.freeze, "the starting point of training")
    return [f"Pretrained weights '{path.name}' (SHA-256 {digest[:16]}) were {part}; they are taken to be trained "
            f"without this data's patients (public or disjoint data), so they cost no privacy here: if they were "
            f"trained on the private data, the epsilon above does not hold"]
