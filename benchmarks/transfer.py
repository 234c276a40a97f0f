"""Does a recipe learn the lesion or the scanner? Shortcut-aware criteria for privmed's default front end.

CBIS-DDSM carries an acquisition shortcut (whole-patch grey-level statistics predict the label; malignant
patches are brighter), and its val split shares it, so a recipe chosen on plain val drifts toward it and fails
at a hospital whose scanner differs. Every recipe here is privmed's own training (``train_in_memory``: the run's
defaults, patient unit, secret noise, the feature centre released and composed as in a run) on a frozen front
end, at privmed's default image size (``--image-size``), scored three ways the choice is made on:

* ``val_auroc``: plain CBIS val;
* ``deconfounded_val_auroc``: val AUROC within quintiles of the acquisition score cross-fitted on val
  (:mod:`privmed.evaluation.shortcut`);
* ``cluster_out_auroc``: leave-one-acquisition-cluster-out: the training patients clustered by acquisition
  statistics into 4 pseudo-sites (those whose minority class is at least 20% are held out in turn); trained on the
  others, scored on the held-out one; the mean over held-out clusters;

and reported (never chosen on): ``test_auroc``, ``deconfounded_test_auroc``, ``acquisition_baseline_test_auroc``
(acquisition statistics alone, cross-fitted on test), ``lesion_masked_test_auroc`` (the central half of each
side replaced by the surround) and ``shifted_test_auroc`` (:func:`privmed.data.shift.digital_scanner`, which moves
both classes alike: a robustness check, not evidence of transfer). The criterion is the mean of the three choice
columns, over seeds; CBIS val has 102 patients, so differences under about .03 are noise.

    python benchmarks/transfer.py --recipes o1_dih_std q_o2_nostd --epsilons 1 6 inf --seeds 5

Writes ``benchmarks/results/transfer.{csv,md}`` (rows already in the csv are kept unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from common import SHARED, parse_benchmark_args, run_facts
from privmed import DataConfig, build_model, config_from_dict, load_dataset, model_inputs, train_in_memory
# measured on purpose, below the public API: the shifted scanner and the shortcut figures on images in memory
from privmed.data.shift import digital_scanner
from privmed.evaluation import shortcut

DATA = str(SHARED / "cbis-ddsm-masses")
#: recipe -> (model, model.args); every row names its front end in full, so it keeps its meaning when defaults change
RECIPES: dict[str, tuple[str, dict]] = {
    "o1_dih_std": ("scatter_linear", {"input_norm": "none", "max_order": 1, "dihedral": True, "standardise": True}),
    "o1_plain": ("scatter_linear", {"input_norm": "none", "max_order": 1, "dihedral": False, "standardise": True}),
    "o1_nostd": ("scatter_linear", {"input_norm": "none", "max_order": 1, "dihedral": False, "standardise": False}),
    "o2_nostd": ("scatter_linear", {"input_norm": "none", "max_order": 2, "dihedral": False, "standardise": False}),
    "win_o2_nostd": ("scatter_linear", {"input_norm": "none", "max_order": 2, "dihedral": False, "standardise": False,
                                        "lesion_window": 0.5}),
    "z_o2_nostd": ("scatter_linear", {"max_order": 2, "dihedral": False, "standardise": False, "input_norm": "zscore"}),
    "q_o2_nostd": ("scatter_linear", {"max_order": 2, "dihedral": False, "standardise": False,
                                      "input_norm": "quantile"}),
    "q_o2": ("scatter_linear", {"max_order": 2, "dihedral": False, "standardise": True, "input_norm": "quantile"}),
    "q_win_o2_nostd": ("scatter_linear", {"max_order": 2, "dihedral": False, "standardise": False,
                                          "input_norm": "quantile", "lesion_window": 0.5}),
    "q_o1_nostd": ("scatter_linear", {"max_order": 1, "dihedral": False, "standardise": False,
                                      "input_norm": "quantile"}),
    "q_o2_dih_nostd": ("scatter_linear", {"max_order": 2, "dihedral": True, "standardise": False,
                                          "input_norm": "quantile"}),
    "descriptors": ("descriptor_linear", {}),
}
#: privmed's default front end (``scatter_linear`` with no arguments) and the one it replaced
DEFAULT, BEFORE = "q_o2_dih_nostd", "o1_dih_std"
CHOICE = ("val_auroc", "deconfounded_val_auroc", "cluster_out_auroc")
COLUMNS = ["recipe", "unit", "epsilon", "seed", *CHOICE, "test_auroc", "deconfounded_test_auroc",
           "acquisition_baseline_test_auroc", "lesion_masked_test_auroc", "shifted_test_auroc"]


def load_splits(size: int) -> dict:
    """Images, labels, patients, acquisition strata and clusters: everything a recipe is scored on."""
    real = load_dataset(DataConfig(path=DATA, image_size=size, class_names=("benign", "malignant")))
    parts = {s: real.split(s) for s in ("train", "val", "test")}
    images = {s: torch.from_numpy(p.images).unsqueeze(1) for s, p in parts.items()}
    images["shifted_test"] = digital_scanner(images["test"])
    images["masked_test"] = shortcut.mask_lesion(images["test"], shortcut.lesion_region((size, size)))
    base = {s: s.split("_")[-1] for s in images}
    labels = {s: parts[base[s]].labels[:, 0] for s in images}
    patients = {s: np.asarray(parts[s].patient_ids) for s in parts}
    stats = {s: shortcut.acquisition_statistics(parts[s].images) for s in parts}
    acquisition = {s: shortcut.acquisition_scores(stats[s], labels[s], patients[s]) for s in ("val", "test")}
    site, held_out = shortcut.acquisition_clusters(stats["train"], labels["train"], patients["train"])
    return {"images": images, "labels": labels, "patients": patients, "acquisition": acquisition,
            "strata": {s: shortcut.acquisition_strata(a) for s, a in acquisition.items()},
            "site": site, "held_out": held_out}


def fit(model_name: str, args: dict, x: torch.Tensor, y: np.ndarray, patients: np.ndarray, x_val, y_val, *,
        epsilon: float, seed: int, size: int):
    """privmed's training of ``model_name`` (its defaults) on features ``x``; the fitted head."""
    config = config_from_dict({"data": {"path": None, "image_size": size}, "model": {"name": model_name, "args": args},
                               "privacy": {"epsilon": epsilon}, "training": {"seed": seed}})
    build = lambda: build_model(model_name, image_size=size, **args)  # noqa: E731
    fitted = train_in_memory(config, build=build, x_train=x, y_train=torch.from_numpy(y).float().unsqueeze(1),
                             x_val=x_val, y_val=torch.from_numpy(y_val).float().unsqueeze(1), groups=patients)
    return fitted.net


def score(net, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(x)[:, 0].double().numpy()


def measure(recipe: str, data: dict, *, epsilon: float, seed: int, size: int, features: dict) -> dict:
    """One row: the recipe at ``epsilon`` and ``seed``, every column of :data:`COLUMNS`."""
    model_name, args = RECIPES[recipe]
    y, x = data["labels"], features
    train = dict(epsilon=epsilon, seed=seed, size=size)
    net = fit(model_name, args, x["train"], y["train"], data["patients"]["train"], x["val"], y["val"], **train)
    s = {split: score(net, f) for split, f in x.items()}
    cluster = []
    for c in data["held_out"]:
        keep = data["site"] != c
        held = fit(model_name, args, x["train"][keep], y["train"][keep], data["patients"]["train"][keep], x["val"],
                   y["val"], **train)
        cluster.append(roc_auc_score(y["train"][~keep], score(held, x["train"][~keep])))
    strat = lambda split: float(shortcut.stratified_auroc(y[split], s[split], data["strata"][split])[0])  # noqa: E731
    return {"recipe": recipe, "unit": "patient", "epsilon": epsilon, "seed": seed,
            "val_auroc": roc_auc_score(y["val"], s["val"]), "deconfounded_val_auroc": strat("val"),
            "cluster_out_auroc": float(np.mean(cluster)), "test_auroc": roc_auc_score(y["test"], s["test"]),
            "deconfounded_test_auroc": strat("test"),
            "acquisition_baseline_test_auroc": roc_auc_score(y["test"], data["acquisition"]["test"]),
            "lesion_masked_test_auroc": roc_auc_score(y["test"], s["masked_test"]),
            "shifted_test_auroc": roc_auc_score(y["test"], s["shifted_test"])}


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of every column per recipe and epsilon, the criterion (mean of the choice columns) and the seeds."""
    numbers = [c for c in COLUMNS if c not in ("recipe", "unit", "epsilon", "seed")]
    out = table.groupby(["recipe", "epsilon"], sort=False)[numbers].mean()
    out["criterion"] = out[list(CHOICE)].mean(axis=1)
    out["seeds"] = table.groupby(["recipe", "epsilon"], sort=False).size()
    return out.reset_index()


def paired(table: pd.DataFrame) -> pd.DataFrame:
    """The default's criterion minus each other recipe's, paired by epsilon and seed: mean and 95% t-interval."""
    from scipy import stats

    crit = table.assign(criterion=table[list(CHOICE)].mean(axis=1)).set_index(["recipe", "epsilon", "seed"])
    rows = []
    for recipe in dict.fromkeys(table["recipe"]):
        for epsilon in dict.fromkeys(table["epsilon"]):
            if recipe == DEFAULT or (recipe, epsilon) not in crit.index.droplevel(2):
                continue
            both = crit.loc[DEFAULT].loc[epsilon, "criterion"] - crit.loc[recipe].loc[epsilon, "criterion"]
            both = both.dropna()
            half = stats.t.ppf(0.975, len(both) - 1) * both.std(ddof=1) / np.sqrt(len(both)) if len(both) > 1 else np.nan
            rows.append({"recipe": recipe, "epsilon": epsilon, "difference": both.mean(), "low": both.mean() - half,
                         "high": both.mean() + half, "seeds": len(both)})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, facts: str, size: int) -> list[str]:
    s = summary(table)
    head = ["recipe", "ε", "criterion", "val", "deconf. val", "cluster-out", "test", "deconf. test",
            "acq. baseline test", "lesion-masked test", "shifted test", "seeds"]
    lines = [f"# Learn the lesion, not the scanner ({size} px, patient unit, privmed's default training)", "",
             "Chosen on `criterion` (mean of val, deconfounded val and leave-one-acquisition-cluster-out AUROC); "
             "test columns are reported, never chosen on. Means over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in s.itertuples(index=False):
        eps = "∞" if math.isinf(r.epsilon) else f"{r.epsilon:g}"
        cells = [r.criterion, r.val_auroc, r.deconfounded_val_auroc, r.cluster_out_auroc, r.test_auroc,
                 r.deconfounded_test_auroc, r.acquisition_baseline_test_auroc, r.lesion_masked_test_auroc,
                 r.shifted_test_auroc]
        name = f"**{r.recipe}** (default)" if r.recipe == DEFAULT else r.recipe
        lines.append(f"| {name} | {eps} | " + " | ".join(f"{v:.3f}" for v in cells) + f" | {r.seeds} |")
    lines += ["", f"The default (`{DEFAULT}`) minus each recipe on the criterion, paired by seed (mean and 95% "
              f"t-interval over seeds; an interval holding 0: level):", "",
              "| recipe | ε | difference | 95% interval | seeds |", "|---|---|---|---|---|"]
    for r in paired(table).itertuples(index=False):
        eps = "∞" if math.isinf(r.epsilon) else f"{r.epsilon:g}"
        lines.append(f"| {r.recipe} | {eps} | {r.difference:+.3f} | [{r.low:+.3f}, {r.high:+.3f}] | {r.seeds} |")
    return lines + ["", "Recipes (model and its arguments):", ""] + [
        f"- `{name}`: `{model}` {args}" for name, (model, args) in RECIPES.items() if name in set(s["recipe"])] + [
        "", facts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=[BEFORE, DEFAULT], choices=list(RECIPES))
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 6.0, math.inf])
    parser.add_argument("--image-size", type=int, default=DataConfig.image_size)
    parser.add_argument("--fresh", action="store_true")
    args = parse_benchmark_args(parser, seeds=5)
    results = Path(args.results)
    csv = results / "transfer.csv"
    table = pd.read_csv(csv) if csv.is_file() and not args.fresh else pd.DataFrame(columns=COLUMNS)
    t0 = time.perf_counter()
    data = load_splits(args.image_size)
    for recipe in args.recipes:
        model_name, model_args = RECIPES[recipe]
        model = build_model(model_name, image_size=args.image_size, **model_args)
        features = {s: model_inputs(model, x) for s, x in data["images"].items()}
        for epsilon in args.epsilons:
            for seed in range(args.seeds):
                done = (table["recipe"] == recipe) & (table["epsilon"] == epsilon) & (table["seed"] == seed)
                if done.any():
                    continue
                row = measure(recipe, data, epsilon=epsilon, seed=seed, size=args.image_size, features=features)
                table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
                table.to_csv(csv, index=False)
                print(recipe, epsilon, seed, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)},
                      flush=True)
    lines = markdown(table, run_facts(time.perf_counter() - t0), args.image_size)
    (results / "transfer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
