"""Would a public prior make synthetic pretraining pay? CBIS-DDSM's training patients in two halves.

Issue 3 asks that pretraining on a DP generator's images, then DP fine-tuning, beat
DP-SGD on real data at the same total epsilon. On 1,104 patches it does not
(``cbis_synthetic.md``, ``feature_centre.md``). Work on DP synthetic data that does
pay starts the generator from public images. This measures the best case of that
route on the data at hand: the training patients are split in two halves
(patient-disjoint, stratified by label, seed 0), one treated as **public** (its images
cost nothing) and one as **private** (the only training data of every DP run; the
real val and test splits are kept). Both halves come from the same archive, so the
public prior matches the private data as no real public set would.

Priors for ``scatter_linear`` (``cbis_synthetic.py``'s recipe and ``run_one``: 64 px,
SGD lr 0.1, momentum 0.9, 15 epochs, expected batch 128, clip 1, PRV; pretraining 20
epochs; checkpoint = best val epoch), then DP fine-tuning on the private half at
epsilon 2, head kept and re-initialised (both shown):

* none: DP-SGD on the private half alone (its feature centre released privately);
* ``public_gan``: 3,000 images of privmed's generator trained WITHOUT DP on the public
  half (the recipe ``cbis_synthetic`` chose: DiffAugment and minibatch std, 60 epochs);
  free, as the public images are; a DP fine-tuning of it on the private half could
  add only what the private half holds, and that half is drawn from the same patients'
  distribution as the public one;
* ``public_images``: the public half's own images;
* ``phantom``: privmed's in-silico phantom (3,000 patches, no patient data).

The public half and the generator's images are declared public (``synthetic.public``,
which this script knows to be true by construction): privmed checks that they share no
patient id and no identical image with the private half, and each run's ledger composes
only what touches the private half, stating the declaration.

    python benchmarks/public_prior.py [--runs benchmarks/runs/public_prior] [--seeds 5]

Writes ``benchmarks/results/public_prior.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import (RECIPE, ROOT, SHARED, TOTAL_EPSILON, parse_benchmark_args, phantom_folder, run_facts, run_one,
                    samples_once, seed_summary, write_results)
from privmed import generator_config_from_dict, train_generator

EPSILON = 2.0
DECLARED_PUBLIC = ("public_gan", "public_images")  # the phantom needs no declaration: its record says data-independent
GAN = {"epochs": 60, "batch_size": 64, "width": 32, "diff_augment": True, "minibatch_std": True, "seed": 0}


def split_halves(data: Path, work: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Manifests (absolute image paths) of the public half (its training patients only) and the
    private half (the other training patients, plus the real val and test splits)."""
    table = pd.read_csv(data / "metadata.csv").assign(path=lambda t: [str(data / p) for p in t["path"]])
    train = table[table["split"] == "train"]
    patient_label = train.groupby("patient_id")["label"].max()
    rng = np.random.default_rng(seed)
    public = set()
    for label in (0, 1):
        ids = rng.permutation(patient_label.index[patient_label == label].to_numpy())
        public |= set(ids[: len(ids) // 2])
    in_public = table["patient_id"].isin(public) & (table["split"] == "train")
    folders = []
    for name, rows in (("public", table[in_public]), ("private", table[~in_public])):
        (work / name).mkdir(parents=True, exist_ok=True)
        rows.to_csv(work / name / "metadata.csv", index=False)
        folders.append(work / name)
    return folders[0], folders[1]


#: the halves' manifests list the CBIS-DDSM images where they lie, outside the halves' own folders
HALF_RECIPE = {**RECIPE, "data": {**RECIPE["data"], "allow_outside_root": True}}


def public_gan_samples(public: Path, work: Path) -> Path:
    """privmed's generator trained without DP on the public half, and 3,000 of its images."""
    gen, samples = work / "public_gan", work / "public_gan_samples"
    if not (gen / "generator.pt").is_file():  # the generator's weights, written when its training ends
        data = {"path": str(public), "image_size": 64, "allow_outside_root": True}  # the half lists CBIS images
        train_generator(generator_config_from_dict({"out": str(gen), "data": data, "gan": GAN}),
                        resume=(gen / "checkpoints").is_dir())
    return samples_once(gen, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "public_prior"))
    args = parse_benchmark_args(parser, seeds=5)
    t0 = time.perf_counter()
    runs = Path(args.runs)
    public, private = split_halves(Path(args.data), runs)
    priors = {"public_gan": public_gan_samples(public, runs), "public_images": public,
              "phantom": phantom_folder(runs / "phantom")}
    gan_minutes = pd.read_csv(runs / "public_gan" / "history.csv")["seconds"].sum() / 60
    cells = [{"strategy": "dp_sgd_real", "generator": "none", "folder": None}]
    cells += [{"strategy": "pretrain_finetune", "generator": name, "folder": folder, "reinit_head": reinit,
               "public": name in DECLARED_PUBLIC} for name, folder in priors.items() for reinit in (False, True)]
    rows = []
    for cell in cells:
        for seed in range(args.seeds):
            row = run_one(str(private), runs, seed=seed, epsilon=EPSILON, recipe=HALF_RECIPE, **cell)
            rows.append({k: v for k, v in row.items() if k != "run"})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    n = {name: len(pd.read_csv(folder / "metadata.csv").query("split == 'train'")) for name, folder in
         (("public", public), ("private", private))}
    write_results(Path(args.results), "public_prior", table,
                  markdown(table, n, gan_minutes, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, n: dict[str, int], gan_minutes: float, seconds: float) -> list[str]:
    """Mean over seeds per prior and head, beside DP-SGD on the private half alone."""
    table = table.assign(head=table["reinit_head"].map({False: "kept", True: "re-initialised"}).where(
        table["strategy"] == "pretrain_finetune", ""))
    summary = seed_summary(table, ["generator", "head"], sort=False, epsilon=("epsilon", "first"),
                           total=TOTAL_EPSILON)
    bar_val, bar_test = summary.loc[0, "val"], summary.loc[0, "test"]
    lines = ["# A public prior for synthetic pretraining: CBIS-DDSM's training patients split in two", "",
             f"Public half {n['public']} training patches, private half {n['private']} (patient-disjoint, "
             "stratified, seed 0); real val and test. `scatter_linear` at 64 px, DP fine-tuning on the private "
             f"half at epsilon {EPSILON:g} (PRV, patient unit: one image of a sampled patient per step, delta 1/(10 x patients), secret noise); `epsilon` is DP-SGD's alone, `total epsilon` the "
             "run's ledger: the public half and the public GAN's images are declared public (`synthetic.public`; "
             "privmed found no shared patient id and no identical image), the phantom is made without patient "
             "data, so only the private half's stages count (see the script's docstring). Test AUROC, mean over "
             f"seeds (min-max). The public generator trained for {gan_minutes:.1f} min. " + run_facts(seconds)
             + " (runs already under --runs are reused).",
             "", "| prior | head | epsilon | total epsilon | val AUROC | vs none, val | test AUROC | vs none, test | "
             "seeds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['generator']} | {r['head']} | {r['epsilon']} | {r['total']} | {r['val']:.3f} | "
                     f"{r['val'] - bar_val:+.3f} | {r['test']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | "
                     f"{r['test'] - bar_test:+.3f} | {r['seeds']} |")
    return lines


if __name__ == "__main__":
    main()
