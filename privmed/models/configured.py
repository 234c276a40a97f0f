"""The model a run's configuration describes: registry or MONAI network, its ``model.args``, pretrained
weights, a frozen backbone, and a check that DP-SGD can train what is left trainable.

``build_for_run(config, num_outputs=...)`` is what training, evaluation and audits call, so the
three build the very same network (a membership audit's shadows start from the same weights)::

    model:
      name: monai:DenseNet121          # or resnet9, vit, ... (`privmed models`)
      args: {init_features: 32}        # the network's own keyword arguments
      weights: pretrained/densenet.pt  # a state dict on disk; nothing downloads
      freeze: backbone                 # backbone: only the classifier layer trains (and goes through Opacus);
                                       # last_block, bias, lora: privmed.models.finetune
"""

from __future__ import annotations

import logging

from opacus.utils.module_utils import trainable_modules
from opacus.validators import ModuleValidator
from torch import nn

from privmed.errors import OPACUS_UNSUPPORTED_LAYER, PrivmedError

from .monai_nets import is_monai_name
from .parts import is_feature_model, trainable_part
from .finetune import apply_freeze
from .pretrained import last_linear, load_weights
from .registry import build_model

LOG = logging.getLogger(__name__)


def build_for_run(config, *, num_outputs: int, in_channels: int = 1, weights: bool = True) -> nn.Module:
    """The model of a :class:`~privmed.config.RunConfig`, ready for the trainer.

    ``weights=False`` skips reading ``model.weights`` (a caller that loads a trained state next).
    Raises :class:`PrivmedError` for a missing or ill-fitting weights file and, for a private run,
    for a trainable layer Opacus cannot handle (naming it), unless ``model.replace_batchnorm``.
    """
    m = config.model
    args = dict(m.args)
    norm = args.pop("norm", "group") if is_monai_name(m.name) else m.norm  # a MONAI network's own norm argument
    model = build_model(m.name, spatial_dims=config.data.spatial_dims, in_channels=in_channels,
                        num_outputs=num_outputs, image_size=config.data.image_size, norm=norm, **args)
    if m.weights is not None and weights:
        report = load_weights(model, m.weights, head=last_linear(model))
        if report.reinitialised:
            LOG.warning(f"the classifier layer of {m.weights} ({', '.join(report.reinitialised)}) has another shape "
                        f"than this task's {num_outputs} output(s): it starts freshly initialised")
    model = apply_freeze(model, m.freeze)  # backbone, last_block, bias, lora (privmed.models.finetune)
    if config.privacy.private:
        if m.replace_batchnorm:
            model = _replace_batchnorm(model)
        check_dp_trainable(trainable_part(model), name=m.name)
    return model


def check_dp_trainable(net: nn.Module, *, name: str) -> None:
    """Refuse, naming the first one, a trainable layer Opacus's validator rejects (BatchNorm, ...)."""
    was_training = net.training
    net.train()
    try:
        for layer, module in trainable_modules(net):
            validator = ModuleValidator.VALIDATORS.get(type(module))
            errors = validator(module) if validator is not None else []
            if errors:
                reason = str(errors[0]).strip().split(". ")[0].rstrip(".") + "."  # Opacus's first sentence
                raise PrivmedError(OPACUS_UNSUPPORTED_LAYER.format(layer=layer, kind=type(module).__name__,
                                                                   model=name, reason=reason))
    finally:
        net.train(was_training)


def _replace_batchnorm(model: nn.Module) -> nn.Module:
    """Opacus's ``ModuleValidator.fix`` (BatchNorm -> GroupNorm, ...) on the trainable part."""
    if is_feature_model(model):
        model.head = ModuleValidator.fix(model.head)
        return model
    return ModuleValidator.fix(model)
