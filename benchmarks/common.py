"""Helpers the CBIS-DDSM benchmarks share: where the data and results are, the argument parsing
and result writing every script uses, the fixed
recipe of the synthetic-data runs (``run_one``: one ``privmed train`` run, reused when finished; its
``total_epsilon`` makes a DP generator and the classifier compose to a total, ``privacy.total_epsilon``),
and the free phantom as pretraining data (``phantom_folder``). They use privmed's public API
(``privmed.__all__``); the in-memory DP head on frozen features that some benchmarks measure lives in
``components.py``.

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

import pandas as pd
import torch
import yaml

from components import BATCH, EPOCHS, EPSILON, SIZE  # noqa: F401 (shared names)
from privmed import (PhantomSpec, config_from_dict, privacy_unit, read_metrics, read_record, run_finished,
                     sample_generator, train, write_phantom_dataset)

ROOT = Path(__file__).resolve().parents[1]


SHARED = ROOT.parent / "shared" / "data"


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
        sample_generator(generator, n=3000, out=out, seed=0)
    return out


@functools.cache
def patient_delta(data: str) -> float:
    """The delta ``privmed train`` takes by default on ``data`` (``privmed.privacy_unit``): 1/(10 x patients), the
    patient being the unit of privacy."""
    data_section = {"path": data, "image_size": IMAGE_SIZE, "class_names": ["benign", "malignant"]}
    unit, delta = privacy_unit(config_from_dict({"data": data_section}))
    if unit.name != "patient":
        raise SystemExit(f"{data}: the data has no patient ids, so the unit of privacy is the {unit.name}.")
    return delta


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
    if not run_finished(out):
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
    metrics = read_metrics(out)["splits"]
    ledger = read_record(out)
    sgd = next((s for s in ledger.stages if s.stage == "dp_sgd"), None)
    test = metrics["test"]["auroc"]
    return {"strategy": strategy, "generator": generator,
            "epsilon": f"{sgd.epsilon_alone:.3g}" if sgd else ("0" if strategy == "synthetic_only" else "inf"),
            "total_epsilon": f"{ledger.epsilon:.3g}" if ledger.private else "inf", "seed": seed,
            "val_auroc": round(metrics["val"]["auroc"]["value"], 4), "test_auroc": round(test["value"], 4),
            "test_auroc_ci_low": round(test["ci_low"], 4), "test_auroc_ci_high": round(test["ci_high"], 4),
            "train_seconds": float((out / "train_seconds.txt").read_text()), "reinit_head": reinit_head,
            "run": str(out)}


PHANTOM = PhantomSpec(n_samples=3000, image_size=64, seed=0)


def phantom_folder(folder: Path) -> Path:
    """``folder`` holding the 3,000 phantom patches at 64 px (seed 0), written unless its record, written last,
    is there already (a folder without it is an interrupted write and is cleared)."""
    if not (folder / "privacy.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        write_phantom_dataset(folder, PHANTOM)
    return folder


def study_results(out: Path) -> pd.DataFrame:
    """The finished runs of a study's ``results.csv`` (``privmed study FILE --out OUT``), one row each, with its run
    folder as a path (``run_dir``) and the study's strategies as written in ``OUT/study.yaml`` (``attrs['study']``).
    Refuses a study with no finished run."""
    out = Path(out)
    table = pd.read_csv(out / "results.csv")
    table = table[table["status"] == "finished"].reset_index(drop=True)
    if table.empty:
        raise SystemExit(f"{out}: no finished run in results.csv; run `privmed study` there first.")
    table["run_dir"] = [out / d for d in table["dir"]]
    table.attrs["study"] = yaml.safe_load((out / "study.yaml").read_text())
    return table


def study_table(name: str, doc: str, rows, columns: list[str], markdown) -> None:
    """The ``main`` of a study's table script: read ``--study`` (the study's ``--out`` folder, default
    ``benchmarks/runs/<name>``), turn its finished runs into ``rows(results)``, and write ``columns`` of them and
    ``markdown(rows, study_facts)`` as ``<name>.csv`` / ``<name>.md`` under ``--results``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "benchmarks" / "runs" / name), help="the study's --out folder")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    table = rows(study_results(Path(args.study)))
    Path(args.results).mkdir(parents=True, exist_ok=True)
    write_results(Path(args.results), name, table[columns], markdown(table, study_facts(args.study)))


def study_facts(out: Path) -> str:
    """How long the study took (``OUT/timing.json``: every invocation's wall time) and on how many workers."""
    timing = json.loads((Path(out) / "timing.json").read_text())
    last = timing["invocations"][-1]
    return (f"The study's invocations took {timing['wall_seconds'] / 60:.1f} min of wall time (the last on "
            f"{last['workers']} worker(s), {last['cpu_count']} CPUs); finished runs are reused by a re-run.")
