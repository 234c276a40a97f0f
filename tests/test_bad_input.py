"""Issue 21: bad inputs refused with one clear message, nothing leaked into a report, nothing half-written.

Each refused kind of input is listed in docs/bad-input.md with the test here (or elsewhere) that checks it.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privmed import rundir
from privmed.cli import main
from privmed.config import PrivacyConfig
from privmed.errors import EPSILON_NOT_A_NUMBER, PATIENT_OVERLAP, PrivmedError, error_kind
from privmed.evaluation.fairness import subgroup_metrics, suppress_complements
from privmed.privacy.accounting import Mechanism
from privmed.privacy.ledger import ZERO_NOISE, PrivacyLedger
from privmed.report import write_report
from privmed.study import run_study, study_from_dict
from privmed.study.runner import STATUS, STUDY_FILE

FAST = ["--image-size", "32", "--model", "resnet9_small", "--epochs", "1", "--batch-size", "32",
        "--bootstrap", "100", "--augment", "false"]
NOISELESS = {
    "name": "noiseless",
    "base": {"data": {"phantom_samples": 300, "image_size": 32}, "privacy": {"noise_multiplier": 0},
             "training": {"epochs": 1, "batch_size": 64, "bootstrap_resamples": 100}},
    "strategies": {"dp_sgd": {}},
    "epsilons": ["inf"],
    "seeds": [0],
}


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code, err, pattern, *nothing_at):
    """One ``privmed: error:`` line holding ``pattern``, no traceback, nothing written at ``nothing_at``."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("privmed: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]
    for path in nothing_at:
        assert not Path(path).exists(), f"{path} was written although the input was refused"


@pytest.fixture(scope="module")
def noiseless_study(tmp_path_factory) -> Path:
    """A finished one-run study trained with noise multiplier 0."""
    out = tmp_path_factory.mktemp("noiseless")
    run_study(study_from_dict(NOISELESS), NOISELESS, out=out, progress=lambda _: None)
    return out


# --------------------------------------------------------------------------- item 2: no patient id in a report


def test_a_failed_runs_error_reaches_the_report_by_kind_never_its_patient_ids(noiseless_study, tmp_path):
    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)
    run = noiseless_study / "runs" / "dp_sgd__epsinf__seed0"
    (out / "runs" / run.name).symlink_to(run, target_is_directory=True)
    raw = copy.deepcopy(NOISELESS)
    raw["strategies"] = {"dp_sgd": {}, "other": {"training": {"lr": 0.05}}}
    rundir.write_yaml(out / STUDY_FILE, raw)
    error = PATIENT_OVERLAP.format(patients="P_00009, P_00417")
    rundir.write_json(out / STATUS, {"other__epsinf__seed0": {"status": "failed", "seconds": 1.0, "error": error}})
    html, md = (p.read_text() for p in write_report(out))
    for text in (html, md):
        assert "P_00009" not in text and "P_00417" not in text
        assert "patient overlap" in text


def test_error_kinds_name_the_template_or_the_crash_and_carry_no_text():
    assert error_kind(PATIENT_OVERLAP.format(patients="P_1")) == "patient overlap"
    assert error_kind("FileNotFoundError: /data/private/P_1.png\nTraceback ...") == "crash (FileNotFoundError)"
    assert error_kind("image /data/private/P_1.png is odd") == "refused input"
    assert error_kind("") == ""


# --------------------------------------------------------------------------- item 3: no count by subtraction


def test_a_suppressed_group_hides_every_groups_counts():
    groups = np.array(["a"] * 16 + ["b"] * 6, dtype=object)
    y = np.array([0, 1] * 11)
    table = subgroup_metrics(y_true=y, scores=np.linspace(0, 1, 22), threshold=0.5, groups=groups, n_resamples=100)
    table = suppress_complements(table, train_sizes=pd.Series({"a": 30, "b": 4}))
    assert table["counts_suppressed"].all()
    assert table[["n", "train_n"]].isna().all().all()  # 16 and 30 would give 6 and 4 from the totals
    assert not math.isnan(table.set_index("group").loc["a", "auroc"])  # the big group's metrics stay


def test_a_group_small_only_in_training_hides_the_counts_too():
    groups = np.array(["a"] * 12 + ["b"] * 12, dtype=object)
    table = subgroup_metrics(y_true=np.array([0, 1] * 12), scores=np.linspace(0, 1, 24), threshold=0.5,
                             groups=groups, n_resamples=100)
    hidden = suppress_complements(table, train_sizes=pd.Series({"a": 30, "b": 4}))
    assert hidden[["n", "train_n"]].isna().all().all()
    shown = suppress_complements(table, train_sizes=pd.Series({"a": 30, "b": 14}))
    assert not shown["counts_suppressed"].any()
    assert shown["n"].tolist() == [12, 12] and shown["train_n"].tolist() == [30, 14]


# --------------------------------------------------------------------------- item 6: noise 0 is not private


def test_a_noiseless_stage_makes_the_ledger_not_private():
    ledger = PrivacyLedger(delta=1e-5, accountant="prv", clip_norm=1.0, n_private=100,
                           mechanisms=[Mechanism("dp_sgd", 0.0, 0.1, 100)])
    record = ledger.to_dict()
    assert not ledger.private and record["private"] is False and record["epsilon"] == "inf"
    assert ZERO_NOISE.format(stage="dp_sgd") in record["non_private_reasons"]
    assert record["summary"].startswith("NOT PRIVATE") and "-DP" not in record["summary"]


def test_train_with_noise_multiplier_0_says_not_private(phantom_root, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "n0", "--noise-multiplier",
                           0, *FAST)
    assert code == 0 and "NOT PRIVATE" in out and "-DP" not in out
    privacy = rundir.read_json(tmp_path / "n0" / rundir.PRIVACY)
    assert privacy["private"] is False and ZERO_NOISE.format(stage="dp_sgd") in privacy["non_private_reasons"]


def test_a_study_with_a_noiseless_run_is_reported_as_not_private(noiseless_study):
    results = pd.read_csv(noiseless_study / "results.csv")
    assert not results["private"].astype(bool).any()
    _, md = write_report(noiseless_study)
    text = md.read_text()
    assert "1 of 1 finished runs are not differentially private" in text and "noise multiplier 0" in text


# --------------------------------------------------------------------------- item 7: non-finite epsilon, delta


@pytest.mark.parametrize("option, value, pattern", [
    ("--epsilon", "nan", EPSILON_NOT_A_NUMBER.format(epsilon=math.nan)),
    ("--delta", "nan", "privacy.delta = nan: must be a number in (0, 1)"),
    ("--delta", "inf", "privacy.delta = inf: must be a number in (0, 1)"),
    ("--noise-multiplier", "nan", "privacy.noise_multiplier = nan: must be a finite number >= 0"),
    ("--noise-multiplier", "inf", "privacy.noise_multiplier = inf: must be a finite number >= 0"),
])
def test_non_finite_privacy_parameters_are_refused(phantom_root, tmp_path, capsys, option, value, pattern):
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "x", *FAST, option, value)
    assert_refused(code, err, pattern, tmp_path / "x")


def test_a_nan_epsilon_in_a_config_is_refused():
    with pytest.raises(PrivmedError, match="is not a number"):
        PrivacyConfig(epsilon=math.nan)


# --------------------------------------------------------------------------- item 5: duplicates in a manifest


def manifest_copy(phantom_root: Path, tmp_path: Path, edit, *, name: str = "manifest.csv") -> Path:
    """A manifest beside the phantom's images (same folder), edited by ``edit(table) -> table``."""
    table = edit(pd.read_csv(phantom_root / "metadata.csv"))
    path = phantom_root / name
    table.to_csv(path, index=False)
    return path


@pytest.fixture
def own_manifest(phantom_root):
    written = []

    def make(edit, name="manifest_test.csv"):
        written.append(phantom_root / name)
        return manifest_copy(phantom_root, phantom_root, edit, name=name)

    yield make
    for path in written:
        path.unlink(missing_ok=True)


def test_a_manifest_listing_an_image_twice_is_refused(own_manifest, tmp_path, capsys):
    manifest = own_manifest(lambda t: pd.concat([t, t.iloc[:20]], ignore_index=True))
    code, _, err = run_cli(capsys, "train", "--data", manifest, "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, "lists 20 image(s) more than once", tmp_path / "x")


def test_the_same_image_twice_under_another_spelling_is_refused(own_manifest, tmp_path, capsys):
    def respell(table):
        extra = table.iloc[:3].copy()
        extra["path"] = "./" + extra["path"]
        return pd.concat([table, extra], ignore_index=True)

    code, _, err = run_cli(capsys, "train", "--data", own_manifest(respell), "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, "lists 3 image(s) more than once", tmp_path / "x")


def test_identical_image_content_in_two_splits_is_refused(phantom_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "copied"
    shutil.copytree(phantom_root / "images", root / "images")
    table = pd.read_csv(phantom_root / "metadata.csv").drop(columns="patient_id")
    train_image = table[table["split"] == "train"].iloc[0]
    copy_path = "images/test/copy_of_train.png"
    shutil.copy(root / train_image["path"], root / copy_path)
    table = pd.concat([table, pd.DataFrame([{**train_image.to_dict(), "path": copy_path, "split": "test"}])])
    table.to_csv(root / "metadata.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", root, "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, "1 image(s) of split 'train' are pixel-identical to images of split 'test'",
                   tmp_path / "x")


# --------------------------------------------------------------------------- item 8/9: manifests


def test_a_manifest_listing_images_outside_its_folder_is_refused_unless_allowed(phantom_root, tmp_path, capsys):
    table = pd.read_csv(phantom_root / "metadata.csv")
    table["path"] = [str(phantom_root / p) for p in table["path"]]
    manifest = tmp_path / "elsewhere" / "manifest.csv"
    manifest.parent.mkdir()
    table.to_csv(manifest, index=False)
    code, _, err = run_cli(capsys, "train", "--data", manifest, "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, f"lists {len(table)} image(s) outside its folder", tmp_path / "x")
    code, out, _ = run_cli(capsys, "train", "--data", manifest, "--out", tmp_path / "y", *FAST,
                           "--allow-outside-data-root")
    assert code == 0 and "auroc=" in out


def test_a_manifest_that_is_not_utf8_is_refused(phantom_root, tmp_path, capsys):
    text = (phantom_root / "metadata.csv").read_bytes().replace(b"phantom_p00000", b"phantom_p\xe900000", 1)
    manifest = tmp_path / "latin1.csv"
    manifest.write_bytes(text)
    code, _, err = run_cli(capsys, "train", "--data", manifest, "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, "is not UTF-8 text", tmp_path / "x")


# --------------------------------------------------------------------------- item 4: resized private images


def test_resized_private_images_cannot_be_declared_public(phantom_root, tmp_path, capsys):
    """The phantom's private images (32 px) upscaled to 64 px and mixed into another draw of the phantom."""
    import shutil

    from PIL import Image

    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    other = write_phantom_dataset(tmp_path / "other", PhantomSpec(n_samples=60, image_size=32, seed=11)).parent
    public = tmp_path / "public"
    shutil.copytree(other / "images" / "train", public)
    for k, private in enumerate(sorted((phantom_root / "images" / "train" / "benign").glob("*.png"))[:3]):
        Image.open(private).resize((64, 64), Image.BICUBIC).save(public / "benign" / f"upscaled_{k}.png")
    args = ["train", "--data", phantom_root, "--out", tmp_path / "x", *FAST, "--epsilon", 4, "--synthetic", public,
            "--synthetic-public", "--pretrain-epochs", 1]
    code, _, err = run_cli(capsys, *args)
    assert_refused(code, err, f"3 image(s) in '{public}' are identical or nearly identical", tmp_path / "x")
    assert "benign/upscaled_" in err  # the other draw alone is accepted: tests/test_declared_public.py


def test_near_duplicates_are_found_across_sizes_and_contrast_but_different_images_are_not():
    from privmed.data.duplicates import NEAR_DUPLICATE_DISTANCE, near_duplicates
    from privmed.data.images import resize
    from privmed.data.phantom import PhantomSpec, generate_phantom

    images, _ = generate_phantom(PhantomSpec(n_samples=100, image_size=64, seed=1))
    others, _ = generate_phantom(PhantomSpec(n_samples=100, image_size=64, seed=2))
    altered = np.stack([resize(resize(x, size=40), size=64) * 0.8 + 0.1 for x in images[:5]])
    hits = near_duplicates(altered, images)
    assert sorted((i, j) for i, j, _ in hits) == [(k, k) for k in range(5)]
    assert all(d < NEAR_DUPLICATE_DISTANCE for _, _, d in hits)
    assert near_duplicates(others, images) == []
