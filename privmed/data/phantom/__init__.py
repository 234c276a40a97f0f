"""In-silico mammography mass phantom: a built-in, download-free data set.

Many hospital machines cannot download public data sets, so privmed ships its
own generator of 2D mammography *mass* patches (regions of interest centred on a
lesion, like the crops of CBIS-DDSM). Everything here is privmed's own code and
fully deterministic: the same :class:`PhantomSpec` gives bit-identical output.

What a patch contains
---------------------
* **Anatomical background.** A Gaussian random field with a power-law spectrum
  ``P(f) ~ 1/f^beta`` (beta drawn per patient in [2.8, 3.2], the value measured
  on real mammograms) made by filtering white noise in the Fourier domain, with
  a mild orientation preference (fibroglandular tissue runs towards the nipple).
  A soft threshold turns it into *dense* (bright) fibroglandular tissue over a
  fatty (dark) background. The dense fraction follows the patient's BI-RADS
  density: about 10 %, 30 %, 55 % and 80 % for densities 1-4. A smooth
  thickness gradient and mild quantum noise are added.
* **A mass.** Benign masses are round or oval with a sharp, circumscribed
  margin; malignant masses are irregular (random radial harmonics, ill-defined
  margin) or spiculated (thin bright lines radiating from the mass). Each lesion
  has a latent "suspiciousness" in [0, 1] that drives irregularity, margin blur
  and spiculation; its distributions overlap between the classes (some benign
  masses are lobulated, some cancers are small and fairly round), so the task is
  not trivially separable.
* **Masking by dense tissue.** The mass contrast is lowered where it lies on
  dense tissue, and dense tissue has the same brightness and texture scale as
  the mass, so lesions are harder to see in dense breasts: classifier
  performance drops with density, a subgroup effect for fairness analysis.
* **Subgroup attributes.** Every patient has an age (40-79) and a BI-RADS
  density (1-4); density falls mildly with age and malignancy rises mildly with
  age (and density), as in screening populations. A patient contributes 1 to
  ``images_per_patient`` patches (like CC/MLO views of the same lesion: same
  label and lesion type, re-drawn view), and splits are patient-disjoint.

* **Several findings (optional).** ``PhantomSpec(findings=("mass", "calcification",
  "distortion"))`` makes a multi-label phantom: each patient shows each finding or not
  (a mass as above, a cluster of microcalcifications, an architectural distortion:
  lines radiating from a point with no mass), so privmed's multi-label path is exercised
  by a data set of any size. Drawn from a stream of its own: the binary phantom's images
  stay bit-identical.

``privmed phantom --grid grid.png`` looks at samples (``--by-density``, ``--findings``);
``--dataset DIR`` writes a folder data set with a ``metadata.csv`` manifest. Modules: the
spec (:mod:`.spec`), the population (:mod:`.population`), drawing (:mod:`.draw`), writing
(:mod:`.write`) and the image grid (:mod:`.grid`).
"""


from __future__ import annotations

from .draw import draw_phantom, generate_phantom
from .grid import GRID_MAX_COLS, GRID_MIN_TILE, GRID_PAD, GRID_TITLE_H, grid_sample, phantom_grid_classes, write_image_grid
from .spec import (CLASS_DIRS, DENSE_FRACTION, DENSITY_PREVALENCE, FINDINGS, MANIFEST_COLUMNS, SPLITS, TABLE_COLUMNS,
                   PhantomSpec, PhantomSpecError)
from .write import write_phantom_dataset

__all__ = [
    "CLASS_DIRS", "DENSE_FRACTION", "DENSITY_PREVALENCE", "FINDINGS", "GRID_MAX_COLS", "GRID_MIN_TILE", "GRID_PAD",
    "GRID_TITLE_H", "MANIFEST_COLUMNS", "SPLITS", "TABLE_COLUMNS", "PhantomSpec", "PhantomSpecError",
    "draw_phantom", "generate_phantom", "grid_sample", "phantom_grid_classes", "write_image_grid", "write_phantom_dataset",
]
