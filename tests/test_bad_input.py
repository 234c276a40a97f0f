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
from privmed.study.state import STATUS, STUDY_FILE

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


@pytest.mark.slow
def test_a_failed_runs_error_reaches_the_report_by_kind_never_its_patient_ids(noiseless_study, tmp_path):
    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)
    run = noiseless_study / "runs" / "dp_sgd__epsinf__seed0"
    (out / "runs" / run.name).symlink_to(run, target_is_directory=True)
    raw = copy.deepcopy(NOISELESS)
    raw["strategies"] = {"dp_sgd": {}, "other": {"training": {"lr": 0.05}}}
    raw["description"] = "<script>alert('study')</script> & <b>bold</b>"
    rundir.write_yaml(out / STUDY_FILE, raw)
    error = PATIENT_OVERLAP.format(patients="P_00009, P_00417")
    rundir.write_json(out / STATUS, {"other__epsinf__seed0": {"status": "failed", "seconds": 1.0, "error": error}})
    html, md = (p.read_text() for p in write_report(out))
    for text in (html, md):
        assert "P_00009" not in text and "P_00417" not in text
        assert "patient overlap" in text
        assert "<script>" not in text and "<b>" not in text  # item 11: user text is shown, never rendered
    assert "&lt;script&gt;alert('study')&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in md


def test_a_failed_runs_error_reaches_status_and_results_by_kind_and_the_report_names_the_data_not_its_path(
        tmp_path):
    """Once the error's first line went to status.json and results.csv, and the data's absolute path to the
    report; the full text stays in failed/<run>.txt."""
    from privmed.study.state import CellOutcome, record
    from privmed.study.results import collect

    out, data = tmp_path / "study", tmp_path / "hospital" / "private_cbis"
    raw = {**copy.deepcopy(NOISELESS), "base": {**copy.deepcopy(NOISELESS["base"]), "data": {"path": str(data),
                                                                                             "image_size": 32}}}
    out.mkdir()
    rundir.write_yaml(out / STUDY_FILE, raw)
    study = study_from_dict(raw)
    run_id = study.cells(out)[0].run_id
    error = PATIENT_OVERLAP.format(patients="P_00009, P_00417")
    record(out, CellOutcome(run_id, "failed", 1.0, error))
    assert rundir.read_json(out / STATUS)[run_id]["error"] == "patient overlap"
    assert (out / "failed" / f"{run_id}.txt").read_text() == error + "\n"
    collect(study, out)
    assert list(pd.read_csv(out / "results.csv")["error"]) == ["patient overlap"]
    assert "P_00009" not in (out / "results.csv").read_text()
    html, md = (p.read_text() for p in write_report(out))
    for text in (html, md):
        assert "P_00009" not in text and str(data) not in text and str(tmp_path) not in text
        assert "Data: private_cbis at 32 px" in text
    assert error_kind("patient overlap") == "patient overlap"  # a kind (an older status.json may hold text) stays
    assert error_kind("crash (FileNotFoundError)") == "crash (FileNotFoundError)"


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
    assert table[["positive_rate_ci_low", "positive_rate_ci_high"]].isna().all().all()  # n follows from its width
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- item 8: messages, not tracebacks


@pytest.fixture(scope="module")
def finished_run(phantom_root, tmp_path_factory) -> Path:
    """One quickly trained run (to copy before breaking it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main([str(a) for a in ("train", "--data", phantom_root, "--out", run, *FAST)]) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("split", ["ABS", "../../outside", "test/../x", "a b", ""])
def test_evaluate_split_is_a_plain_name_never_a_path(finished_run, phantom_root, tmp_path, capsys, split):
    """Once ``--split /abs/path`` wrote metrics and predictions (test patients' scores) to that path."""
    from privmed.errors import SPLIT_NOT_A_NAME

    split = str(tmp_path / "elsewhere") if split == "ABS" else split
    before = sorted(p.relative_to(finished_run) for p in finished_run.rglob("*"))
    code, _, err = run_cli(capsys, "evaluate", finished_run, "--data", phantom_root, "--split", split,
                           "--bootstrap", 100)
    assert_refused(code, err, SPLIT_NOT_A_NAME.format(split=split), tmp_path / "elsewhere")
    assert sorted(p.relative_to(finished_run) for p in finished_run.rglob("*")) == before
    with pytest.raises(PrivmedError, match="plain name"):
        study_from_dict({**copy.deepcopy(NOISELESS), "external": [{"name": "x", "path": "d", "split": "/tmp/x"}]})


def test_evaluate_with_a_truncated_best_checkpoint_says_so(run_copy, phantom_root, capsys):
    truncate(run_copy / rundir.CHECKPOINTS / rundir.BEST)
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "is truncated or not a privmed checkpoint", run_copy / "evaluations")
    assert "Train the run again" in err


def test_evaluate_with_a_malformed_config_says_so(run_copy, phantom_root, capsys):
    (run_copy / rundir.CONFIG).write_text("data: {path: [unclosed\n")
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "is not the record privmed sealed", run_copy / "evaluations")  # an edited sealed run
    (run_copy / "seals.json").unlink()  # a run from before keyed seals: the file itself is read, and found malformed
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "is not a readable run configuration", run_copy / "evaluations")
    (run_copy / rundir.CONFIG).write_text("just a string\n")
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "a str, not a mapping", run_copy / "evaluations")


def test_resume_from_a_truncated_last_checkpoint_says_so(run_copy, phantom_root, capsys):
    truncate(run_copy / rundir.CHECKPOINTS / rundir.LAST)
    before = sorted(p.name for p in run_copy.rglob("*"))
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", run_copy, *FAST, "--resume")
    assert_refused(code, err, "is truncated or not a privmed checkpoint")
    assert sorted(p.name for p in run_copy.rglob("*")) == before


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "compare", "audit", "audit-synthetic", "synth evaluate"])
def test_too_few_bootstrap_resamples_are_refused(finished_run, phantom_root, tmp_path, capsys, command):
    target = [finished_run] * (2 if command == "compare" else 1)
    if command in ("audit-synthetic", "synth evaluate"):
        target = [phantom_root / "images" / "train"]
    out = ["--out", tmp_path / "quality"] if command == "synth evaluate" else []
    code, _, err = run_cli(capsys, *command.split(), *target, "--data", phantom_root, *out, "--bootstrap", 0)
    assert_refused(code, err, "--bootstrap 0: a 95% confidence interval needs at least 40 resamples",
                   tmp_path / "quality")


def test_an_image_size_too_large_for_memory_is_refused_at_once(phantom_root, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "x", *FAST,
                           "--image-size", 10000)
    assert_refused(code, err, "data.image_size = 10000: must be between 16 and 1024 for 2D images", tmp_path / "x")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder nobody can write to")
def test_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import privmed.data.sources

    def never(*args, **kwargs):
        raise AssertionError("the data was read before --out was checked")

    monkeypatch.setattr(privmed.data.sources, "load_dataset", never)
    code, _, err = run_cli(capsys, "train", "--out", "/proc/privmed_out", *FAST)
    assert_refused(code, err, "cannot write to '/proc/privmed_out'")
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "file" / "run", *FAST)
    assert_refused(code, err, f"'{tmp_path / 'file'}' is a file, not a folder")
    code, _, err = run_cli(capsys, "synth", "sample", tmp_path, "--out", "/proc/privmed_out")
    assert_refused(code, err, "cannot write to '/proc/privmed_out'")


# --------------------------------------------------------------------------- item 9: quiet acceptances


def test_an_out_folder_holding_other_files_is_refused(phantom_root, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", busy, *FAST)
    assert_refused(code, err, f"'{busy}' is not an empty folder")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def test_a_batch_larger_than_the_training_split_is_refused(phantom_root, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "x", *FAST,
                           "--batch-size", 100000)
    assert_refused(code, err, "--batch-size 100000 is larger than the", tmp_path / "x")


def test_an_unreachable_epsilon_is_found_before_the_model_is_built(phantom_root, tmp_path, capsys, monkeypatch):
    import privmed.training.trainer

    def never(*args, **kwargs):
        raise AssertionError("training started although epsilon cannot be reached")

    monkeypatch.setattr(privmed.training.trainer, "train", never)
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "x", *FAST,
                           "--epsilon", 0.001, "--epochs", 50)
    assert_refused(code, err, "epsilon=0.001 cannot be reached by this schedule", tmp_path / "x")


def test_phantom_grid_in_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    grid = tmp_path / "new" / "dir" / "x.png"
    code, _, err = run_cli(capsys, "phantom", "--grid", grid, "--n", 60, "--image-size", 32)
    assert_refused(code, err, f"the folder '{grid.parent}' of --grid", tmp_path / "new")


def test_synth_evaluate_of_a_missing_folder_names_it(phantom_root, tmp_path, capsys):
    code, _, err = run_cli(capsys, "synth", "evaluate", tmp_path / "missing", "--data", phantom_root)
    assert_refused(code, err, f"synthetic image folder or generator '{tmp_path / 'missing'}' does not exist")


# --------------------------------------------------------------------------- item 10: a message on its own line


@pytest.mark.slow
def test_an_error_after_a_progress_bar_starts_its_own_line(phantom_root, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("TQDM_DISABLE", None)
    code = ("import sys\nfrom privmed import progress\nfrom privmed.cli import main\n"
            "progress.QUIET_SECONDS = 0  # progress lines even for a step this fast\nsys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "train", "--data", str(phantom_root), "--out",
                             str(tmp_path / "x"), *map(str, FAST), "--batch-size", "100000"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "reading images" in result.stderr
    assert any(line.startswith("privmed: error: --batch-size 100000") for line in result.stderr.split("\n"))


# --------------------------------------------------------------------------- item 11: no raw HTML in report.md


def test_markdown_shows_html_from_user_names_as_text(tmp_path):
    from privmed.report.document import Bullets, Details, Heading, Paragraph, Table, to_markdown

    evil = "<img src=x onerror=alert(1)>"
    blocks = [Heading(evil), Paragraph(evil, "warning"), Bullets((evil,)),
              Table(pd.DataFrame({evil: [evil + "|\nnext"]}), evil), Details(evil, (Paragraph(evil),))]
    md = to_markdown(evil, blocks, tmp_path / "files")
    assert "<img" not in md and md.count("&lt;img src=x onerror=alert(1)&gt;") == 9
    assert "| &lt;img src=x onerror=alert(1)&gt;\\| next |" in md  # one line, the bar kept as text


def test_evaluate_refuses_a_run_whose_privacy_ledger_was_edited(run_copy, phantom_root, capsys):
    assert (run_copy / rundir.LEDGER_SEAL).is_file(), "privmed train seals the ledger it wrote"
    code, _, _ = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert code == 0
    ledger = run_copy / rundir.PRIVACY
    ledger.write_text(ledger.read_text().replace('"private": false', '"private": true'))
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "is not the record privmed sealed")  # the keyed seal (tests/test_seal.py)
    rundir.seal_ledger(run_copy)  # re-sealing the edited ledger beside it: the checkpoint still holds the digest
    (run_copy / "seals.json").unlink()  # without keyed seals, as runs written before them
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "is not the privacy ledger training wrote")


# --------------------------------------------------------------------------- the table of docs/bad-input.md

#: ``privmed train`` options refused with one message before anything is written (docs/bad-input.md, "train")
REFUSED_TRAIN_OPTIONS = [
    (["--image-size", "8"], "data.image_size = 8: must be between 16 and 1024"),
    (["--image-size", "300", "--spatial-dims", "3"], "must be between 16 and 256 for 3D images"),
    (["--epochs", "0"], "training.epochs = 0: must be >= 1"),
    (["--batch-size", "0"], "training.batch_size = 0: must be >= 1"),
    (["--physical-batch-size", "0"], "training.physical_batch_size = 0: must be >= 1"),
    (["--lr", "0"], "training.lr = 0.0: must be > 0"),
    (["--lr", "nan"], "training.lr = nan: must be > 0"),
    (["--bootstrap", "50"], "training.bootstrap_resamples = 50: must be >= 100"),
    (["--clip-norm", "0"], "privacy.clip_norm = 0.0: must be > 0"),
    (["--clip-norm", "inf", "--epsilon", "1"], "an infinite clip norm needs noise_multiplier 0"),
    (["--epsilon", "1", "--noise-multiplier", "1"], "give either epsilon or noise_multiplier, not both"),
    (["--noise-multiplier", "-1"], "privacy.noise_multiplier = -1.0: must be a finite number >= 0"),
    (["--delta", "0"], "privacy.delta = 0.0: must be a number in (0, 1)"),
    (["--delta", "1"], "privacy.delta = 1.0: must be a number in (0, 1)"),
    (["--synthetic-public"], "synthetic.public = True: needs the folder it declares public"),
    (["--pretrain-epochs", "0"], "synthetic.pretrain_epochs = 0: must be >= 1"),
    (["--pretrain-lr", "0"], "synthetic.pretrain_lr = 0.0: must be > 0"),
    (["--synthetic", "somewhere", "--synthetic-use", "only", "--epsilon", "1"], "DP-SGD has nothing to protect"),
    (["--model", "no_such_model"], "no_such_model"),
    (["--spatial-dims", "3"], "the built-in phantom is 2D"),
    (["--config", "/no/such/run.yaml"], "config file '/no/such/run.yaml' does not exist"),
    (["--device", "banana"], "--device banana: not a device name"),
    (["--device", "cuda:99"], "--device cuda:99: this machine has"),
]


@pytest.mark.parametrize("args, pattern", REFUSED_TRAIN_OPTIONS, ids=[" ".join(a) for a, _ in REFUSED_TRAIN_OPTIONS])
def test_refused_train_options(tmp_path, capsys, args, pattern):
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "x", *FAST, *args)
    assert_refused(code, err, pattern, tmp_path / "x")


#: ``--config`` files refused (docs/bad-input.md, "configuration files")
REFUSED_CONFIG_FILES = [
    ("data: {path: [unclosed\n", "is not valid YAML"),
    ("- a\n- list\n", "must hold a mapping of sections, got list"),
    ("bogus: 1\n", "unknown top-level key(s) ['bogus']"),
    ("training: [1, 2]\n", "config section 'training' must be a mapping"),
    ("training: {epochs: 1.5}\n", "training.epochs = 1.5: not an integer"),
    ("training: {augment: maybe}\n", "training.augment = 'maybe': not a boolean"),
    ("privacy: {epsilon: lots}\n", "privacy.epsilon = 'lots'"),
    ("model: {norm: layer}\n", "model.norm = 'layer': use 'group' (DP-safe) or 'batch'"),
    ("privacy: {accountant: gdp}\n", "privacy.accountant = 'gdp': use 'prv' or 'rdp'"),
    ("data: {val_fraction: 0.6, test_fraction: 0.5}\n", "each in (0, 1) and their sum below 1"),
    ("data: {phantom_samples: 10}\n", "data.phantom_samples = 10: must be >= 100"),
]


@pytest.mark.parametrize("text, pattern", REFUSED_CONFIG_FILES, ids=[p for _, p in REFUSED_CONFIG_FILES])
def test_refused_config_files(tmp_path, capsys, text, pattern):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, _, err = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "x")
    assert_refused(code, err, pattern, tmp_path / "x")


def test_a_config_file_that_is_not_utf8_is_refused(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"training: {epochs: 1}  # caf\xe9\n")
    code, _, err = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "x")
    assert_refused(code, err, "is not UTF-8 text", tmp_path / "x")


#: data refused by ``load_dataset`` (docs/bad-input.md, "data"): (edit of the phantom's manifest, message)
REFUSED_MANIFESTS = [
    (lambda t: t.assign(label=t["label"].map({0: "benign", 1: "cancer"})), "say which one is positive with --positive-class"),
    (lambda t: t.assign(label=t["label"].astype(float).where(t.index > 0)), "has 1 empty values"),
    (lambda t: t[t["split"] != "val"], "the data has no 'val' split"),
    (lambda t: pd.concat([t, t.iloc[:1].assign(path="images/none.png", split="train")]), "(1 missing, first)"),
]


@pytest.mark.parametrize("edit, pattern", REFUSED_MANIFESTS, ids=[p for _, p in REFUSED_MANIFESTS])
def test_refused_manifests(own_manifest, tmp_path, capsys, edit, pattern):
    code, _, err = run_cli(capsys, "train", "--data", own_manifest(edit), "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, pattern, tmp_path / "x")


@pytest.mark.parametrize("name, content, pattern", [
    ("notes.txt", b"hello", "cannot tell what"),
    ("broken.csv", b'path,label\n"unclosed,1\n', "is not a readable CSV"),
    ("empty.csv", b"", "is not a readable CSV"),
    ("arrays.npz", None, "has no '<split>_images' arrays"),
])
def test_refused_data_files(tmp_path, capsys, name, content, pattern):
    path = tmp_path / name
    if content is None:
        np.savez(path, something=np.zeros(3))
    else:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "train", "--data", path, "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, pattern, tmp_path / "x")


@pytest.mark.slow
def test_evaluate_a_split_the_data_does_not_have(finished_run, phantom_root, capsys):
    code, _, err = run_cli(capsys, "evaluate", finished_run, "--data", phantom_root, "--split", "holdout",
                           "--bootstrap", 100)
    assert_refused(code, err, "has no samples in split 'holdout'")
    assert not any(finished_run.rglob("holdout"))


def test_a_study_file_that_does_not_exist_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "study", tmp_path / "none.yaml", "--out", tmp_path / "out")
    assert_refused(code, err, "does not exist", tmp_path / "out")


def test_the_bad_input_table_names_tests_that_exist():
    """docs/bad-input.md: at least 70 rows, each naming a test function (and parameter) that exists."""
    import re

    root = Path(__file__).resolve().parents[1]
    table = (root / "docs" / "bad-input.md").read_text()
    rows = re.findall(r"^\| \d+ \|.*$", table, flags=re.MULTILINE)
    named = [hit for row in rows for hit in re.findall(r"`(tests/test_\w+\.py)::(test_\w+)(\[[^`]*\])?`", row)]
    assert len(rows) >= 70 and len(named) == len(rows)
    for path, name, parameter in named:
        assert re.search(rf"^def {name}\(", (root / path).read_text(), flags=re.MULTILINE), f"{path}::{name}"
    ids = {" ".join(a) for a, _ in REFUSED_TRAIN_OPTIONS} | {p for _, p in REFUSED_CONFIG_FILES} | {
        p for _, p in REFUSED_MANIFESTS}
    for _, name, parameter in named:
        if name in ("test_refused_train_options", "test_refused_config_files", "test_refused_manifests"):
            assert parameter[1:-1] in ids, parameter


@pytest.mark.parametrize("workers", [0, -2])
def test_a_study_with_no_workers_is_refused(tmp_path, capsys, workers):
    study = tmp_path / "study.yaml"
    rundir.write_yaml(study, NOISELESS)
    code, _, err = run_cli(capsys, "study", study, "--out", tmp_path / "out", "--workers", workers)
    assert_refused(code, err, f"--workers {workers}: give at least 1 worker process", tmp_path / "out")


def test_audit_synthetic_of_a_missing_folder_names_it(phantom_root, tmp_path, capsys):
    code, _, err = run_cli(capsys, "audit-synthetic", tmp_path / "missing", "--data", phantom_root)
    assert_refused(code, err, f"synthetic image folder or generator '{tmp_path / 'missing'}' does not exist")


def test_synth_train_on_a_device_this_machine_lacks_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "synth", "train", "--out", tmp_path / "g", "--device", "cuda:99")
    assert_refused(code, err, "--device cuda:99: this machine has", tmp_path / "g")


@pytest.mark.slow
def test_a_cut_short_status_json_is_refused_by_report(noiseless_study, tmp_path, capsys):
    import shutil

    study = Path(shutil.copytree(noiseless_study, tmp_path / "study", symlinks=True))
    (study / STATUS).write_text('{"dp_sgd__epsinf__seed0": {"status": "fin')
    code, _, err = run_cli(capsys, "report", study)
    assert_refused(code, err, f"'{study / STATUS}' is not valid JSON")


def test_evaluate_a_run_whose_metrics_json_was_cut_short(run_copy, phantom_root, capsys):
    metrics = run_copy / rundir.METRICS
    metrics.write_text(metrics.read_text()[:50])
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "is not the record privmed sealed", run_copy / "evaluations")  # an edited sealed run
    (run_copy / "seals.json").unlink()  # a run from before keyed seals: the file itself is read, and found cut short
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "is not valid JSON", run_copy / "evaluations")


def test_phantom_overwrites_its_own_grid_file_in_an_existing_folder(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    for _ in range(2):  # a grid is one file: writing it again is allowed, only a missing folder is refused
        code, out, err = run_cli(capsys, "phantom", "--grid", grid, "--n", 60, "--image-size", 32)
        assert code == 0 and grid.is_file(), err
