"""The package metadata builds without setuptools deprecation warnings."""

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_has_no_deprecated_fields(monkeypatch):
    setuptools = pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip("SPDX license expressions need setuptools >= 77 (the build requires it)")
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert not [w for w in caught if "deprecated" in str(w.message).lower()], [str(w.message)[:200] for w in caught]
    assert dist.metadata.license_expression == "Apache-2.0"
