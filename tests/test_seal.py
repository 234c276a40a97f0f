"""Issue 32, "the seal proves nothing" and "--resume on changed data": keyed seals over every record a command
writes (privmed/seal.py), checked by every reader, and a resume refused on other data or privacy settings.

Each test names a row of docs/bad-input.md ("Seals and resume (issue 32)")."""

from __future__ import annotations

import hashlib
import re
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_bad_input import FAST, assert_refused, finished_run, run_cli, run_copy  # noqa: F401 (fixtures)

from privmed import rundir, seal

BROKEN = "is not the record privmed sealed"


def evaluate(capsys, run: Path, data: Path):
    return run_cli(capsys, "evaluate", run, "--data", data, "--bootstrap", 100)


def test_a_run_is_sealed_under_a_key_made_once_outside_it(run_copy, tmp_path, monkeypatch):
    seals = seal.read_seals(run_copy)
    assert set(seals["hmac_sha256"]) == set(rundir.RUN_RECORDS)
    key = seal.key_path()
    assert not key.is_relative_to(run_copy) and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert seals["key_id"] == seal.key_id(seal.load_key()) and seal.load_key().hex() not in (run_copy / seal.SEALS
                                                                                             ).read_text()
    assert rundir.verify_run(run_copy).verified
    monkeypatch.delenv(seal.KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    first = seal.load_key()  # made on first use, where XDG_CONFIG_HOME says
    assert (tmp_path / "config" / "privmed" / "seal.key").is_file() and seal.load_key() == first


@pytest.mark.slow
def test_an_edited_and_rehashed_ledger_is_refused_by_evaluate(run_copy, phantom_root, capsys):
    ledger = run_copy / rundir.PRIVACY
    ledger.write_text(ledger.read_text().replace('"private": false', '"private": true'))
    digest = rundir.seal_ledger(run_copy)  # what an attacker can do with plain SHA-256: rehash both copies
    best = run_copy / rundir.CHECKPOINTS / rundir.BEST
    state = torch.load(best, weights_only=True)
    torch.save({**state, "ledger_sha256": digest}, best)
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == digest
    code, _, err = evaluate(capsys, run_copy, phantom_root)
    assert_refused(code, err, BROKEN, run_copy / "evaluations")
    for command in (["audit", run_copy, "--data", phantom_root], ["compare", run_copy, run_copy, "--data",
                                                                  phantom_root, "--bootstrap", 100]):
        code, _, err = run_cli(capsys, *command)
        assert_refused(code, err, BROKEN)


@pytest.mark.slow
def test_an_edited_config_is_refused(run_copy, phantom_root, capsys):
    config = run_copy / rundir.CONFIG
    assert "bootstrap_resamples: 100" in config.read_text()
    config.write_text(config.read_text().replace("bootstrap_resamples: 100", "bootstrap_resamples: 200"))
    code, _, err = evaluate(capsys, run_copy, phantom_root)
    assert_refused(code, err, f"'{config}' {BROKEN}", run_copy / "evaluations")
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", run_copy, *FAST, "--resume")
    assert_refused(code, err, BROKEN)


@pytest.mark.slow
def test_a_run_sealed_under_another_key_is_read_as_unverified(run_copy, phantom_root, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setenv(seal.KEY_ENV, str(tmp_path / "team" / "seal.key"))  # another key, made on first use
    code, out, err = evaluate(capsys, run_copy, phantom_root)
    assert code == 0, err
    assert "the run's records: unverified: sealed under another key" in out
    assert "unverified" in out.split("privacy:")[1]
    record = rundir.read_record(run_copy)
    assert record.seal.startswith("unverified: sealed under another key")
    assert "[record unverified: sealed under another key" in record.stated_summary


@pytest.mark.slow
def test_an_unsealed_old_style_run_evaluates_as_unverified(run_copy, phantom_root, capsys):
    (run_copy / seal.SEALS).unlink()  # a run written before keyed seals: privacy.sha256 and best.pt's digest only
    code, out, err = evaluate(capsys, run_copy, phantom_root)
    assert code == 0, err
    assert f"the run's records: unverified: {seal.NO_SEAL}" in out
    assert "unverified" in rundir.read_record(run_copy).stated_summary
    ledger = run_copy / rundir.PRIVACY  # the plain digests still refuse an edit nobody rehashed
    ledger.write_text(ledger.read_text().replace('"private": false', '"private": true'))
    code, _, err = evaluate(capsys, run_copy, phantom_root)
    assert_refused(code, err, "is not the privacy ledger training wrote")


@pytest.mark.slow
def test_an_edited_sample_record_is_refused_by_train_synthetic(phantom_root, tmp_path, capsys, monkeypatch):
    gen, samples = tmp_path / "g", tmp_path / "s"
    assert run_cli(capsys, "synth", "train", "--data", phantom_root, "--image-size", 32, "--epsilon", 8,
                   "--epochs", 1, "--batch-size", 32, "--width", 8, "--out", gen)[0] == 0
    assert set(seal.read_seals(gen)["hmac_sha256"]) == {rundir.CONFIG, rundir.PRIVACY, "generator.pt"}
    assert run_cli(capsys, "synth", "sample", gen, "--n", 40, "--out", samples)[0] == 0
    record = rundir.read_record(samples)
    assert record.seal == "seal verified" and str((gen / rundir.PRIVACY).resolve()) in record.upstream[0]
    synthetic = ["--synthetic", samples, "--synthetic-use", "pretrain", "--pretrain-epochs", 1]
    run = tmp_path / "r"
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", run, *FAST, "--epsilon", 3, *synthetic)
    assert code == 0, err
    upstream = rundir.read_record(run).upstream  # the chain: the sample's record and the generator's, by digest
    digest = seal.file_digest(samples / rundir.PRIVACY)
    assert any(f"sha256 {digest} (seal verified)" in entry for entry in upstream) and len(upstream) == 2

    edited = samples / rundir.PRIVACY
    edited.write_text(re.sub(r'"epsilon": [0-9.e-]+', '"epsilon": 0.5', edited.read_text(), count=1))
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "r2", *FAST, "--epsilon", 3,
                           *synthetic)
    assert_refused(code, err, f"'{edited}' {BROKEN}", tmp_path / "r2")

    edited.unlink()  # a sample folder from elsewhere, sealed under another key: read, and carried as unverified
    shutil.copy(gen / rundir.PRIVACY, edited)
    monkeypatch.setenv(seal.KEY_ENV, str(tmp_path / "other.key"))
    seal.seal(samples, [rundir.PRIVACY, "manifest.csv"])
    monkeypatch.undo()
    from privmed.config import config_from_dict
    from privmed.training.start import synthetic_source
    from privmed.data.sources import load_dataset

    config = config_from_dict({"out": str(tmp_path / "r3"), "data": {"path": str(phantom_root), "image_size": 32},
                               "privacy": {"epsilon": 3}, "synthetic": {"path": str(samples), "use": "pretrain"}})
    source = synthetic_source(config, load_dataset(config.data))
    assert "unverified: sealed under another key" in source.upstream[-1]


@pytest.mark.slow
def test_a_resume_on_a_cut_manifest_is_refused(phantom_root, tmp_path, capsys):
    data = Path(shutil.copytree(phantom_root, tmp_path / "data"))
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", data, "--out", out, *FAST, "--epsilon", 4)[0] == 0
    state = torch.load(out / rundir.CHECKPOINTS / rundir.LAST, weights_only=True)
    assert state["fingerprint"]["data"]["images"] > 0
    manifest = pd.read_csv(data / "metadata.csv")
    manifest.drop(manifest.index[manifest["split"] == "train"][:12]).to_csv(data / "metadata.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, *FAST, "--epsilon", 4, "--resume")
    assert_refused(code, err, f"cannot resume '{out}': the number of training images changed")
    assert "the training files (paths, sizes or modification times) changed" in err, err


def test_the_fingerprint_names_a_touched_file_and_changed_settings(phantom_root, tmp_path):
    from privmed.config import config_from_dict
    from privmed.data.sources import load_dataset
    from privmed.errors import PrivmedError
    from privmed.training.checkpoint import check_same_start, fingerprint
    from privmed.training.plan import plan_privacy, protected_unit, sampled_unit

    data_root = Path(shutil.copytree(phantom_root, tmp_path / "data"))

    def start(**privacy):
        config = config_from_dict({"out": str(tmp_path / "r"), "data": {"path": str(data_root), "image_size": 32},
                                   "privacy": privacy, "training": {"epochs": 1, "batch_size": 32}})
        train = load_dataset(config.data).split("train")
        unit = protected_unit(config, train, None)
        plan = plan_privacy(config, unit, sampled_unit(config, unit, None), config.tune.candidates(config.training),
                            checkpoint=None, has_center=False)
        return fingerprint(train, config, plan)

    then = start(epsilon=4)
    check_same_start(tmp_path, {"fingerprint": then}, start(epsilon=4))  # the same data and settings: resumed
    check_same_start(tmp_path, {}, start(epsilon=4))  # a checkpoint from before fingerprints: resumed as before
    first = sorted((data_root / "images" / "train").rglob("*.png"))[0]
    first.write_bytes(first.read_bytes() + b"\0")  # one file changed in place: same paths and patients
    with pytest.raises(PrivmedError, match=r"the training files \(paths, sizes or modification times\) changed"):
        check_same_start(tmp_path, {"fingerprint": then}, start(epsilon=4))
    with pytest.raises(PrivmedError, match=r"privacy.clip_norm: 1.0 -> 2.0"):
        check_same_start(tmp_path, {"fingerprint": then}, {**then, "privacy": {**then["privacy"], "clip_norm": 2.0}})


def test_a_short_key_and_a_broken_seals_file_are_refused(tmp_path, monkeypatch):
    from privmed.errors import PrivmedError

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("a record")
    seal.seal(folder, ["a.txt"])
    (folder / seal.SEALS).write_text('{"key_id": "x"')  # cut short
    with pytest.raises(PrivmedError, match="is not a readable seals file"):
        seal.verify(folder, ["a.txt"])
    monkeypatch.setenv(seal.KEY_ENV, str(tmp_path / "short.key"))
    (tmp_path / "short.key").write_text("too short\n")
    with pytest.raises(PrivmedError, match=r"the seal key '.*short.key' cannot be used \(it holds 9 bytes"):
        seal.seal(folder, ["a.txt"])
