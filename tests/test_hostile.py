"""Issue 34, the hostile hour: broken npz files, out-of-range numbers, values found too late, `privmed check`.

Every refusal is one ``privmed: error:`` line from ``main()`` in-process, exit status 2, no traceback, nothing
written (each case is a row of docs/bad-input.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from privmed.config import DataConfig
from privmed.data.sources import load_dataset

from test_bad_input import assert_refused, run_cli

RNG = np.random.default_rng(34)


def _images(n: int, side: int = 28, dtype=np.uint8) -> np.ndarray:
    return RNG.integers(0, 255, (n, side, side)).astype(dtype)


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) % 2).reshape(-1, 1)


def _npz_arrays(**changes) -> dict[str, np.ndarray]:
    arrays = {"train_images": _images(60), "train_labels": _labels(60), "val_images": _images(20),
              "val_labels": _labels(20), "test_images": _images(20), "test_labels": _labels(20)}
    return {**arrays, **changes}


def _with_nan(images: np.ndarray) -> np.ndarray:
    out = images.astype(np.float32) / 255
    out[3, 4, 5] = np.nan
    return out


REFUSED_NPZ = [
    ("object arrays", {"train_images": np.array([np.zeros((28, 28)), None], dtype=object)},
     "'train_images' holds Python objects (dtype object), not numbers"),
    ("labels do not count the images", {"train_labels": _labels(50)}, "'train_labels' holds 50 labels for 60 images"),
    ("an empty split", {"val_images": _images(0), "val_labels": _labels(0)},
     "'val_images' has shape (0, 28, 28): the split has no images"),
    ("one-hot labels in one split only", {"train_labels": np.eye(2)[np.arange(60) % 2]},
     "'val_labels' has 1 column(s) but 'train_labels' 2 (one-hot labels in one split only?)"),
    ("text labels", {"test_labels": np.array(["a", "b"] * 10)}, "'test_labels' holds <U1 values, not numbers"),
    ("a NaN pixel", {"train_images": _with_nan(_images(60))}, "train_images[3] holds 1 NaN or infinite pixel value"),
    ("float images far above 255", {"train_images": _images(60).astype(np.float32) * 1000},
     "train_images holds float32 values from 0 to 254000"),
]


@pytest.mark.parametrize("changes, pattern", [c[1:] for c in REFUSED_NPZ], ids=[c[0] for c in REFUSED_NPZ])
def test_refused_npz_files(tmp_path, capsys, changes, pattern):
    np.savez(tmp_path / "data.npz", **_npz_arrays(**changes))
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "data.npz", "--out", tmp_path / "run",
                           "--batch-size", 16, "--epochs", 1)
    assert_refused(code, err, pattern, tmp_path / "run")


def test_a_truncated_npz_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "whole.npz", **_npz_arrays())
    (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:700])
    code, _, err = run_cli(capsys, "check", "--data", tmp_path / "cut.npz", "--out", tmp_path / "run")
    assert_refused(code, err, "is not a readable .npz file (BadZipFile", tmp_path / "run")


def test_npz_images_are_scaled_by_their_dtype_and_splits_may_differ_in_size(tmp_path):
    """uint16 by 65535 (not 255: that gave values up to 257), uint8 by 255; a 32 px split beside 28 px ones."""
    train = np.zeros((60, 28, 28), dtype=np.uint16)
    train[:, :14] = 65535
    train[:, 14:] = 32768
    np.savez(tmp_path / "data.npz", **_npz_arrays(train_images=train, val_images=_images(20, side=32)))
    data = load_dataset(DataConfig(path=str(tmp_path / "data.npz"), image_size=28))
    images = data.split("train").images
    assert images.max() == pytest.approx(1.0) and images[:, 20].max() == pytest.approx(0.5, abs=1e-4)
    assert data.split("val").images.shape == (20, 28, 28) and 0 <= data.images.min() and data.images.max() <= 1


def _nifti_folders(root: Path, *, bad: bool) -> Path:
    import nibabel as nib

    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(20):
            image = RNG.random((24, 24)).astype(np.float32)
            if bad and cls == "malignant" and i == 7:
                image[2, 3] = np.inf
            nib.save(nib.Nifti1Image(image, np.eye(4)), root / cls / f"{cls}{i}.nii")
    return root


@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_non_finite_pixel_is_refused_before_the_first_step(tmp_path, capsys, stream):
    """NaN or inf in a NIfTI image: once, it trained and failed with a half-written run folder. Streamed data is
    checked in the pass that already reads every image (the cross-split copy check)."""
    data = _nifti_folders(tmp_path / "data", bad=True)
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "run", "--stream", stream,
                           "--image-size", 16,
                           "--batch-size", 8, "--epochs", 1)
    assert_refused(code, err, "malignant7.nii' holds 1 NaN or infinite pixel value(s)", tmp_path / "run")


# --------------------------------------------------------------------------- numbers out of range

REFUSED_OPTIONS = [
    (["--epochs", "1000000000000"], "training.epochs = 1000000000000: must be at most 10000"),
    (["--seed", "-1"], "training.seed = -1: must be an integer from 0 to 4294967295"),
    (["--delta", "1e-300"], "privacy.delta = 1e-300: is below 1e-12, too small to mean anything"),
    (["--epsilon", "1e400"], "privacy.epsilon = '1e400': overflows to infinity"),
    (["--lr", "inf"], "training.lr = inf: must be a finite number > 0"),
    (["--out", ""], "--out '' names no folder"),
]


@pytest.mark.parametrize("options, pattern", REFUSED_OPTIONS, ids=[" ".join(o) for o, _ in REFUSED_OPTIONS])
def test_refused_out_of_range_options(tmp_path, capsys, monkeypatch, options, pattern):
    monkeypatch.chdir(tmp_path)  # --out '' once meant the default runs/latest here
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", *options)
    assert_refused(code, err, pattern, tmp_path / "run", tmp_path / "runs")



@pytest.mark.parametrize("command", [["synth", "train"], ["synth", "evolve", "--data", "phantom"]])
def test_the_generators_refuse_an_epsilon_that_overflows_as_train_does(tmp_path, capsys, command):
    """``--epsilon 1e400`` once read as infinity in ``synth train`` / ``synth evolve``: a non-private generator."""
    code, _, err = run_cli(capsys, *command, "--out", tmp_path / "gen", "--epsilon", "1e400")
    assert_refused(code, err, "privacy.epsilon = '1e400': overflows to infinity", tmp_path / "gen")

REFUSED_CONFIGS = [
    ("training: {weight_decay: -0.1}\n", "training.weight_decay = -0.1: must be a finite number >= 0"),
    ("training: {seed: 1.0e+23}\n", "training.seed = 99999999999999991611392: must be an integer from 0"),
    ("privacy: {center_noise_multiplier: .inf}\n", "privacy.center_noise_multiplier = inf: must be a finite number"),
    ("training: {num_workers: -3}\n", "training.num_workers = -3: must be >= 0"),
    ("training: {epochs: yes}\n", "training.epochs = True: a bool, not a number"),
    ("training: {momentum: .nan}\n", "training.momentum = nan: must be in [0, 1)"),
    ("privacy: {epsilon: 1e400}\n", "privacy.epsilon = '1e400': overflows to infinity"),
    ("privacy: {epsilon: 1.0e+400}\n", "1.0e+400 is too large for a number and would read as infinity"),
    ("data: {seed: -1}\n", "data.seed = -1: must be an integer from 0"),
    ("out: ''\n", "run.out = '': give the run's folder"),
    ("tune: {lr: [0.1, .inf]}\n", "tune.lr = (0.1, inf): every value must be a finite number > 0"),
    ("data: {label_columns: null}\n", "data.label_columns = None: empty (null); give a value or leave the key out"),
]


@pytest.mark.parametrize("text, pattern", REFUSED_CONFIGS, ids=[p.split(":")[0] for _, p in REFUSED_CONFIGS])
def test_refused_out_of_range_config_values(tmp_path, capsys, text, pattern):
    (tmp_path / "run.yaml").write_text(text)
    argv = ["train", "--config", tmp_path / "run.yaml"] + ([] if text.startswith("out") else ["--out", tmp_path / "x"])
    code, _, err = run_cli(capsys, *argv)
    assert_refused(code, err, pattern, tmp_path / "x")


STUDY = {"name": "s", "base": {"data": {"phantom_samples": 300, "image_size": 32}}, "strategies": {"dp": {}},
         "epsilons": [1], "seeds": [0]}
REFUSED_STUDIES = [
    ({"seeds": ["zero"]}, "study key 'seeds' = 'zero': not a number; give an integer"),
    ({"workers": "two"}, "study key 'workers' = 'two': not a number; give an integer"),
    ({"epsilons": [1, "one"]}, "study key 'epsilons' = 'one': not a number"),
    ({"base": [1, 2]}, "study key 'base' must be a mapping of names to settings, got [1, 2]"),
    ({"models": "scatter_linear"}, "study key 'models' must be a non-empty list, got 'scatter_linear'"),
    ({"epsilons": [2, 2.0000001]}, "2 and 2.0000001 both give run ids 'eps2'"),
    ({"seeds": [0.7, 0.2]}, "study key 'seeds' = 0.7: not an integer"),
    ({"seeds": [3, 3]}, "a seed is given twice"),
    ({"epsilons": ["1e400"]}, "study key 'epsilons' = '1e400': overflows to infinity"),
    ({"generators": ["g"]}, "study key 'generators' must be a mapping"),
]


@pytest.mark.parametrize("changes, pattern", REFUSED_STUDIES, ids=[str(c) for c, _ in REFUSED_STUDIES])
def test_refused_study_values(tmp_path, capsys, changes, pattern):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**STUDY, **changes}))
    code, _, err = run_cli(capsys, "study", tmp_path / "study.yaml", "--out", tmp_path / "out")
    assert_refused(code, err, pattern, tmp_path / "out")


# --------------------------------------------------------------------------- privmed check


def test_check_passes_good_data_prints_what_it_found_and_writes_nothing(phantom_root, tmp_path, capsys):
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli(capsys, "check", "--data", phantom_root, "--out", tmp_path / "run", "--epsilon", 1,
                             "--image-size", 32, "--batch-size", 16, "--epochs", 2)
    assert code == 0, err
    assert "every check of `privmed train` passed; nothing was trained or written" in out
    for split in ("train", "val", "test"):
        assert f"  {split}: " in out and "patients" in out
    assert "unit of privacy: patient" in out and "privacy: epsilon 1 at delta" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_check_refuses_what_train_refuses(tmp_path, capsys):
    bad = _nifti_folders(tmp_path / "bad", bad=True)
    for command in ("check", "train"):
        code, _, err = run_cli(capsys, command, "--data", bad, "--out", tmp_path / "run", "--image-size", 16,
                               "--batch-size", 8)
        assert_refused(code, err, "NaN or infinite pixel", tmp_path / "run")
    good = _nifti_folders(tmp_path / "good", bad=False)
    code, _, err = run_cli(capsys, "check", "--data", good, "--out", tmp_path / "run", "--image-size", 16,
                           "--batch-size", 1000, "--epsilon", 1)
    assert_refused(code, err, "--batch-size 1000 is larger than the", tmp_path / "run")
    code, _, err = run_cli(capsys, "check", "--data", good, "--out", tmp_path / "run", "--image-size", 16,
                           "--batch-size", 8, "--model-weights", tmp_path / "none.pt", "--freeze", "backbone")
    assert_refused(code, err, "weights file '", tmp_path / "run")
    code, _, err = run_cli(capsys, "check", "--data", good, "--out", tmp_path / "run", "--resume")
    assert_refused(code, err, "--resume was given but", tmp_path / "run")


def test_a_blank_in_one_of_several_label_columns_is_refused(tmp_path, capsys):
    """Multi-label manifests: a blank label once crashed in pandas (IntCastingNaNError)."""
    rows = [f"img{i}.png,{i % 2},{'' if i == 5 else (i // 2) % 2},{['train', 'val', 'test'][i % 3]}" for i in range(30)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("path,a,b,split\n" + "\n".join(rows) + "\n")
    code, _, err = run_cli(capsys, "check", "--data", tmp_path / "data", "--label-column", "a", "b",
                           "--out", tmp_path / "run")
    assert_refused(code, err, "label column 'b' of", tmp_path / "run")
    assert "has 1 empty values" in err


def test_a_manifest_row_without_a_path_is_refused(tmp_path, capsys):
    """Found by tests/test_fuzz.py: a blank path crashed in pathlib (TypeError) while looking for DICOM patients."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("path,label\nimg0.png,0\n,1\n")
    code, _, err = run_cli(capsys, "check", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert_refused(code, err, "has 1 row(s) without an image path in column 'path' (first: line 3)", tmp_path / "run")


@pytest.mark.parametrize("command", [["study", "s.yaml"], ["demo"], ["synth", "sample", "gen"], ["synth", "train"],
                                     ["synth", "evaluate", "gen", "--data", "d"], ["check"]], ids=" ".join)
def test_an_empty_out_is_refused_by_every_command(tmp_path, capsys, monkeypatch, command):
    """--out '' is no folder: once `study` and `demo` read it as the working folder, `train` as the default."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *command, "--out", "")
    assert_refused(code, err, "--out '' names no folder")
    assert list(tmp_path.iterdir()) == []
