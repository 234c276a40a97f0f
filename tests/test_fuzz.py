"""Issue 34: property-based fuzzing of what a user hands privmed (config files, study files, manifests, npz files).

The property, for every input Hypothesis draws: ``main()`` either succeeds (exit 0) or refuses with exit status 2
and exactly one ``privmed: error:`` line, no traceback, and nothing at ``--out``. ``privmed check`` is the command
under fuzz (every check of ``privmed train``, nothing trained); study files go through ``privmed study`` with the
grid's runner replaced by a stub, so only their validation runs. Examples are bounded so the file runs in about a
minute on two cores.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privmed.cli import main
from privmed.config import DataConfig, PrivacyConfig, SyntheticConfig, TrainingConfig, TuneConfig
from privmed.study.config import STUDY_KEYS

#: PRIVMED_FUZZ_EXAMPLES=N (N examples of each, drawn afresh) hunts longer than the fixed examples CI runs
HUNT = int(os.environ.get("PRIVMED_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int):
    return settings(max_examples=HUNT or examples, deadline=None, derandomize=not HUNT, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

#: any YAML scalar or a small list or mapping of them
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.integers(-3, 3),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                    st.sampled_from(["inf", "nan", "1e400", "-1", "0", "yes", "group", "prv", "patient", "sgd", ""]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))
#: keys whose valid values cost time (image side, epochs, data size): drawn from cheap or invalid values only
COSTLY = {"image_size": st.sampled_from([16, 8, 2000, 16.5, "x", True, None]),
          "epochs": st.sampled_from([1, 2, 0, -1, 10**12, 1.5, "yes", True]),
          "pretrain_epochs": st.sampled_from([1, 0, 10**12, "x"]),
          "phantom_samples": st.sampled_from([100, 5, "x"]),
          "bootstrap_resamples": st.sampled_from([100, 5, "x", 10**9]),
          "augment_views": st.sampled_from([1, 0, 2, "x"]),
          "path": st.sampled_from(["/no/such/data", "", 5]),
          "batch_size": st.sampled_from([4, 0, -1, 10**6, "x", 2.5]),
          "physical_batch_size": st.sampled_from([4, 0, "x"]),
          "spatial_dims": st.sampled_from([2, 3, 4, "x"]),
          "device": st.sampled_from(["cpu", "auto", "banana", "cuda:99", 3]),
          "weights": st.sampled_from(["/no/such/weights.pt", 5])}
SECTIONS = {"data": DataConfig, "privacy": PrivacyConfig, "training": TrainingConfig, "synthetic": SyntheticConfig,
            "tune": TuneConfig}


def _section(cls) -> st.SearchStrategy:
    keys = st.one_of(st.sampled_from([f for f in cls.__dataclass_fields__]), st.text(max_size=5))
    return st.dictionaries(keys, VALUES, max_size=3).flatmap(
        lambda d: st.fixed_dictionaries({k: COSTLY.get(k, st.just(v)) for k, v in d.items()}))


CONFIGS = st.one_of(
    st.fixed_dictionaries({}, optional={**{name: _section(cls) for name, cls in SECTIONS.items()},
                                        "model": st.dictionaries(st.sampled_from(["name", "norm", "args", "freeze",
                                                                                  "replace_batchnorm", "zzz"]),
                                                                 VALUES, max_size=2),
                                        "out": SCALARS, "bogus": VALUES}),
    VALUES)


def run(argv) -> tuple[int, str]:
    """``main(argv)`` in-process: its exit status and standard error (stdout swallowed)."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def assert_ok_or_one_clear_error(code: int, err: str, out: Path) -> None:
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.startswith("privmed: error:")]
        assert len(lines) == 1, err
    assert not out.exists(), f"{out} was written (exit {code}): {err}"


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("npz") / "small.npz"
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 16, 16)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


@fuzz(100)
@given(raw=CONFIGS)
def test_fuzzed_config_files(small_npz, raw):
    if isinstance(raw, dict):  # the data is a small file unless the fuzz says otherwise
        raw = {**raw, "data": {"path": str(small_npz), "image_size": 16, **(raw.get("data") or {})}
               if isinstance(raw.get("data", {}), dict) else raw["data"]}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "run.yaml").write_text(yaml.safe_dump(raw))
        out = Path(tmp) / "run"
        code, err = run(["check", "--config", Path(tmp) / "run.yaml", "--out", out])
        assert_ok_or_one_clear_error(code, err, out)


STUDY_VALUES = {"name": st.one_of(st.just("s"), SCALARS), "epsilons": st.one_of(st.just([1, "inf"]), VALUES),
                "seeds": st.one_of(st.just([0, 1]), VALUES),
                "base": st.one_of(st.just({"data": {"image_size": 16}}), VALUES),
                "strategies": st.one_of(st.just({"dp": {}}), VALUES,
                                        st.dictionaries(st.text(max_size=4), VALUES, max_size=2))}


@fuzz(200)
@given(study=st.fixed_dictionaries({k: STUDY_VALUES.get(k, VALUES) for k in ("name", "base", "strategies",
                                                                              "epsilons", "seeds")},
                                   optional={k: VALUES for k in STUDY_KEYS if k not in STUDY_VALUES}))
def test_fuzzed_study_files(study):
    with tempfile.TemporaryDirectory() as tmp, mock.patch("privmed.cli.study._run_and_report", return_value=0):
        (Path(tmp) / "study.yaml").write_text(yaml.safe_dump(study))
        out = Path(tmp) / "out"
        code, err = run(["study", Path(tmp) / "study.yaml", "--out", out])
        assert_ok_or_one_clear_error(code, err, out)


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16)).astype(np.uint8)).save(root / f"img{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


CELLS = st.one_of(st.sampled_from(["", "0", "1", "2", "NA", "nan", "train", "val", "test", "P1", "p1 ", "007"]),
                  st.text(max_size=5))
PATHS = st.one_of(st.sampled_from([f"img{i}.png" for i in range(12)]),
                  st.sampled_from(["", "missing.png", "notes.txt", "../outside.png", "/etc/hostname", "./img0.png"]))
ROWS = st.lists(st.fixed_dictionaries({"path": PATHS, "label": CELLS, "split": CELLS, "patient_id": CELLS}),
                min_size=0, max_size=14)


@fuzz(200)
@given(rows=ROWS, columns=st.lists(st.sampled_from(["path", "label", "split", "patient_id", "age"]), unique=True,
                                   min_size=1, max_size=5))
def test_fuzzed_manifests(png_folder, rows, columns):
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "42") for c in columns])
    with tempfile.TemporaryDirectory() as tmp:
        manifest = png_folder / f"manifest-{Path(tmp).name}.csv"
        manifest.write_text(text.getvalue())
        out = Path(tmp) / "run"
        try:
            code, err = run(["check", "--data", manifest, "--out", out, "--image-size", 16, "--batch-size", 2])
        finally:
            manifest.unlink()
        assert_ok_or_one_clear_error(code, err, out)


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int64, np.float32, np.float64, np.bool_, np.complex64, "<U2"])
ARRAYS = DTYPES.flatmap(lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                         max_side=6)))
NPZ_KEYS = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels")] + ["extra"]


@fuzz(300)
@given(arrays=st.fixed_dictionaries({}, optional={key: ARRAYS for key in NPZ_KEYS}),
       truncate=st.one_of(st.none(), st.integers(0, 400)))
def test_fuzzed_npz_files(arrays, truncate):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, **arrays)
        if truncate is not None:
            path.write_bytes(path.read_bytes()[:truncate])
        out = Path(tmp) / "run"
        code, err = run(["check", "--data", path, "--out", out, "--image-size", 16, "--batch-size", 2])
        assert_ok_or_one_clear_error(code, err, out)
