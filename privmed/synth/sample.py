"""``privmed synth sample``: images from a trained generator, as a class-folder tree.

Writes ``OUT/<class>/<class>_<i>.png`` (8-bit PNG), ``OUT/manifest.csv`` (one row per image:
path, 0/1 label, class, ``synthetic=True``, the generator's folder and a hash of its
weights) and ``OUT/privacy.json``, a copy of the generator's privacy record: any
classifier trained on these images composes that record into its own ledger.
Deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from privmed import rundir, seal
from privmed.errors import FOLDER_NOT_EMPTY, PATH_MISSING, TOO_FEW_IMAGES, PrivmedError

from .gan import NOISE_DIM, Generator
from .training import GENERATOR_FILE

MANIFEST = "manifest.csv"


def load_generator(folder: str | Path) -> tuple[Generator, dict]:
    """The weight-averaged generator of a ``synth train`` folder, and its record."""
    path = Path(folder) / GENERATOR_FILE
    if not path.is_file():
        raise PrivmedError(PATH_MISSING.format(what="generator", path=path, cwd=Path.cwd())
                           + " Train one with `privmed synth train` (it writes generator.pt when it finishes).")
    record = rundir.load_checkpoint(path, fix="Train the generator again with `privmed synth train`.")
    gen = Generator(image_size=record["image_size"], width=record["width"])
    gen.load_state_dict(record["state"])
    return gen.eval(), record


@torch.no_grad()
def generate(gen: Generator, *, n_per_class: int, seed: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` images of each class as float32 (N, H, W) in [0, 1], and their labels."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(gen.num_classes).repeat_interleave(n_per_class)
    z = torch.randn(len(labels), NOISE_DIM, generator=rng)
    parts = [gen(z[i:i + chunk], labels[i:i + chunk]) for i in range(0, len(labels), chunk)]
    images = ((torch.cat(parts)[:, 0] + 1) / 2).clamp(0, 1)
    return images.numpy().astype(np.float32), labels.numpy()


def synthetic_images(target: str | Path, *, n: int, image_size: int | None, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, tuple[str, str], int]:
    """Images to measure: ``n`` sampled from a generator folder, or all images of any folder of
    synthetic images (class folders or a manifest). Returns images (N, H, W) in [0, 1], 0/1 labels,
    class names and the image size (a generator's own; 64 px for a folder unless given)."""
    from privmed.config import DataConfig
    from privmed.data.sources import load_dataset

    target = Path(target)
    if (target / GENERATOR_FILE).is_file():
        if n < 2:
            raise PrivmedError(TOO_FEW_IMAGES.format(n=n, what="drawing from a generator", minimum=2))
        gen, record = load_generator(target)
        if image_size not in (None, record["image_size"]):
            raise PrivmedError(f"the generator makes {record['image_size']} px images; leave out --image-size.")
        images, labels = generate(gen, n_per_class=n // 2, seed=seed)
        return images, labels, tuple(record["class_names"]), record["image_size"]
    size = image_size or 64
    folder = load_dataset(DataConfig(path=str(target), image_size=size, attribute_columns=()), require_splits=(),
                          assign_splits=False)
    return folder.images, folder.labels[:, 0].astype(int), ("negative", folder.label_names[0]), size


def sample(folder: str | Path, *, n: int, out: str | Path, seed: int = 0) -> Path:
    """Write ``n`` images (half per class) from the generator in ``folder`` to ``out``."""
    folder, out = Path(folder), Path(out)
    if n < 2:
        raise PrivmedError(TOO_FEW_IMAGES.format(n=n, what="sampling", minimum=2))
    if not rundir.is_new_or_empty(out):
        raise PrivmedError(FOLDER_NOT_EMPTY.format(path=out, what="samples", option="--out"))
    gen, record = load_generator(folder)
    rundir.check_folder_names(record["class_names"], f"the class names of generator '{folder}'")
    privacy = rundir.read_record(folder)  # the generator's record, refused before anything is written
    seal.verify(folder, [GENERATOR_FILE, rundir.CONFIG])  # an edited generator.pt or config.yaml is refused
    privacy = dataclasses.replace(privacy, upstream=(*privacy.upstream, rundir.upstream_entry(folder, privacy)))
    images, labels = generate(gen, n_per_class=n // gen.num_classes, seed=seed)
    digest = hashlib.sha256((folder / GENERATOR_FILE).read_bytes()).hexdigest()[:12]
    write_image_tree(out, images, labels, class_names=tuple(record["class_names"]), generator=folder, digest=digest,
                     seed=seed)
    rundir.write_record(out, privacy)  # the generator's record, naming it (and its seal) as upstream
    seal.seal(out, [MANIFEST])
    return out


def write_image_tree(out: Path, images: np.ndarray, labels: np.ndarray, *, class_names: tuple[str, str],
                     generator: Path, digest: str, seed: int) -> None:
    """``out/<class>/<class>_<i>.png`` (8-bit) for images (N, H, W) in [0, 1] and ``out/manifest.csv``: path,
    0/1 label, class, ``synthetic=True``, the folder that made them (``generator``), ``digest`` of what made them
    and the seed: what ``--synthetic`` reads to find the images and their privacy record's origin."""
    rundir.check_folder_names(class_names, "a synthetic class folder")
    rows = []
    for i, (image, label) in enumerate(zip(images, labels)):
        name = class_names[label]
        rel = Path(name) / f"{name}_{i:05d}.png"
        (out / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(out / rel)
        rows.append({"path": str(rel), "label": int(label), "class": name, "synthetic": True,
                     "generator": str(generator.resolve()), "generator_sha256": digest, "seed": seed})
    rundir.write_csv(out / MANIFEST, pd.DataFrame(rows))
