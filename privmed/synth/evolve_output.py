"""What ``privmed synth evolve`` writes: a folder of synthetic images ``privmed train --synthetic`` reads.

``OUT/<class>/<class>_<i>.png`` (8-bit), ``OUT/manifest.csv`` (the columns ``synth sample``
writes: path, 0/1 label, class, ``synthetic=True``, the generator, a hash of its parameters and
the seed), ``OUT/privacy.json`` (the evolution's ledger: a classifier trained on the images
composes its stage), ``OUT/population.npz`` (every written image's phantom parameters),
``OUT/history.csv`` (per round: noisy votes, winners, epsilon spent, mean parameters),
``OUT/config.yaml`` and ``OUT/preview.png`` (a grid of images per class).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from privmed import atomic, rundir, seal
from privmed.data.phantom import write_image_grid
from privmed.data.sources import Dataset
from privmed.privacy.ledger import PrivacyLedger

from . import candidates as cand
from .config import EvolveConfig
from .sample import MANIFEST, write_image_tree

__all__ = ["MANIFEST", "POPULATION", "PREVIEW", "class_names", "write_output"]

POPULATION = "population.npz"
PREVIEW = "preview.png"


def class_names(real: Dataset) -> tuple[str, str]:
    """Names of the written classes 0 and 1, as ``synth sample`` names them (the positive class and its negation)."""
    positive = real.label_names[0]
    return f"not_{positive}", positive


def write_output(config: EvolveConfig, final: list[dict], *, ledger: PrivacyLedger, history: list,
                 real: Dataset, rng: np.random.Generator) -> Path:
    """Render the final populations (class 0, class 1) and write the folder; returns its path."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    population = cand.join(*final)
    labels = np.repeat([0, 1], [cand.size_of(p) for p in final])
    images = cand.render(population, image_size=config.data.image_size, rng=rng)
    digest = _write_population(out / POPULATION, population, labels)
    names = class_names(real)
    write_image_tree(out, images, labels, class_names=names, generator=out, digest=digest, seed=config.evolve.seed)
    rundir.write_yaml(out / rundir.CONFIG, config.to_dict())  # its data section: what the evolution saw
    rundir.write_csv(out / rundir.HISTORY, _history_frame(history))
    order = np.concatenate([np.flatnonzero(labels == c)[:8] for c in (0, 1)])
    write_image_grid(images[order], labels[order], out / PREVIEW, per_class=8, class_names=names,
                     title=f"private evolution after {config.evolve.rounds} rounds")
    rundir.write_record(out, ledger.record())
    seal.seal(out, [rundir.CONFIG, MANIFEST, POPULATION])
    rundir.append_log(out, ledger.summary())
    return out


def _write_population(path: Path, population: dict, labels: np.ndarray) -> str:
    """Every written image's parameters (and label) as ``.npz``; returns the first 12 hex digits of its SHA-256."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, label=labels, **population)
    atomic.write_bytes(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:12]


def _history_frame(history: list) -> pd.DataFrame:
    rows = []
    for r in history:
        row = {k: v for k, v in asdict(r).items() if k not in ("noisy_votes", "winners", "summary")}
        row.update({"noisy_votes_0": r.noisy_votes[0], "noisy_votes_1": r.noisy_votes[1],
                    "winners_0": r.winners[0], "winners_1": r.winners[1]})
        row.update({f"mean_{k}": v for k, v in r.summary.items()})
        rows.append(row)
    return pd.DataFrame(rows)
