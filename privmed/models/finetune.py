"""Which part of a pretrained network DP-SGD trains: ``model.freeze`` (``--freeze``).

=============  ==============================================================================================
``none``       every weight trains (a BatchNorm is refused or replaced: :func:`privmed.models.check_dp_trainable`)
``backbone``   only the classifier layer; the rest is a frozen front end whose features are computed once
               (:func:`privmed.models.pretrained.freeze_backbone`)
``last_block`` the network's last block (stage) and what runs after it (final norm, classifier layer)
``bias``       BiTFiT: every bias (BatchNorm's too) and the classifier layer
``lora``       low-rank adapters (peft's LoRA, rank ``model.args.lora_rank`` of a backbone, default 8) on the
               linear layers but the classifier (on the convolutions of a network without any) and the
               classifier layer
=============  ==============================================================================================

In the last three, every BatchNorm becomes a :class:`FrozenBatchNorm`: it normalises each image with its
stored statistics, so it is a per-sample map and DP-safe, and pretrained ResNets and DenseNets keep working.
Only per-sample layers train (:func:`_probe`). A Swin's window attention calls its linear layers on windows
stacked where Opacus expects samples; they are wrapped (:class:`WindowFolded`) so that each image's windows are
one sample again, and train; its relative-position bias table (a parameter of a module holding a buffer) stays
frozen. ``last_block`` computes what comes before the block once and caches it, like
``backbone``, where the network's own forward can start at the block (checked on a probe input: the block's
input fed to a copy whose earlier modules are identities gives the same logits); otherwise (a ViT, whose
forward adds position embeddings between modules) the whole network runs every step, as it does for
``bias`` and ``lora``.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from opacus.grad_sample import register_grad_sampler
from torch import nn

from privmed.errors import FREEZE_NOT_APPLICABLE, PrivmedError

from .backbones import DEFAULT_LORA_RANK, _import
from .parts import FrontEndClassifier
from .pretrained import FrozenBackbone, freeze_backbone, last_linear

#: where a network's last block is, in the order tried ("-1": the container's last child with weights): ResNet,
#: timm's Swin, timm's ConvNeXt (and most timm networks), DenseNet, torchvision's ViT, timm's ViT, torchvision's
#: ConvNeXt / Swin (and privmed's ResNet9)
LAST_BLOCKS = ("layer4", "layers.-1", "stages.-1", "features.denseblock4", "encoder.layers.-1", "blocks.-1",
               "features.-1")


class ChannelAffine(nn.Module):
    """``x * weight + bias`` per channel (dimension 1): a :class:`FrozenBatchNorm`'s affine part, the one Opacus
    sees (its per-sample gradients: :func:`_channel_affine_grad_sample`)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


@register_grad_sampler(ChannelAffine)
def _channel_affine_grad_sample(layer: ChannelAffine, activations: list[torch.Tensor],
                                backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of a :class:`ChannelAffine` (as Opacus's GroupNorm sampler)."""
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = torch.einsum("ni...->ni", activations[0] * backprops)
    if layer.bias.requires_grad:
        grads[layer.bias] = torch.einsum("ni...->ni", backprops)
    return grads


class FrozenBatchNorm(nn.Module):
    """A BatchNorm fixed at its loaded statistics: normalises each sample on its own, in training as in
    evaluation, so it is a per-sample map and DP-safe. Its affine weights live in ``affine``
    (:class:`ChannelAffine`), frozen unless a freeze mode trains them (``bias``: the bias); the output is a
    fresh tensor, so a network that adds to it in place (a ResNet's ``out += identity``) leaves Opacus's
    hooks on ``affine`` intact."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = bn.eps
        ones, zeros = torch.ones(bn.num_features), torch.zeros(bn.num_features)
        self.register_buffer("running_mean", (bn.running_mean if bn.running_mean is not None else zeros).clone())
        self.register_buffer("running_var", (bn.running_var if bn.running_var is not None else ones).clone())
        self.affine = ChannelAffine(bn.weight if bn.weight is not None else ones,
                                    bn.bias if bn.bias is not None else zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = torch.rsqrt(self.running_var.view(shape) + self.eps)
        return self.affine((x - self.running_mean.view(shape)) * scale).clone()


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm of ``model`` replaced (in place) by a :class:`FrozenBatchNorm` of it, and in-place
    activations (``ReLU(inplace=True)``) made out-of-place: Opacus's backward hooks on a trained layer cannot
    have its output overwritten."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            model.set_submodule(name, FrozenBatchNorm(module))
        elif isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return model


def _trainable_only(model: nn.Module, keep: Callable[[str], bool]) -> nn.Module:
    for name, param in model.named_parameters():
        param.requires_grad_(keep(name))
    return model


def _head_name(model: nn.Module, mode: str) -> str:
    head = last_linear(model)
    if head is None:
        raise PrivmedError(FREEZE_NOT_APPLICABLE.format(freeze=mode, model=type(model).__name__,
                                                        reason="it has no linear classifier layer."))
    return head


def train_biases(model: nn.Module) -> nn.Module:
    """BiTFiT: only the biases (of per-sample layers, :func:`_probe`) and the classifier layer train."""
    head = _head_name(model, "bias")
    fold_windows(freeze_batchnorm(model))
    _, per_sample = _probe(model)
    return _trainable_only(model, lambda n: n.startswith(head + ".")
                           or (n.rpartition(".")[2] == "bias" and n.rpartition(".")[0] in per_sample))


def add_lora(model: nn.Module) -> nn.Module:
    """peft's LoRA adapters (rank ``model.lora_rank``, default 8; alpha = rank) on the per-sample linear layers
    (:func:`_probe`) but the classifier, or on the convolutions of a network without any; adapters and
    classifier train."""
    peft = _import("peft")
    head = _head_name(model, "lora")
    fold_windows(freeze_batchnorm(model))
    _, per_sample = _probe(model)
    layers = [(n, m) for n, m in model.named_modules() if n in per_sample and n != head]
    targets = [n for n, m in layers if isinstance(m, nn.Linear)] or [n for n, m in layers if isinstance(m, nn.Conv2d)]
    if not targets:
        raise PrivmedError(FREEZE_NOT_APPLICABLE.format(freeze="lora", model=type(model).__name__,
                                                        reason="it has no linear or convolution layer to adapt."))
    rank = int(getattr(model, "lora_rank", DEFAULT_LORA_RANK))
    config = peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", target_modules=targets)
    model = peft.inject_adapter_in_model(config, model)
    return _trainable_only(model, lambda n: ".lora_" in n or n.startswith(head + "."))


def last_block_name(model: nn.Module) -> str:
    """Qualified name of the network's last block (:data:`LAST_BLOCKS`, under a wrapper's ``net``)."""
    for prefix in ("net.", ""):
        for candidate in LAST_BLOCKS:
            container, _, last = (prefix + candidate).rpartition(".")
            try:
                if last == "-1":  # the container's last child holding weights (not a pool or a flatten)
                    name = [n for n, m in model.get_submodule(container).named_children()
                            if any(True for _ in m.parameters())][-1]
                    return f"{container}.{name}"
                model.get_submodule(prefix + candidate)
                return prefix + candidate
            except (AttributeError, IndexError):
                continue
    raise PrivmedError(FREEZE_NOT_APPLICABLE.format(
        freeze="last_block", model=type(model).__name__,
        reason=f"privmed does not know where its last block is (looked for {', '.join(LAST_BLOCKS)})."))


#: images in the probe batch: an odd count, so a layer that folds windows or tokens into dimension 0 shows
PROBE_BATCH = 3


class WindowFolded(nn.Module):
    """A linear layer that the network calls on windows of its images stacked in dimension 0 (a Swin's window
    attention: B x W windows of N tokens), called instead on each image's W windows side by side: (B, W x N, C).
    The outputs are the same, row for row; dimension 0 is the image again, so Opacus's per-sample gradients of the
    layer are per image (the sum over its windows), as DP-SGD needs."""

    def __init__(self, layer: nn.Module, *, windows: int) -> None:
        super().__init__()
        self.layer, self.windows = layer, windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, tokens = x.shape[0], x.shape[1]
        y = self.layer(x.reshape(rows // self.windows, self.windows * tokens, *x.shape[2:]))
        return y.reshape(rows, tokens, *y.shape[2:])


def fold_windows(model: nn.Module) -> nn.Module:
    """Every windowed linear layer (:func:`_windowed_layers`) wrapped in :class:`WindowFolded`, so it is a
    per-sample layer that DP-SGD can train."""
    for name, windows in _windowed_layers(model).items():
        model.set_submodule(name, WindowFolded(model.get_submodule(name), windows=windows))
    return model


@torch.no_grad()
def _windowed_layers(model: nn.Module) -> dict[str, int]:
    """The linear layers called on windows stacked in dimension 0, and the windows of one image: name -> windows.

    Found on two probe batches that differ only in their first image: a layer whose input has ``PROBE_BATCH x W``
    rows (W > 1) of which only the first W change holds each image's windows as one block of rows, which is what
    :class:`WindowFolded` assumes; a layer that mixes images' rows otherwise is left alone (and frozen)."""
    noise = torch.Generator().manual_seed(0)
    probe = _probe_batch(model, noise)
    changed_first = probe.clone()
    changed_first[0] = _probe_batch(model, noise)[0]
    inputs: list[dict[str, torch.Tensor]] = [{}, {}]
    for seen, batch in zip(inputs, (probe, changed_first)):
        _run_with_pre_hooks(model, batch, [(m, _first_input(seen, n)) for n, m in model.named_modules()
                                           if isinstance(m, nn.Linear)])
    return {name: x.shape[0] // PROBE_BATCH for name, x in inputs[0].items()
            if _holds_windows(x, inputs[1][name])}


def _first_input(seen: dict[str, torch.Tensor], name: str):
    def hook(module, args) -> None:  # returns None: the input goes on unchanged
        seen.setdefault(name, args[0])
    return hook


def _holds_windows(x: torch.Tensor, changed_first: torch.Tensor) -> bool:
    """``x`` has PROBE_BATCH x W rows (W > 1) and, of ``changed_first`` (the same layer's input when only the
    first image differs), only the first W rows differ: each image's windows are one block of rows."""
    rows = x.shape[0]
    if x.ndim < 3 or rows == PROBE_BATCH or rows % PROBE_BATCH:
        return False
    moved = (x != changed_first).flatten(1).any(1).nonzero().flatten()
    return len(moved) > 0 and int(moved.max()) < rows // PROBE_BATCH


@torch.no_grad()
def _probe(model: nn.Module) -> tuple[dict[str, int], set[str]]:
    """One forward pass of a blank batch: when each module's forward first started (name -> rank), and the
    per-sample layers: those whose input keeps the batch in dimension 0 and that hold no buffers.

    Only those can train under Opacus, which computes per-sample gradients layer by layer along dimension 0:
    a Swin's window attention sees windows there (its qkv and proj train once :func:`fold_windows` wrapped them),
    and a layer with buffers (its relative-position index) is refused by Opacus."""
    probe = _probe_batch(model, torch.Generator().manual_seed(0))
    order: dict[str, int] = {}
    per_sample: set[str] = set()

    def started(name: str):
        def hook(module, args) -> None:  # returns None: the input goes on unchanged
            order.setdefault(name, len(order))
            if args and isinstance(args[0], torch.Tensor) and args[0].shape[0] == PROBE_BATCH \
                    and not list(module.buffers()):
                per_sample.add(name)
        return hook

    _run_with_pre_hooks(model, probe, [(m, started(name)) for name, m in model.named_modules()])
    return order, per_sample


def _probe_batch(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """A blank batch of PROBE_BATCH grey images of the model's input size, in its dtype (public: no data)."""
    side = getattr(getattr(model, "adapter", None), "input_size", 64)
    return torch.rand(PROBE_BATCH, 1, side, side, generator=generator).to(next(model.parameters()).dtype)


@torch.no_grad()
def _run_with_pre_hooks(model: nn.Module, batch: torch.Tensor, hooks: list[tuple[nn.Module, Callable]]) -> None:
    """One evaluation-mode forward pass of ``batch`` with forward pre-hooks attached for it alone (the hooks
    and the model's training mode are restored however it ends)."""
    handles = [module.register_forward_pre_hook(hook) for module, hook in hooks]
    was_training = model.training
    try:
        model.eval()(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def train_last_block(model: nn.Module) -> nn.Module:
    """The last block and every module that runs after it train (their per-sample layers, :func:`_probe`);
    before it, all is frozen, and cached where the network's forward can start at the block (module doc)."""
    head = _head_name(model, "last_block")
    fold_windows(freeze_batchnorm(model))
    block = last_block_name(model)
    order, per_sample = _probe(model)
    later = {n for n, i in order.items() if i >= order[block] and not block.startswith(n + ".")} & per_sample
    keep = (lambda p: p.rpartition(".")[0] in later | {head})
    _trainable_only(model, keep)
    earlier = [n for n, i in order.items() if i < order[block] and n and not block.startswith(n + ".")]
    outermost = [n for n in earlier if not any(n.startswith(e + ".") for e in earlier)]
    suffix = copy.deepcopy(model)
    for name in outermost:
        suffix.set_submodule(name, nn.Identity())
    prefix = FrozenPrefix(model, block=block)
    probe = torch.rand(PROBE_BATCH, 1, 64, 64, dtype=next(suffix.parameters()).dtype)
    probe = nn.functional.interpolate(probe, size=getattr(getattr(model, "adapter", None), "input_size", 64))
    with torch.no_grad():
        whole, split = model.eval()(probe), suffix.eval()(prefix(probe))
    if split.shape == whole.shape and torch.allclose(split, whole, rtol=1e-4, atol=1e-5 * float(whole.abs().max())):
        return LastBlockClassifier(prefix, suffix).train()
    return _trainable_only(model, keep).train()


class _Reached(Exception):
    """Raised by :class:`FrozenPrefix`'s hook: the block's input is known, the rest need not run."""


class FrozenPrefix(FrozenBackbone):
    """The frozen network up to (not including) ``block``: (B, 1, H, W) -> the block's input."""

    def __init__(self, net: nn.Module, *, block: str) -> None:
        super().__init__(net)
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []

        def stop(module, args):
            seen.append(args[0])
            raise _Reached

        hook = self.net.get_submodule(self.block).register_forward_pre_hook(stop)
        try:
            self.net(x)
        except _Reached:
            pass
        finally:
            hook.remove()
        return seen[0]


class LastBlockClassifier(FrontEndClassifier):
    """``head(features(x))``: the frozen network up to its last block, computed once, and the trained rest."""


def _unchanged(model: nn.Module) -> nn.Module:
    return model


#: ``model.freeze`` -> what it does to the built (and weight-loaded) model
FREEZE_MODES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "none": _unchanged,
    "backbone": freeze_backbone,
    "last_block": train_last_block,
    "bias": train_biases,
    "lora": add_lora,
}


def apply_freeze(model: nn.Module, mode: str) -> nn.Module:
    """The model with ``model.freeze = mode`` applied (:data:`FREEZE_MODES`)."""
    return FREEZE_MODES[mode](model)
