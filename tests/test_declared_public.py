"""A folder the user declares public (``synthetic.public``): free, stated, and refused where privmed sees otherwise."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from privmed import rundir
from privmed.cli import main
from privmed.config import config_from_dict
from privmed.errors import PrivmedError
from privmed.privacy.accounting import Mechanism, epsilon_for
from privmed.report import write_report
from privmed.report.study import FREE_INPUTS_HEADING
from privmed.study import run_study, study_from_dict
from privmed.synth.sample import sample
from privmed.synth.training import train_generator
from privmed.training.synthetic import (CHECKED_IMAGES, DECLARED_PUBLIC, GENERATOR_DATA_UNREADABLE, NO_PATIENT_IDS,
                                        NO_SHARED_PATIENT, PUBLIC_GENERATOR_SAW_PRIVATE, PUBLIC_HAS_PRIVATE_IMAGES,
                                        PUBLIC_SHARES_PATIENTS, UNKNOWN_ORIGIN)
from privmed.training.trainer import train
from test_study import tiny
from test_synth import gen_config


def run_config(root, out, folder, *, public=True, epsilon=2.0):
    return config_from_dict({"out": str(out), "data": {"path": str(root), "image_size": 32},
                             "model": {"name": "scatter_linear"}, "privacy": {"epsilon": epsilon},
                             "training": {"epochs": 2, "batch_size": 32, "bootstrap_resamples": 100},
                             "synthetic": {"path": str(folder), "use": "pretrain", "pretrain_epochs": 2,
                                           "public": public}})


def checked(n, patients=NO_PATIENT_IDS):
    return "its " + CHECKED_IMAGES.format(n=n, patients=patients)


def declared(folder):
    """The ledger's sentence for ``folder`` (class folders, so no patient ids to compare)."""
    return DECLARED_PUBLIC.format(path=folder, checked=checked(sum(1 for _ in folder.rglob("*.png"))))


@pytest.fixture(scope="module")
def other_patients(tmp_path_factory):
    """Class folders (no manifest, no privacy record) of phantom patients who are not in ``phantom_root``."""
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    written = write_phantom_dataset(tmp_path_factory.mktemp("other") / "p",
                                    PhantomSpec(n_samples=60, image_size=32, seed=11)).parent
    folder = tmp_path_factory.mktemp("public") / "public"
    shutil.copytree(written / "images" / "train", folder)
    return folder


@pytest.mark.slow
def test_a_declared_public_folder_costs_nothing_and_the_ledger_states_the_declaration(phantom_root, other_patients,
                                                                                     tmp_path):
    record = rundir.read_json(train(run_config(phantom_root, tmp_path / "r", other_patients)) / rundir.PRIVACY)
    assert record["private"] is True
    assert [s["stage"] for s in record["stages"]] == ["dp_sgd"]  # the public images' mean is the centre: no release
    sgd = record["stages"][0]
    assert record["epsilon"] == pytest.approx(epsilon_for(
        [Mechanism("dp_sgd", sgd["noise_multiplier"], sgd["sample_rate"], sgd["steps"])], delta=record["delta"]))
    assert record["free_inputs"] == [declared(other_patients)]
    assert "declared public by the user" in record["summary"]


def test_without_the_declaration_the_same_folder_makes_the_run_not_private(phantom_root, other_patients, tmp_path):
    record = rundir.read_json(train(run_config(phantom_root, tmp_path / "r", other_patients, public=False))
                              / rundir.PRIVACY)
    assert record["private"] is False
    assert record["non_private_reasons"] == [UNKNOWN_ORIGIN.format(path=other_patients)]


def test_a_private_image_in_the_folder_is_refused_before_anything_is_written(phantom_root, other_patients, tmp_path):
    folder = tmp_path / "public"
    shutil.copytree(other_patients, folder)
    private_image = next((phantom_root / "images" / "train" / "malignant").glob("*.png"))
    shutil.copy(private_image, folder / "malignant" / "renamed.png")
    with pytest.raises(PrivmedError) as err:
        train(run_config(phantom_root, tmp_path / "r", folder))
    assert str(err.value) == PUBLIC_HAS_PRIVATE_IMAGES.format(count=1, where=f"'{folder}'",
                                                              example="malignant/renamed.png")
    assert not (tmp_path / "r").exists()


def test_a_shared_patient_id_is_refused_and_own_ids_are_accepted(phantom_root, tmp_path):
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    # another phantom draw: different images, but the phantom numbers its patients the same way
    folder = write_phantom_dataset(tmp_path / "p", PhantomSpec(n_samples=60, image_size=32, seed=11)).parent
    (folder / rundir.PRIVACY).unlink()
    manifest = pd.read_csv(folder / "metadata.csv")
    shared = sorted(set(manifest["patient_id"]) & set(pd.read_csv(phantom_root / "metadata.csv")["patient_id"]))
    with pytest.raises(PrivmedError) as err:
        train(run_config(phantom_root, tmp_path / "r", folder))
    assert str(err.value) == PUBLIC_SHARES_PATIENTS.format(count=len(shared), where=f"'{folder}'",
                                                           examples=", ".join(repr(p) for p in shared[:3]))
    assert not (tmp_path / "r").exists()

    manifest.assign(patient_id="public_" + manifest["patient_id"]).to_csv(folder / "metadata.csv", index=False)
    record = rundir.read_json(train(run_config(phantom_root, tmp_path / "r", folder)) / rundir.PRIVACY)
    assert record["private"] is True
    assert record["free_inputs"] == [DECLARED_PUBLIC.format(path=folder, checked=checked(len(manifest),
                                                                                         NO_SHARED_PATIENT))]


@pytest.mark.slow
def test_samples_of_a_generator_trained_on_the_private_data_cannot_be_declared_public(phantom_root, tmp_path):
    generator = train_generator(gen_config(phantom_root, tmp_path / "g", epsilon=5.0))
    samples = sample(generator, n=20, out=tmp_path / "s")
    with pytest.raises(PrivmedError) as err:
        train(run_config(phantom_root, tmp_path / "r", samples))
    assert str(err.value) == PUBLIC_GENERATOR_SAW_PRIVATE.format(path=samples, generator=generator.resolve(),
                                                                 trained_on=phantom_root)


@pytest.mark.slow
def test_samples_of_a_generator_trained_on_public_data_are_checked_through_its_training_data(
        phantom_root, other_patients, tmp_path):
    public = tmp_path / "public"
    shutil.copytree(other_patients, public)
    samples = sample(train_generator(gen_config(public, tmp_path / "g")), n=20, out=tmp_path / "s")
    n_public = sum(1 for _ in public.rglob("*.png"))
    record = rundir.read_json(train(run_config(phantom_root, tmp_path / "r", samples)) / rundir.PRIVACY)
    assert record["private"] is True and [s["stage"] for s in record["stages"]] == ["dp_sgd"]
    generator_data = "its generator's training data, " + CHECKED_IMAGES.format(n=n_public, patients=NO_PATIENT_IDS)
    assert record["free_inputs"] == [DECLARED_PUBLIC.format(path=samples, checked=f"{checked(20)}; {generator_data}")]

    public.rename(tmp_path / "moved")  # the generator's training data can no longer be read: said, not hidden
    record = rundir.read_json(train(run_config(phantom_root, tmp_path / "r2", samples)) / rundir.PRIVACY)
    unreadable = GENERATOR_DATA_UNREADABLE.format(path=public)
    assert record["free_inputs"] == [DECLARED_PUBLIC.format(path=samples, checked=f"{checked(20)}; {unreadable}")]


def test_a_generator_whose_training_data_holds_a_private_image_is_refused(phantom_root, other_patients, tmp_path):
    public = tmp_path / "public"
    shutil.copytree(other_patients, public)
    private_image = next((phantom_root / "images" / "train" / "benign").glob("*.png"))
    shutil.copy(private_image, public / "benign" / "leaked.png")
    generator = train_generator(gen_config(public, tmp_path / "g"))
    samples = sample(generator, n=20, out=tmp_path / "s")
    with pytest.raises(PrivmedError) as err:
        train(run_config(phantom_root, tmp_path / "r", samples))
    where = f"'{public}' (the training data of generator '{generator.resolve()}')"
    assert str(err.value) == PUBLIC_HAS_PRIVATE_IMAGES.format(count=1, where=where, example="benign/leaked.png")


@pytest.mark.slow
def test_a_study_report_states_the_declaration(other_patients, tmp_path):
    raw = tiny(epsilons=[2], fairness={}, strategies={"public_pretrain": {"synthetic": {
        "path": str(other_patients), "use": "pretrain", "pretrain_epochs": 1, "public": True}}})
    run_study(study_from_dict(raw), raw, out=tmp_path, progress=lambda _: None)
    report = write_report(tmp_path)[1].read_text()
    assert (f"{FREE_INPUTS_HEADING}\n\n- 1 run(s) (public_pretrain__eps2__seed0): "
            f"{declared(other_patients)}.") in report
    assert "declared public by the user: no privacy cost, on that declaration" in report
    assert "All 1 finished runs are differentially private." in report


@pytest.mark.parametrize("synthetic, message", [
    ({"public": True}, "give it with --synthetic"),
    ({"path": "x", "public": "maybe"}, "not a boolean"),
])
def test_the_declaration_is_checked_in_the_config(synthetic, message):
    with pytest.raises(PrivmedError, match=message):
        config_from_dict({"synthetic": synthetic})


@pytest.mark.slow
def test_the_cli_flag_declares_the_folder_public(phantom_root, other_patients, tmp_path, capsys):
    status = main(["train", "--data", str(phantom_root), "--image-size", "32", "--model", "scatter_linear",
                   "--epsilon", "2", "--epochs", "1", "--batch-size", "32", "--bootstrap", "100", "--synthetic", str(other_patients),
                   "--pretrain-epochs", "1", "--synthetic-public", "--out", str(tmp_path / "r")])
    assert status == 0
    assert rundir.read_config_dict(tmp_path / "r")["synthetic"]["public"] is True
    assert "declared public by the user" in capsys.readouterr().out
