"""The report's "Synthetic images" section: a sample grid of every synthetic folder a study uses,
its privacy record, and how varied its images are beside the real training images.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from privmed import rundir
from privmed.errors import PrivmedError
from privmed.study.config import StudyConfig

from .document import Heading, Paragraph, Picture

#: a generator whose per-pixel spread across images is below this share of the real images' is flagged
LOW_DIVERSITY_RATIO = 0.5


def synthetic_section(study: StudyConfig, out: Path) -> list:
    """A grid, the privacy record and a diversity note for each synthetic folder of the study's runs."""
    from privmed.data.phantom import write_image_grid
    from privmed.synth.sample import synthetic_images

    sources: dict[str, tuple[str, str, bool]] = {}
    cells = study.cells(out)
    for cell in cells:
        path = cell.config.synthetic.path
        if path and path not in sources and Path(path).exists():
            sources[path] = (cell.strategy, _source_kind(study, cell.generator, path), cell.config.synthetic.public)
    if not sources:
        return []
    blocks: list = [Heading("Synthetic images")]
    real = _real_training_images(cells[0].config.data)
    references: dict[int, list] = {}  # the real images' diversity at each synthetic image size
    for k, (path, (strategy, kind, public)) in enumerate(sources.items()):
        privacy = ("declared public by the user: no privacy cost, on that declaration" if public else
                   rundir.read_record(Path(path)).stated_summary if (Path(path) / rundir.PRIVACY).is_file()
                   else "no privacy record: origin unknown")
        images, labels, names, size = synthetic_images(path, n=16, image_size=None)
        with tempfile.TemporaryDirectory() as tmp:
            png = write_image_grid(images, labels, Path(tmp) / "grid.png", per_class=8, class_names=names).read_bytes()
        blocks.append(Picture(f"synthetic_{k}", png, f"{kind} (used by {strategy}, ...): {privacy}"))
        if real is not None and len(images) >= 4:
            if size not in references:
                references[size] = real_diversity(real, size)
            blocks += diversity_note(images, labels, references[size])
    return blocks


def _real_training_images(data):
    """The study's real training split (for the diversity comparison), or None when it cannot be read."""
    from privmed.data.sources import load_dataset

    try:
        return load_dataset(data).split("train")
    except PrivmedError:
        return None


def real_diversity(real, size: int) -> list:
    """Per-class per-pixel spread of the real training images at ``size`` px."""
    from privmed.data.images import resize
    from privmed.synth.quality import diversity

    real_images = real.images if real.images.shape[-1] == size else \
        np.stack([resize(image, size=size) for image in real.images])
    return diversity(real_images, real.labels[:, 0].astype(int))


def diversity_note(images, labels, reference: list) -> list:
    """Flag synthetic images far less varied than the real ones (per-pixel spread across images, per class,
    as ``privmed synth evaluate`` measures it): a collapsed generator draws near-identical blobs."""
    from privmed.synth.quality import diversity

    synthetic = diversity(images, labels)
    ratios = [s / r for s, r in zip(synthetic, reference) if r > 0 and not math.isnan(s)]
    figures = (f"per-pixel spread across images, class 0 / 1: synthetic {synthetic[0]:.3f} / {synthetic[1]:.3f}, "
               f"real training images {reference[0]:.3f} / {reference[1]:.3f}")
    if ratios and min(ratios) < LOW_DIVERSITY_RATIO:
        return [Paragraph(f"Low diversity: these images vary far less than the real ones ({figures}); the "
                          f"generator has collapsed to a few near-identical images per class, whatever the grid "
                          f"above suggests.", "warning")]
    return [Paragraph(f"Diversity: {figures}.")]


def _source_kind(study: StudyConfig, generator: str | None, path: str) -> str:
    if generator is None:
        return f"folder {path}"
    if study.generator(generator).kind == "phantom":
        return f"privmed's phantom, drawn in this study ('{generator}')"
    return f"generator '{generator}' trained in this study"
