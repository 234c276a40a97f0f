"""Images decoded from disk when they are used, so that memory is bounded by the batch, not the data set.

A large data set (``data.stream``, ``--stream``: ``on``, or ``auto``, the default, when its decoded
images would take more than :data:`STREAM_ABOVE_BYTES`) is loaded as :class:`LazyImages`: the table is read at once, each
image is read and resized when a batch (or a chunk of a prediction) asks for it. The
trainer's ``TensorDataset`` and Poisson loader take :class:`LazyImageTensor` in place of a
tensor; with ``training.num_workers`` > 0 the loader's worker processes decode in parallel.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .images import read_image

#: ``auto`` streams data whose decoded images would take more than this many bytes.
STREAM_ABOVE_BYTES = 1 << 30


def streams(n_images: int, *, image_size: int, spatial_dims: int, setting: str = "auto") -> bool:
    """Whether data of ``n_images`` images is decoded per batch: ``setting`` is the run's ``data.stream`` (auto, on
    or off; :data:`privmed.config.STREAM_SETTINGS`), auto meaning when the decoded images would not fit
    :data:`STREAM_ABOVE_BYTES`."""
    if setting != "auto":
        return setting == "on"
    return n_images * image_size ** spatial_dims * 4 > STREAM_ABOVE_BYTES


class LazyImages:
    """Image files read on access, like a float32 (N, *spatial) array of images in [0, 1]:
    ``images[i]`` decodes one; ``images[mask]`` (or an index array, or a slice) selects without
    decoding; iteration decodes one image at a time."""

    dtype = np.float32

    def __init__(self, paths, *, size: int, spatial_dims: int) -> None:
        self.paths = np.asarray([str(p) for p in paths], dtype=object)
        self.size = size
        self.spatial_dims = spatial_dims

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *(self.size,) * self.spatial_dims)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return read_image(self.paths[key], size=self.size, spatial_dims=self.spatial_dims)
        return LazyImages(self.paths[key], size=self.size, spatial_dims=self.spatial_dims)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def decode(self) -> np.ndarray:
        """All of them, decoded (for a part small enough to hold)."""
        return np.stack(list(self)) if len(self) else np.zeros(self.shape, dtype=np.float32)

    def tensor(self) -> "LazyImageTensor":
        """As a model batch source: (N, 1, *spatial)."""
        return LazyImageTensor(self)

    def fingerprint(self) -> str:
        """A hash of the files (paths, sizes, modification times) and the size they are read at."""
        digest = hashlib.sha256(f"{self.size}/{self.spatial_dims}".encode())
        for p in self.paths:
            stat = Path(p).stat()
            digest.update(f"{p}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


class LazyImageTensor:
    """What ``TensorDataset``, the Poisson loader and :func:`~privmed.evaluation.predictions.predict` need of
    an image tensor, decoding on access: ``x[i]`` is a (1, *spatial) tensor, ``x[a:b]`` or ``x[indices]`` a
    stacked (n, 1, *spatial) batch."""

    dtype = torch.float32

    def __init__(self, images: LazyImages) -> None:
        self.images = images

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.images), 1, *self.images.shape[1:]))

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.images)

    def element_size(self) -> int:
        return 4

    def fingerprint(self) -> str:
        return self.images.fingerprint()

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return torch.from_numpy(self.images[int(key)]).unsqueeze(0)
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        part = self.images[key]
        return torch.from_numpy(part.decode()).unsqueeze(1)
