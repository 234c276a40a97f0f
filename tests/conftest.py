"""Shared fixtures: tiny data sets written to disk, and the path of ../shared/data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
# frozen features are cached on disk; tests keep theirs out of the user's cache (child processes inherit this)
os.environ["PRIVMED_CACHE"] = tempfile.mkdtemp(prefix="privmed-test-cache-")
# records are sealed under a key of the tests' own (privmed/seal.py), never the user's
os.environ["PRIVMED_SEAL_KEY"] = os.path.join(tempfile.mkdtemp(prefix="privmed-test-seal-"), "seal.key")

SHARED_DATA = Path(os.environ.get("PRIVMED_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
CBIS = SHARED_DATA / "cbis-ddsm-masses"


def requires_cbis():
    """Mark a test as needing the CBIS-DDSM mass patches of ../shared/data, and skip it (with the reason) without them."""
    skip = pytest.mark.skipif(not (CBIS / "metadata.csv").is_file(),
                              reason=f"CBIS-DDSM mass patches not found at {CBIS} (set PRIVMED_SHARED_DATA)")
    return lambda test: pytest.mark.shared_data(skip(test))


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small phantom data set on disk: images/<split>/<class>/*.png + metadata.csv, 32 px."""
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(root, PhantomSpec(n_samples=240, image_size=32, seed=3))
    return root


@pytest.fixture(scope="session")
def patients_root(tmp_path_factory) -> Path:
    """A phantom whose patients have up to 3 images each."""
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    root = tmp_path_factory.mktemp("patients")
    write_phantom_dataset(root, PhantomSpec(n_samples=120, image_size=32, seed=4, images_per_patient=3))
    return root
