"""The in-memory pieces some benchmarks measure: a DP-SGD linear head trained by privmed's own recipe
(``privmed.train_in_memory``) on frozen ``scatter_linear`` features held in memory (``privmed.model_inputs``;
here ``features``, ``split_features``, ``dp_linear``). Public API only (docs/api.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from privmed import DataConfig, build_model, config_from_dict, load_dataset, model_inputs, train_in_memory

#: the DP head's recipe: image size, target epsilon, epochs, expected batch
SIZE, EPSILON, EPOCHS, BATCH = 64, 2.0, 15, 128


def features(model: nn.Module, images: np.ndarray) -> torch.Tensor:
    return model_inputs(model, torch.from_numpy(images).unsqueeze(1)).flatten(1).double()


def split_features(data: str) -> tuple[nn.Module, Any, dict, dict]:
    """``scatter_linear`` at SIZE px, the real data (``load_dataset``'s), and per split its frozen features and
    float labels."""
    real = load_dataset(DataConfig(path=data, image_size=SIZE, class_names=("benign", "malignant")))
    model = build_model("scatter_linear", spatial_dims=2, in_channels=1, num_outputs=1, image_size=SIZE)
    splits = {s: real.split(s) for s in ("train", "val", "test")}
    return (model, real, {s: features(model, d.images) for s, d in splits.items()},
            {s: torch.from_numpy(d.labels).float() for s, d in splits.items()})


def dp_linear(x: dict, y: dict, *, data: str, seed: int, privacy: dict | None = None,
              groups=None) -> tuple[float, float]:
    """privmed's DP-SGD recipe (``train_in_memory``) for a linear head on x['train'] with the run config's
    ``privacy`` section (default: DP-SGD alone at EPSILON); (val, test) AUROC of the best-val epoch.
    ``groups``: the patient id of each training row (the patient unit); None trains at the image unit."""
    config = config_from_dict({"data": {"path": data, "image_size": SIZE, "class_names": ["benign", "malignant"]},
                               "model": {"name": "scatter_linear"},
                               "privacy": privacy or {"epsilon": EPSILON},
                               "training": {"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.1, "augment": False,
                                            "seed": seed}})
    fitted = train_in_memory(config, build=lambda: nn.Linear(x["train"].shape[1], 1), x_train=x["train"],
                             y_train=y["train"], x_val=x["val"], y_val=y["val"], groups=groups)
    with torch.no_grad():
        return tuple(float(roc_auc_score(y[s][:, 0], fitted.net(x[s])[:, 0])) for s in ("val", "test"))
