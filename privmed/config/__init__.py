"""Run configuration: frozen dataclasses, validated at creation, that reject unknown keys.

A configuration comes from three layers, later ones winning: the defaults of the sections, a
YAML file (``--config run.yaml``), and command-line options. The resolved configuration is
written to ``RUN/config.yaml`` and is what ``--resume`` compares. One module per section
(:mod:`~privmed.config.data`, :mod:`~privmed.config.model`, :mod:`~privmed.config.privacy`,
:mod:`~privmed.config.training`, :mod:`~privmed.config.synthetic`, :mod:`~privmed.config.tune`),
the whole run in :mod:`~privmed.config.run`, older runs' configurations brought to today's in
:mod:`~privmed.config.migrate`, and what they share (reading a section, refusing
a value, YAML) in :mod:`~privmed.config.values`.

YAML layout (every section optional)::

    data:     {path: ../shared/data/cbis-ddsm-masses, class_names: [benign, malignant], positive_class: malignant,
               image_size: 128}
    model:    {name: scatter_linear}   # + args: {...}, weights: PATH, freeze: backbone (privmed.models.configured)
    privacy:  {epsilon: 1, delta: 1.0e-5, clip_norm: 1.0, accountant: prv}
    training: {epochs: 20, batch_size: 128, lr: 0.1, seed: 0}
    synthetic: {path: synth/g1, use: pretrain, finetune: full}
    out: runs/eps1
"""

from __future__ import annotations

from .data import MAX_IMAGE_SIZE, SPATIAL_DIMS, STREAM_SETTINGS, DataConfig
from .model import FREEZE_MODES, ModelConfig
from .privacy import ACCOUNTANTS, CENTER_SOURCES, MIN_DELTA, PRIVACY_UNITS, PrivacyConfig
from .migrate import CONFIG_VERSION
from .run import RunConfig, config_from_dict, config_from_run_dict, save_config
from .synthetic import FINETUNE_MODES, SYNTHETIC_USES, SyntheticConfig
from .training import OPTIMIZERS, TrainingConfig
from .tune import TuneConfig
from .values import (BAD_VALUE, MAX_EPOCHS, MAX_SEED, UNKNOWN_KEY, integer, load_yaml, merge, real, reject_unknown,
                     require, section_from_dict, to_plain)

__all__ = ["ACCOUNTANTS", "BAD_VALUE", "CENTER_SOURCES", "CONFIG_VERSION", "FINETUNE_MODES", "FREEZE_MODES", "MAX_EPOCHS",
           "MAX_IMAGE_SIZE", "MAX_SEED", "MIN_DELTA", "OPTIMIZERS", "PRIVACY_UNITS", "SPATIAL_DIMS", "STREAM_SETTINGS",
           "SYNTHETIC_USES", "UNKNOWN_KEY", "DataConfig", "ModelConfig", "PrivacyConfig", "RunConfig",
           "SyntheticConfig", "TrainingConfig", "TuneConfig", "config_from_dict", "config_from_run_dict", "integer",
           "load_yaml", "merge", "real", "reject_unknown", "require", "save_config", "section_from_dict", "to_plain"]
