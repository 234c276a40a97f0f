"""Faults: a full disk, a read-only folder, a killed worker. Nothing half-written, nothing lost, one message."""

from __future__ import annotations

import builtins
import errno
import io
import os
import pathlib
from pathlib import Path

import pytest
import torch

from privmed import rundir
from privmed.cli import main
from privmed.report import study as report_study
from privmed.report.document import Heading, Paragraph
from privmed.study.state import STUDY_FILE

FAST = ["--image-size", "32", "--model", "resnet9_small", "--epochs", "1", "--batch-size", "32",
        "--bootstrap", "100", "--augment", "false"]
TINY_STUDY = {"name": "faults", "base": {"data": {"phantom_samples": 300, "image_size": 32},
                                         "training": {"epochs": 1, "batch_size": 64, "bootstrap_resamples": 100}},
              "strategies": {"dp_sgd": {}}, "epsilons": [2], "seeds": [0]}


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(code, err) -> str:
    """The one ``privmed: error:`` line of a refused command (exit 2, no traceback)."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("privmed: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def half_then_full(write):
    """A write that gets half of its data onto the disk, then finds the disk full."""
    def patched(self, data, *args, **kwargs):
        write(self, data[: len(data) // 2], *args, **kwargs)
        raise disk_full()
    return patched


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_during_report_leaves_the_old_report_whole(tmp_path, capsys, monkeypatch):
    rundir.write_yaml(tmp_path / STUDY_FILE, TINY_STUDY)
    monkeypatch.setattr(report_study, "collect", lambda study, out: None)
    monkeypatch.setattr(report_study, "report_blocks",
                        lambda study, tables, out: [Heading("a report", 1), Paragraph("x" * 5000)])
    code, _, err = run_cli(capsys, "report", tmp_path)
    assert code == 0, err
    old = {name: (tmp_path / name).read_text() for name in (report_study.HTML, report_study.MARKDOWN)}
    monkeypatch.setattr(report_study, "report_blocks",
                        lambda study, tables, out: [Heading("a new report", 1), Paragraph("y" * 5000)])
    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full(pathlib.Path.write_text))
    line = one_error(*run_cli(capsys, "report", tmp_path)[::2])
    assert "no space left on the disk at '/" in line and report_study.HTML in line
    assert {name: (tmp_path / name).read_text() for name in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STUDY_FILE, *old, "report_files"])


@pytest.mark.slow
def test_a_full_disk_while_training_leaves_no_partial_checkpoint(phantom_root, tmp_path, capsys, monkeypatch):
    save = torch.save

    def full_at_checkpoint(obj, f, *args, **kwargs):
        if "last.pt" in str(f):
            Path(f).write_bytes(b"\0" * 4096)  # the checkpoint had started to grow
            raise disk_full()
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_checkpoint)
    out = tmp_path / "run"
    line = one_error(*run_cli(capsys, "train", "--data", phantom_root, "--out", out, *FAST)[::2])
    assert "no space left on the disk at '/" in line and "last.pt" in line and "--resume" in line
    assert list((out / rundir.CHECKPOINTS).iterdir()) == []  # no last.pt.tmp, no partial last.pt


def test_a_write_that_fails_otherwise_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from privmed import atomic
    from privmed.errors import PrivmedError

    target = tmp_path / "metrics.json"
    rundir.write_json(target, {"auroc": 0.9})
    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full(pathlib.Path.write_text))
    with pytest.raises(PrivmedError, match="no space left"):
        rundir.write_json(target, {"auroc": 0.1})
    assert rundir.read_json(target) == {"auroc": 0.9} and [p.name for p in tmp_path.iterdir()] == [target.name]
    monkeypatch.undo()
    with pytest.raises(RuntimeError), atomic.replacing(target) as tmp:  # a bug in the writer: its own traceback
        tmp.write_text("{")
        raise RuntimeError("bug")
    assert rundir.read_json(target) == {"auroc": 0.9} and [p.name for p in tmp_path.iterdir()] == [target.name]


# --------------------------------------------------------------------------- a read-only folder


def read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only to this process as the kernel would for a user other than root (tests may
    run as root, whom chmod does not stop): creating, writing, renaming into or making a folder in it
    raise PermissionError."""
    folder = str(folder.resolve())

    def inside(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(folder)

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    real_os_open, real_open, real_replace, real_mkdir = os.open, builtins.open, os.replace, os.mkdir

    def os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def opener(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and inside(file) and set(mode) & set("wax+"):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if inside(dst):
            raise denied(dst)
        return real_replace(src, dst, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            raise denied(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", opener)
    monkeypatch.setattr(io, "open", opener)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)


def test_report_of_a_read_only_study_folder_is_one_message(tmp_path, capsys, monkeypatch):
    rundir.write_yaml(tmp_path / STUDY_FILE, TINY_STUDY)
    monkeypatch.setattr(report_study, "collect", lambda study, out: None)
    monkeypatch.setattr(report_study, "report_blocks", lambda study, tables, out: [Heading("a report", 1)])
    read_only(monkeypatch, tmp_path)
    line = one_error(*run_cli(capsys, "report", tmp_path)[::2])
    monkeypatch.undo()
    assert "read-only to this user" in line and str(tmp_path) in line
    assert [p.name for p in tmp_path.iterdir()] == [STUDY_FILE]


@pytest.fixture(scope="module")
def trained_run(phantom_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    assert main([str(a) for a in ("train", "--data", phantom_root, "--out", out, *FAST)]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("command", [["evaluate", "{run}", "--data", "{data}", "--bootstrap", "100"],
                                     ["audit", "{run}", "--shadows", "0", "--canaries", "10"]],
                         ids=["evaluate", "audit"])
def test_evaluate_and_audit_of_a_read_only_run_folder_are_one_message(command, trained_run, phantom_root, capsys,
                                                                      monkeypatch):
    before = sorted(p.relative_to(trained_run) for p in trained_run.rglob("*"))
    read_only(monkeypatch, trained_run)
    argv = [a.format(run=trained_run, data=phantom_root) for a in command]
    line = one_error(*run_cli(capsys, *argv)[::2])
    monkeypatch.undo()
    assert "read-only to this user" in line and str(trained_run) in line
    assert sorted(p.relative_to(trained_run) for p in trained_run.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder (tests in CI run as root); "
                                              "the patched test above covers it")
def test_report_of_a_chmod_read_only_study_folder_is_one_message(tmp_path, capsys, monkeypatch):
    rundir.write_yaml(tmp_path / STUDY_FILE, TINY_STUDY)
    monkeypatch.setattr(report_study, "collect", lambda study, out: None)
    monkeypatch.setattr(report_study, "report_blocks", lambda study, tables, out: [Heading("a report", 1)])
    tmp_path.chmod(0o555)
    try:
        line = one_error(*run_cli(capsys, "report", tmp_path)[::2])
    finally:
        tmp_path.chmod(0o755)
    assert "read-only to this user" in line


# --------------------------------------------------------------------------- nothing half-written, nothing lost


def killed_before_the_ledger(monkeypatch):
    """Kill training between metrics.json and privacy.json (as ``kill`` would, once)."""
    write_record = rundir.write_record

    def killed(folder, record):
        if (Path(folder) / rundir.METRICS).is_file() and not (Path(folder) / rundir.PRIVACY).is_file():
            monkeypatch.setattr(rundir, "write_record", write_record)
            raise KeyboardInterrupt
        return write_record(folder, record)

    monkeypatch.setattr(rundir, "write_record", killed)


@pytest.mark.slow
def test_a_run_killed_between_its_results_is_continued_by_resume(phantom_root, tmp_path, capsys, monkeypatch):
    from privmed.study.state import finished

    out = tmp_path / "run"
    killed_before_the_ledger(monkeypatch)
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", out, *FAST)
    assert code == 130 and (out / rundir.METRICS).is_file() and not (out / rundir.PRIVACY).is_file(), err
    assert not finished(out) and not rundir.run_finished(out)
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", out, *FAST, "--resume")
    assert code == 0, err
    assert finished(out) and rundir.verify_run(out).verified
    rundir.read_record(out)


@pytest.mark.slow
def test_a_study_reruns_a_run_killed_between_its_results(tmp_path, monkeypatch):
    from privmed.study import run_study, study_from_dict

    out = tmp_path / "study"
    killed_before_the_ledger(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_study(study_from_dict(TINY_STUDY), TINY_STUDY, out=out, progress=lambda _: None)
    [run] = (out / "runs").iterdir()
    assert (run / rundir.METRICS).is_file() and not (run / rundir.PRIVACY).is_file()
    [outcome] = run_study(study_from_dict(TINY_STUDY), TINY_STUDY, out=out, progress=lambda _: None).outcomes
    assert outcome.status == "finished" and rundir.run_finished(run)
    rundir.read_record(run)


# --------------------------------------------------------------------------- a killed worker


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux) to find the workers")
def test_a_study_worker_killed_with_sigkill_is_recorded_as_failed_and_the_study_goes_on(tmp_path):
    import signal
    import subprocess
    import sys

    from privmed.study.state import STATUS
    from test_lifeline import alive, children, wait_for

    raw = {**TINY_STUDY, "epsilons": [2, 4, 8],
           "base": {**TINY_STUDY["base"], "training": {**TINY_STUDY["base"]["training"], "epochs": 3}}}
    study_file, out = tmp_path / "study.yaml", tmp_path / "out"
    rundir.write_yaml(study_file, raw)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-m", "privmed", "study", str(study_file), "--out", str(out),
                               "--workers", "2", "--no-report"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any((out / "runs").glob(f"*/{rundir.CHECKPOINTS}/{rundir.LAST}")), 240), \
            "the study's workers never wrote a checkpoint"
        workers = [pid for pid in children(parent.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid)]
        assert workers, "the study has no worker processes"
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = parent.communicate(timeout=400)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert "Traceback" not in stderr and "BrokenProcessPool" not in stderr, stderr
    status = rundir.read_json(out / STATUS)
    failed = {run: entry for run, entry in status.items() if entry["status"] == "failed"}
    assert failed and all(e["error"].startswith("worker killed") for e in failed.values()), status
    assert all((out / "failed" / f"{run}.txt").is_file() for run in failed)
    assert len(status) == 3 and any(e["status"] == "finished" for e in status.values()), status  # it went on
    assert "worker killed" in stdout
