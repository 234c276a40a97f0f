"""A MedMNIST-style ``.npz`` (``{split}_images``, ``{split}_labels``), checked array by array.

Every array is checked before it becomes data, so that a hostile or broken file gets one message naming
the array, never a numpy or pandas traceback: a truncated zip, arrays of Python objects, labels that do not
count the images, an empty split, one-hot labels in one split only, NaN or infinite pixels. Each split is
scaled by its own dtype (uint8 by 255, uint16 by 65535, floats in [0, 1] kept, floats in [0, 255] by 255),
made grey and resized on its own, so splits of different sizes or types can be mixed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from privmed.config import DataConfig
from privmed.errors import MISSING_COLUMN, NON_FINITE_PIXELS, NPZ_BAD_ARRAY, NPZ_PIXEL_RANGE, NPZ_UNREADABLE, PrivmedError

from .images import resize

#: sizes of a trailing axis read as colour channels (grey + alpha, RGB, RGBA) and averaged to grey
COLOUR_CHANNELS = (2, 3, 4)
#: the range integer images are read in, by dtype: the type's own range for 8 and 16 bits
INTEGER_RANGES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, RuntimeError)


def read_npz(root: Path, splits: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``split -> (images, labels)`` of the splits the file has; refuses an unreadable file or array."""
    try:
        with np.load(root) as npz:
            keys = sorted(npz.keys())
            parts = [s for s in splits if f"{s}_images" in keys]
            if not parts:
                raise PrivmedError(f"'{root}' has no '<split>_images' arrays (keys: {keys}); "
                                   f"expected the MedMNIST layout train_images/train_labels/...")
            for split in parts:
                if f"{split}_labels" not in keys:
                    raise PrivmedError(MISSING_COLUMN.format(path=root, column=f"{split}_labels", columns=keys))
            return {split: (_array(npz, root, f"{split}_images", split), _array(npz, root, f"{split}_labels", split))
                    for split in parts}
    except PrivmedError:
        raise
    except _READ_ERRORS as err:
        raise PrivmedError(NPZ_UNREADABLE.format(path=root, reason=f"{type(err).__name__}: {err}")) from None


def _array(npz, root: Path, key: str, split: str) -> np.ndarray:
    try:
        array = npz[key]
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise
        raise PrivmedError(NPZ_BAD_ARRAY.format(path=root, key=key, split=split,
                                                problem="holds Python objects (dtype object), not numbers")) from None
    if array.dtype.kind not in "buif":
        raise PrivmedError(NPZ_BAD_ARRAY.format(path=root, key=key, split=split,
                                                problem=f"holds {array.dtype} values, not numbers"))
    if array.ndim == 0 or len(array) == 0:
        raise PrivmedError(NPZ_BAD_ARRAY.format(path=root, key=key, split=split,
                                                problem=f"has shape {array.shape}: the split has no images; remove "
                                                        f"the split's arrays or add images"))
    return array


def npz_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray, config: DataConfig, *,
              float_max: float) -> tuple[np.ndarray, pd.DataFrame]:
    """One split's images (float32 in [0, 1], resized) and its table (``label`` or ``label_0``, ``label_1``, ...);
    ``float_max``: the largest value of the file's float images (above 1: they are all read in [0, 255])."""
    if len(labels) != len(images):
        raise PrivmedError(NPZ_BAD_ARRAY.format(path=root, key=f"{split}_labels", split=split,
                                                problem=f"holds {len(labels)} labels for {len(images)} images"))
    if images.ndim < 2 or images.size == 0:
        raise PrivmedError(NPZ_BAD_ARRAY.format(path=root, key=f"{split}_images", split=split,
                                                problem=f"holds images of shape {images.shape[1:]}, with no pixels"))
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] == 0 or not np.isfinite(labels.astype(np.float64)).all():
        raise PrivmedError(NPZ_BAD_ARRAY.format(path=root, key=f"{split}_labels", split=split,
                                                problem="holds no labels, or NaN or infinite ones"))
    table = pd.DataFrame({"sample_id": [f"{split}_{i:05d}" for i in range(len(images))], "split": split,
                          "patient_id": np.nan})
    for j in range(labels.shape[1]):
        table[f"label_{j}" if labels.shape[1] > 1 else "label"] = labels[:, j]
    raw = _scaled(root, f"{split}_images", images, float_max)
    if raw.ndim == config.spatial_dims + 2 and raw.shape[-1] in COLOUR_CHANNELS:  # average the colour away
        raw = raw.mean(-1)
    if raw.ndim != config.spatial_dims + 1:
        raise PrivmedError(f"'{root}' holds images of shape {raw.shape[1:]}, not {config.spatial_dims}D; "
                           f"set data.spatial_dims (--spatial-dims) to match.")
    return np.stack([resize(a, size=config.image_size) for a in raw]), table


def _scaled(root: Path, key: str, images: np.ndarray, float_max: float) -> np.ndarray:
    """Images as float32 in [0, 1], scaled by their dtype's range (never by what the values happen to be)."""
    finite = np.isfinite(images) if images.dtype.kind == "f" else np.ones(images.shape, dtype=bool)
    if not finite.all():
        bad = int((~finite).reshape(len(images), -1).any(1).argmax())
        raise PrivmedError(NON_FINITE_PIXELS.format(what=f"'{root}': {key}[{bad}]", n=int((~finite).sum()),
                                                    s="s" if (~finite).sum() > 1 else ""))
    lo, hi = float(images.min()), float(images.max())
    if images.dtype in INTEGER_RANGES or images.dtype.kind == "b":
        return images.astype(np.float32) / INTEGER_RANGES.get(images.dtype, 1.0)
    if images.dtype.kind in "iu" and lo >= 0 and hi <= 255:  # 8-bit values in a wider integer type
        return images.astype(np.float32) / 255.0
    if images.dtype.kind == "f" and lo >= 0 and max(hi, float_max) <= 255:
        return (images / 255.0 if float_max > 1 else images).astype(np.float32)
    raise PrivmedError(NPZ_PIXEL_RANGE.format(path=root, key=key, dtype=images.dtype, lo=lo, hi=hi))
