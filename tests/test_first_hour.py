"""The README's first hour on small crafted data: train on a CBIS-like manifest, evaluate on external class
folders, compare two runs; class names from the folders, and a run's labels mapped to an external set's names."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from privmed import rundir
from privmed.cli import main
from privmed.config import DataConfig
from privmed.data.sources import load_dataset
from privmed.errors import CLASS_NAMES_FROM_FOLDERS, IMAGE_BOOTSTRAP, TARGET_MISMATCH

FAST = ["--image-size", "32", "--model", "resnet9_small", "--epochs", "1", "--batch-size", "16",
        "--bootstrap", "100", "--augment", "false"]


def _image(path, malignant: bool, rng) -> None:
    pixels = rng.integers(0, 80, (32, 32)).astype(np.uint8)
    if malignant:
        pixels[10:22, 10:22] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


def cbis_like(root, *, folders: bool = True, per_class=(("train", 24), ("val", 12), ("test", 12))):
    """``root/metadata.csv`` (path, split, label 0/1, patient_id) over ``images/<split>/<benign|malignant>/``
    (``folders``), else over one flat ``images/`` folder."""
    rng, rows = np.random.default_rng(0), []
    for split, n in per_class:
        for label, name in enumerate(("benign", "malignant")):
            for i in range(n):
                rel = f"images/{split}/{name}/{split}_{name}_{i}.png" if folders else f"images/{split}_{name}_{i}.png"
                _image(root / rel, bool(label), rng)
                rows.append({"path": rel, "split": split, "label": label, "patient_id": f"P{split}{label}{i // 2}"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def class_folders(root, n: int = 12):
    """An external set: ``root/benign/*.png`` and ``root/malignant/*.png``, no patient ids."""
    rng = np.random.default_rng(1)
    for label, name in enumerate(("benign", "malignant")):
        for i in range(n):
            _image(root / name / f"{i}.png", bool(label), rng)
    return root


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_class_names_come_from_folders_that_agree_with_the_labels(tmp_path):
    data = cbis_like(tmp_path / "cbis", per_class=(("train", 4), ("val", 2), ("test", 2)))
    ds = load_dataset(DataConfig(path=str(data), image_size=16))
    assert ds.label_names == ("malignant",)
    assert (ds.table["malignant"] == ds.table["path"].str.contains("/malignant/").astype(int)).all()
    assert ds.notes == (CLASS_NAMES_FROM_FOLDERS.format(manifest=data / "metadata.csv", column="label", zero="benign",
                                                        one="malignant", where="images/*/benign|malignant"),)
    # the user's names win, and say nothing about folders
    told = load_dataset(DataConfig(path=str(data), image_size=16, class_names=("no_mass", "mass")))
    assert told.label_names == ("mass",) and told.notes == ()
    flat = cbis_like(tmp_path / "flat", folders=False, per_class=(("train", 4), ("val", 2), ("test", 2)))
    assert load_dataset(DataConfig(path=str(flat), image_size=16)).label_names == ("label=1",)  # nothing to go by


def test_two_folder_levels_naming_the_classes_differently_are_not_guessed(tmp_path):
    data = cbis_like(tmp_path / "cbis", per_class=(("train", 4), ("val", 2), ("test", 2)))
    table = pd.read_csv(data / "metadata.csv")
    for i, row in table.iterrows():  # a second level that also agrees one-to-one: lesion/<no|yes>/...
        new = f"lesion/{'yes' if row.label else 'no'}/{row.path}"
        (data / new).parent.mkdir(parents=True, exist_ok=True)
        (data / row.path).rename(data / new)
        table.loc[i, "path"] = new
    table.to_csv(data / "metadata.csv", index=False)
    assert load_dataset(DataConfig(path=str(data), image_size=16)).label_names == ("label=1",)


@pytest.mark.slow
def test_readme_train_evaluate_compare_on_an_external_class_folder_set(tmp_path, capsys):
    data, external = cbis_like(tmp_path / "cbis"), class_folders(tmp_path / "external")
    private, plain = tmp_path / "runs" / "eps1", tmp_path / "runs" / "nonprivate"
    code, out, err = run_cli(capsys, "train", "--data", data, "--epsilon", 1, "--out", private, *FAST)
    assert code == 0, err
    assert err.count("named after the folders its images lie in") == 1 and "malignant: auroc=" in out
    assert "named after the folders" in (private / rundir.LOG).read_text()
    assert json.loads((private / rundir.METRICS).read_text())["label_names"] == ["malignant"]
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", plain, *FAST)
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", private, "--data", external, "--bootstrap", 100)
    assert code == 0, err
    written = json.loads((private / "evaluations" / "external" / "test" / rundir.METRICS).read_text())
    assert written["label_names"] == ["malignant"] and "run_label_names" not in written
    # class folders have no patient ids: the CIs resample images, and the summary and metrics.json say so
    assert written["splits"]["test"]["bootstrap_unit"] == "image" and IMAGE_BOOTSTRAP in out
    assert "CIs resample images" in out
    assert json.loads((private / rundir.METRICS).read_text())["splits"]["test"]["bootstrap_unit"] == "patient"
    # the same images listed by a manifest with patient ids, by absolute paths outside its folder
    listed = tmp_path / "listed"
    listed.mkdir()
    files = sorted(external.rglob("*.png"))
    pd.DataFrame({"path": [str(f) for f in files], "label": [int(f.parent.name == "malignant") for f in files],
                  "patient_id": [f"E{i // 2}" for i in range(len(files))]}).to_csv(listed / "manifest.csv", index=False)
    code, _, err = run_cli(capsys, "evaluate", private, "--data", listed, "--bootstrap", 100)
    assert code == 2 and "--allow-outside-data-root" in err and not (private / "evaluations" / "listed").exists()
    code, out, err = run_cli(capsys, "evaluate", private, "--data", listed, "--bootstrap", 100,
                             "--allow-outside-data-root")
    assert code == 0, err
    written = json.loads((private / "evaluations" / "listed" / "test" / rundir.METRICS).read_text())
    assert written["splits"]["test"]["bootstrap_unit"] == "patient" and IMAGE_BOOTSTRAP not in out
    code, out, err = run_cli(capsys, "compare", private, plain, "--data", external, "--bootstrap", 100)
    assert code == 0 and "p=" in out, err
    # a run recorded before its classes were named after their folders (it predicts label=1) on its own data
    old = tmp_path / "runs" / "old"
    shutil.copytree(private, old)
    (old / "seals.json").unlink()  # recorded before keyed seals, too: read as unverified
    metrics = json.loads((old / rundir.METRICS).read_text())
    metrics["label_names"], metrics["thresholds"] = ["label=1"], {"label=1": metrics["thresholds"]["malignant"]}
    (old / rundir.METRICS).write_text(json.dumps(metrics))
    code, _, err = run_cli(capsys, "evaluate", old, "--bootstrap", 100)
    assert code == 0, err
    written = json.loads((old / "evaluations" / "cbis" / "test" / rundir.METRICS).read_text())
    assert written["label_names"] == ["malignant"] and written["run_label_names"] == ["label=1"]


@pytest.mark.slow
def test_evaluate_maps_a_runs_neutral_labels_to_an_external_sets_names(tmp_path, capsys):
    """A run whose data did not name its classes (label=1) is evaluated on class folders by saying which
    class is its positive one: --positive-class NAME or --class-names NAME0,NAME1; the user's name is used."""
    data, external = cbis_like(tmp_path / "flat", folders=False), class_folders(tmp_path / "external")
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", run, *FAST)
    assert code == 0, err
    code, _, err = run_cli(capsys, "evaluate", run, "--data", external, "--bootstrap", 100)
    assert code == 2 and "Traceback" not in err
    assert f"privmed: error: {TARGET_MISMATCH.format(data=['malignant'], run=['label=1'])}" in err
    assert not (run / "evaluations").exists()
    for options in (["--positive-class", "malignant"], ["--class-names", "benign,malignant"]):
        code, out, err = run_cli(capsys, "evaluate", run, "--data", external, "--bootstrap", 100, *options)
        assert code == 0, err
        written = json.loads((run / "evaluations" / "external" / "test" / rundir.METRICS).read_text())
        assert written["label_names"] == ["malignant"] and written["run_label_names"] == ["label=1"]
        assert set(written["thresholds"]) == {"malignant"} and "malignant: auroc=" in out
    code, _, err = run_cli(capsys, "compare", run, run, "--data", external, "--bootstrap", 100,
                           "--positive-class", "malignant")
    assert code == 0, err


def _commands(parser, name="privmed"):
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def test_every_commands_help_shows_its_defaults():
    """Every option that takes a value says its default in --help (flags and required options excepted)."""
    from privmed.cli import build_parser

    missing = []
    for name, parser in _commands(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not action.required:
                text = formatter._expand_help(action) if action.help else ""
                if "default" not in text.lower():
                    missing.append(f"{name} {action.option_strings[-1]}")
    assert not missing, f"options whose help does not say their default: {missing}"


@pytest.mark.parametrize("command,option,default", [
    (["evaluate"], "--split SPLIT", "(default test)"),
    (["audit"], "--bootstrap BOOTSTRAP", "bootstrap resamples for the CIs (default 1000)"),
    (["synth", "train"], "--epochs EPOCHS", "default 100"),
    (["synth", "train"], "--lr-d LR_D", "(default 0.0002)"),
    (["synth", "train"], "--delta DELTA", "default 1/(10 N)"),
    (["synth", "train"], "--clip-norm CLIP_NORM", "(default 1.0)"),
    (["synth", "train"], "--batch-size BATCH_SIZE", "(default 64)"),
    (["synth", "train"], "--seed SEED", "default 0"),
    (["synth", "train"], "--device DEVICE", "(default auto)"),
])
def test_help_text_names_the_default(capsys, command, option, default):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    after = text.split(option + " ", 2)[-1][:200]  # the option's own help, past the usage line
    assert default in after, (option, after)


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"privmed {version('privmed')}"


def test_the_help_shows_gan_defaults_the_generator_config_has():
    from privmed.cli.synth import EVOLVE_SEED, GAN_DEFAULTS
    from privmed.synth.config import EvolutionConfig, GanConfig

    assert GAN_DEFAULTS == {key: getattr(GanConfig, key) for key in GAN_DEFAULTS}
    assert EVOLVE_SEED == EvolutionConfig.seed


SMALL = (("train", 4), ("val", 2), ("test", 2))


def _edited(tmp_path, edit):
    """A small CBIS-like manifest with ``edit(table)`` applied to it."""
    data = cbis_like(tmp_path / "data", per_class=SMALL)
    table = pd.read_csv(data / "metadata.csv", dtype=str)
    edit(table)
    table.to_csv(data / "metadata.csv", index=False)
    return data


def _train_refuses(tmp_path, capsys, data, *pieces):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, *FAST)
    lines = [line for line in err.splitlines() if line.startswith("privmed: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(piece in lines[0] for piece in pieces), lines[0]
    assert not out.exists()


def test_patient_ids_differing_only_by_case_or_spaces_across_splits_are_refused(tmp_path, capsys):
    def alike(table):
        table.loc[table["split"] == "train", "patient_id"] = table["patient_id"].where(table["split"] != "train", "P1")
        table.loc[table.index[table["split"] == "test"][:1], "patient_id"] = "p1 "
    data = _edited(tmp_path, alike)
    _train_refuses(tmp_path, capsys, data, "differ only by case or surrounding spaces", "'P1' (train)", "'p1 ' (test)")


def test_patient_ids_are_strings_007_and_7_are_two_patients(tmp_path):
    def numeric_ids(table):
        table["patient_id"] = [f"{i:03d}" if s == "train" else str(i) for i, s in enumerate(table["split"])]
        table.loc[table["split"] == "train", "patient_id"] = "007"
        table.loc[table.index[table["split"] == "test"], "patient_id"] = "7"
    data = _edited(tmp_path, numeric_ids)
    ds = load_dataset(DataConfig(path=str(data), image_size=16))
    assert set(ds.split("train").patient_ids) == {"007"} and set(ds.split("test").patient_ids) == {"7"}


@pytest.mark.parametrize("value", ["", "NA", "  "])
def test_a_blank_or_na_patient_id_is_refused_before_training(tmp_path, capsys, value):
    def blank(table):
        table.loc[3, "patient_id"] = value
    _train_refuses(tmp_path, capsys, _edited(tmp_path, blank), "1 row(s) without a patient id", "line 5")


@pytest.mark.parametrize("value", ["", "validation"])
def test_a_row_with_a_blank_or_unknown_split_is_refused(tmp_path, capsys, value):
    def other_split(table):
        table.loc[2, "split"] = value
    _train_refuses(tmp_path, capsys, _edited(tmp_path, other_split), "1 row(s) whose split is blank or not one of",
                   "line 4", f"'{value}'")
