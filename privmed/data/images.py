"""Reading one image file into a float array in [0, 1], whatever its format.

Readers are registered by file suffix (a dict, not an if/elif ladder). PNG/JPEG/TIFF
go through Pillow, DICOM through pydicom, NIfTI through nibabel. Every failure
becomes a :class:`PrivmedError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from privmed.errors import NON_FINITE_PIXELS, UNREADABLE_IMAGE, PrivmedError

Reader = Callable[[Path], np.ndarray]


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        arr = np.asarray(img.convert("I;16") if img.mode.startswith("I;16") else img.convert("L"))
    return arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0))
    intercept = float(getattr(ds, "RescaleIntercept", 0.0))
    arr = arr * slope + intercept
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() - arr
    return _min_max(arr)


DICOM_SUFFIXES = (".dcm", ".dicom")


def dicom_patient(path: str | Path) -> str | None:
    """The patient a DICOM file belongs to: its PatientID, else its StudyInstanceUID (one study is one
    patient), else None. Reads the header only. Not a DICOM file: None."""
    if image_suffix(path) not in DICOM_SUFFIXES:
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # any decoder error: say which file
        raise PrivmedError(UNREADABLE_IMAGE.format(path=path, reason=f"{type(err).__name__}: {err}")) from None
    patient = str(getattr(ds, "PatientID", "") or "").strip()
    if patient:
        return patient
    study = str(getattr(ds, "StudyInstanceUID", "") or "").strip()
    return f"study:{study}" if study else None


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    arr = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    return _min_max(np.squeeze(arr))


def _min_max(arr: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] by its finite values (a NaN or infinite pixel stays one, for read_image to refuse)."""
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return ((arr - lo) / (hi - lo) if hi > lo else arr - lo).astype(np.float32)


READERS: dict[str, Reader] = {
    ".png": _read_pillow,
    ".jpg": _read_pillow,
    ".jpeg": _read_pillow,
    ".tif": _read_pillow,
    ".tiff": _read_pillow,
    ".bmp": _read_pillow,
    ".dcm": _read_dicom,
    ".dicom": _read_dicom,
    ".nii": _read_nifti,
    ".nii.gz": _read_nifti,
}


def image_suffix(path: str | Path) -> str:
    """The registered suffix of a path ('.nii.gz' counts as one), or '' if none matches."""
    name = str(path).lower()
    return next((s for s in sorted(READERS, key=len, reverse=True) if name.endswith(s)), "")


def is_image_file(path: str | Path) -> bool:
    """True for files privmed can read."""
    return image_suffix(path) != ""


def read_image(path: str | Path, *, size: int, spatial_dims: int = 2) -> np.ndarray:
    """Read ``path`` and resize it to ``size`` along every spatial axis.

    Returns float32 in [0, 1] with shape (size, size) or (size, size, size).
    Raises :class:`PrivmedError` if the file cannot be read or has the wrong number of dimensions.
    """
    p = Path(path)
    reader = READERS.get(image_suffix(p))
    if reader is None:
        raise PrivmedError(UNREADABLE_IMAGE.format(path=p, reason=f"unknown image type (known: {sorted(READERS)})"))
    try:
        arr = reader(p)
    except PrivmedError:
        raise
    except Exception as err:  # any decoder error: say which file, not where in the decoder
        raise PrivmedError(UNREADABLE_IMAGE.format(path=p, reason=f"{type(err).__name__}: {err}")) from None
    arr = np.squeeze(arr)
    bad = int(arr.size - np.isfinite(arr).sum())
    if bad:  # a NaN would reach the model only after training began
        raise PrivmedError(NON_FINITE_PIXELS.format(what=f"image '{p}'", n=bad, s=""))
    if arr.ndim != spatial_dims:
        raise PrivmedError(UNREADABLE_IMAGE.format(
            path=p, reason=f"it has {arr.ndim} dimensions {arr.shape}, but the task is {spatial_dims}D "
                           f"(set data.spatial_dims)"))
    return resize(arr, size=size)


def resize(arr: np.ndarray, *, size: int) -> np.ndarray:
    """Resize a 2D or 3D array to a cube of side ``size`` (area averaging when shrinking)."""
    if all(s == size for s in arr.shape):
        return arr.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    shrinking = all(s >= size for s in arr.shape)
    mode = "area" if shrinking else ("bilinear" if arr.ndim == 2 else "trilinear")
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(t, size=(size,) * arr.ndim, mode=mode, **kwargs)
    return out[0, 0].numpy()
