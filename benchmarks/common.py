"""Helpers the CBIS-DDSM benchmarks share: where the data and results are, the argument parsing
and result writing every script uses, the scattering-feature DP head (``dp_linear``), the fixed
recipe of the synthetic-data runs (``run_one``: one ``privmed train`` run, reused when finished; its
``total_epsilon`` makes a DP generator and the classifier compose to a total, ``privacy.total_epsilon``),
and the free phantom as pretraining data (``phantom_folder``).

Every helper trains at privmed's default unit of privacy (the patient on CBIS-DDSM) with secret noise.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from privmed import rundir
from privmed.config import DataConfig, PrivacyConfig, config_from_dict
from privmed.data.phantom import PhantomSpec, write_phantom_dataset
from privmed.data.sources import Dataset, load_dataset
from privmed.models.registry import build_model
from privmed.privacy.plan import delta_for, protected_unit
from privmed.privacy.units import PrivacyUnit
from privmed.synth.sample import sample
from privmed.training.inputs import model_inputs
from privmed.training.trainer import train, train_in_memory

ROOT = Path(__file__).resolve().parents[1]


SHARED = ROOT.parent / "shared" / "data"


SIZE, EPSILON, EPOCHS, BATCH = 64, 2.0, 15, 128


def features(model: nn.Module, images: np.ndarray) -> torch.Tensor:
    return model_inputs(model, torch.from_numpy(images).unsqueeze(1)).flatten(1).double()


def split_features(data: str) -> tuple[nn.Module, Dataset, dict, dict]:
    """``scatter_linear`` at SIZE px, the real data, and per split its frozen features and float labels."""
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
    fitted = train_in_memory(config, lambda: nn.Linear(x["train"].shape[1], 1), x["train"], y["train"], x["val"],
                             y["val"], groups=groups)
    with torch.no_grad():
        return tuple(float(roc_auc_score(y[s][:, 0], fitted.net(x[s])[:, 0])) for s in ("val", "test"))


def parse_benchmark_args(parser: argparse.ArgumentParser, *, seeds: int = 3) -> argparse.Namespace:
    """Parse with the options every CBIS measurement shares (--results, --seeds), then quiet Opacus's
    warnings and use at most 2 threads, as CI does."""
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--seeds", type=int, default=seeds)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="opacus")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return args


def run_facts(seconds: float) -> str:
    """How long the whole benchmark took, and on what."""
    device = f"one {torch.cuda.get_device_name()} GPU" if torch.cuda.is_available() else "CPU"
    return (f"Whole run {seconds / 60:.1f} min on {device}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads.")


TOTAL_EPSILON = ("total_epsilon", "max")  # a cell's ledger total: the same for every seed, so any seed's will do
MEDIAN_TRAIN_S = ("train_seconds", "median")


def seed_summary(table: pd.DataFrame, by: str | list[str], *, sort: bool = True, **extra) -> pd.DataFrame:
    """One row per group of ``by``: mean val and test AUROC over seeds (``val``, ``test``), the test range
    (``lo``, ``hi``) and the number of seeds (``seeds``), plus any ``extra`` named aggregations (for example
    ``total=TOTAL_EPSILON, train_s=MEDIAN_TRAIN_S``)."""
    return (table.groupby(by, sort=sort)
            .agg(val=("val_auroc", "mean"), test=("test_auroc", "mean"), lo=("test_auroc", "min"),
                 hi=("test_auroc", "max"), seeds=("seed", "count"), **extra).reset_index())


def summary_cells(row) -> str:
    """A :func:`seed_summary` row (with ``total`` and ``train_s``) as the last cells of a markdown table: total
    epsilon, val AUROC, test AUROC (range), seeds and median training seconds."""
    return (f"{row.total:.3g} | {row.val:.3f} | {row.test:.3f} ({row.lo:.3f}-{row.hi:.3f}) | {row.seeds} | "
            f"{row.train_s:.0f} |")


def write_results(results: Path, name: str, table: pd.DataFrame, lines: list[str]) -> None:
    """``name``.csv (every row) and ``name``.md (the summary ``lines``, also printed)."""
    table.to_csv(results / f"{name}.csv", index=False)
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


IMAGE_SIZE = 64


RECIPE = {"data": {"image_size": IMAGE_SIZE, "class_names": ["benign", "malignant"]},
          "model": {"name": "scatter_linear"},
          "training": {"batch_size": 128, "physical_batch_size": 512, "lr": 0.1, "epochs": 15}}


PRETRAIN_EPOCHS, ONLY_EPOCHS = 20, 30


USE = {"augment": "augment", "pretrain_finetune": "pretrain", "synthetic_only": "only"}


def samples_once(generator: Path, out: Path) -> Path:
    """``out`` holding 3,000 images of ``generator`` (seed 0), drawn unless its manifest, written last, is
    there already (a folder without it is an interrupted draw and is cleared)."""
    if not (out / "manifest.csv").is_file():
        shutil.rmtree(out, ignore_errors=True)
        sample(generator, n=3000, out=out, seed=0)
    return out


@functools.cache
def patient_unit(data: str) -> tuple[PrivacyUnit, float]:
    """The training split's unit of privacy as ``privmed train`` resolves it by default (the patient,
    one image of a sampled patient per step) and its delta, 1/(10 x patients), from the privacy plan."""
    train = load_dataset(DataConfig(path=data, image_size=IMAGE_SIZE, class_names=("benign", "malignant")))
    train = train.split("train")
    unit = protected_unit(PrivacyConfig(), patient_ids=train.patient_ids, n=len(train))
    return unit, delta_for(unit, None, check=False)


#: the total epsilon of a DP generator and the classifier fine-tuned on its samples (``run_one(total_epsilon=...)``)
TOTAL_TWO = 2.0


def run_one(data: str, runs: Path, *, strategy: str, generator: str, folder: Path | None, seed: int,
            epsilon: float | None = None, noise: float | None = None, total_epsilon: float | None = None,
            reinit_head: bool = False, recipe: dict = RECIPE, pretrain_epochs: int = PRETRAIN_EPOCHS,
            public: bool = False) -> dict:
    """One run of ``recipe`` under ``runs`` (reused once its metrics are there) and its row: ``epsilon``,
    ``noise`` or ``total_epsilon`` (the run with the DP generator of ``folder`` composed; none: not private);
    ``folder``: synthetic images used as ``strategy`` says."""
    privacy = ({"epsilon": epsilon} if epsilon is not None else {"noise_multiplier": noise} if noise is not None
               else {"total_epsilon": total_epsilon} if total_epsilon is not None else {})
    tag = (f"eps{epsilon:g}" if epsilon is not None else f"sigma{noise:.4f}" if noise is not None
           else f"total{total_epsilon:g}" if total_epsilon is not None else "nodp")
    tag += "_reinit" if reinit_head else ""
    out = runs / f"{strategy}_{generator}_{tag}_seed{seed}"
    if not (out / rundir.METRICS).is_file():
        shutil.rmtree(out, ignore_errors=True)
        cfg = json.loads(json.dumps(recipe))
        cfg["data"]["path"] = data
        cfg["training"]["seed"] = seed
        cfg["privacy"] = privacy
        if folder is not None:
            cfg["synthetic"] = {"path": str(folder), "use": USE[strategy], "pretrain_epochs": pretrain_epochs,
                                "reinit_head": reinit_head, "public": public}
        if strategy == "synthetic_only":
            cfg["training"]["epochs"] = ONLY_EPOCHS
        cfg["out"] = str(out)
        t0 = time.perf_counter()
        train(config_from_dict(cfg))
        (out / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    metrics = rundir.read_json(out / rundir.METRICS)["splits"]
    ledger = rundir.read_json(out / rundir.PRIVACY)
    sgd = next((s for s in ledger["stages"] if s["stage"] == "dp_sgd"), None)
    test = metrics["test"]["auroc"]
    return {"strategy": strategy, "generator": generator,
            "epsilon": f"{sgd['epsilon_alone']:.3g}" if sgd else ("0" if strategy == "synthetic_only" else "inf"),
            "total_epsilon": f"{ledger['epsilon']:.3g}" if ledger["private"] else "inf", "seed": seed,
            "val_auroc": round(metrics["val"]["auroc"]["value"], 4), "test_auroc": round(test["value"], 4),
            "test_auroc_ci_low": round(test["ci_low"], 4), "test_auroc_ci_high": round(test["ci_high"], 4),
            "train_seconds": float((out / "train_seconds.txt").read_text()), "reinit_head": reinit_head,
            "run": str(out)}


PHANTOM = PhantomSpec(n_samples=3000, image_size=64, seed=0)


def phantom_folder(folder: Path) -> Path:
    """``folder`` holding the 3,000 phantom patches at 64 px (seed 0), written unless its record, written last,
    is there already (a folder without it is an interrupted write and is cleared)."""
    if not (folder / rundir.PRIVACY).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        write_phantom_dataset(folder, PHANTOM)
    return folder
