"""Writing the phantom as a folder data set (images, ``metadata.csv`` and its origin record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from privmed import atomic, rundir, seal
from privmed.errors import FOLDER_NOT_EMPTY, PrivmedError
from privmed.privacy.record import PrivacyRecord

from .draw import draw_phantom
from .spec import CLASS_DIRS, MANIFEST_COLUMNS, PhantomSpec


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_phantom_dataset(root: str | Path, spec: PhantomSpec = PhantomSpec()) -> Path:
    """Generate the phantom and write it as a folder data set.

    Writes ``ROOT/images/<split>/<benign|malignant>/<sample_id>.png`` (8-bit
    grayscale) and ``ROOT/metadata.csv`` with columns ``path`` (relative to ROOT,
    forward slashes), ``split``, ``label`` (1 = malignant), ``class`` (its name), ``patient_id``, ``breast_density``,
    ``age`` and ``age_group`` (then one 0/1 column per finding of a multi-label phantom, to train on
    with ``--label-column mass calcification distortion``), and ``ROOT/privacy.json``, a record saying the images are
    data-independent (so a classifier pretrained or augmented on them, ``privmed train
    --synthetic ROOT``, pays no privacy for them). ``ROOT`` must be new or empty, so that no
    data set's manifest is ever overwritten.

    Returns:
        The path of the manifest, ``ROOT/metadata.csv``.
    """
    root = Path(root)
    if not rundir.is_new_or_empty(root):
        raise PrivmedError(FOLDER_NOT_EMPTY.format(path=root, what="the phantom's images and manifest",
                                                   option="--dataset folder"))
    table, chunks = draw_phantom(spec)  # rendered and written chunk by chunk: memory bounded by one chunk
    for dirs in {(s, CLASS_DIRS[lab]) for s, lab in zip(table["split"], table["label"])}:
        (root / "images" / dirs[0] / dirs[1]).mkdir(parents=True, exist_ok=True)
    paths = [f"images/{row.split}/{CLASS_DIRS[row.label]}/{row.sample_id}.png" for row in table.itertuples(index=False)]
    for rows, images in chunks:
        for rel, pixels in zip(paths[rows], _to_uint8(images)):
            Image.fromarray(pixels, mode="L").save(root / rel, optimize=False, compress_level=1)
    manifest = table.assign(path=paths, **{"class": [CLASS_DIRS[label] for label in table["label"]]})
    manifest = manifest[[*MANIFEST_COLUMNS, *spec.findings]]
    out = root / "metadata.csv"
    atomic.write_text(out, manifest.to_csv(index=False))
    _write_origin(root, spec)
    return out


def _write_origin(root: Path, spec: PhantomSpec) -> None:
    """The origin record that ``privmed train --synthetic`` reads: data-independent, so no privacy cost."""
    source = (f"privmed phantom (n_samples={spec.n_samples}, image_size={spec.image_size}, seed={spec.seed}, "
              f"malignant_fraction={spec.malignant_fraction}"
              + (f", findings={','.join(spec.findings)})" if spec.findings else ")"))
    record = PrivacyRecord.data_independent_origin(
        source=source, summary=f"{source}: drawn by a fixed program from a seed, from no patient data; using these "
                              f"images costs no privacy.")
    rundir.write_record(root, record)  # where `privmed synth sample` puts a generator's record
    seal.seal(root, ["metadata.csv"])
