"""A killed study leaves no worker behind, two studies never share a folder, status.json agrees with the runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privmed import rundir
from privmed.errors import STUDY_BUSY, PrivmedError
from privmed.study import run_study, study_from_dict
from privmed.study.lifeline import study_lock
from privmed.study.state import STATUS, finished

ROOT = Path(__file__).resolve().parents[1]
STUDY = {
    "name": "killed",
    "base": {"data": {"phantom_samples": 300, "image_size": 32},
             "training": {"epochs": 4, "batch_size": 64, "bootstrap_resamples": 100}},
    "strategies": {"dp_sgd": {}},
    "epsilons": [2, 4],
    "seeds": [0],
}


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux) to find the workers")
def test_a_killed_study_leaves_no_worker_and_the_rerun_agrees_with_its_run_folders(tmp_path):
    study_file, out = tmp_path / "study.yaml", tmp_path / "out"
    rundir.write_yaml(study_file, STUDY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "privmed", "study", str(study_file), "--out", str(out), "--workers", "2",
               "--no-report"]
    parent = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = wait_for(lambda: any((out / "runs").glob(f"*/{rundir.CHECKPOINTS}/{rundir.LAST}")), 120)
        assert started, "the study's workers never wrote a checkpoint"
        workers = children(parent.pid)
        assert workers, "the study has no worker processes"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not any(alive(w) for w in workers), 10), "workers survived their study"
    finally:
        if parent.poll() is None:
            parent.kill()
    study = study_from_dict(STUDY)
    run_study(study, STUDY, out=out, workers=2, progress=lambda _: None)
    status = rundir.read_json(out / STATUS)
    for cell in study.cells(out):
        assert finished(Path(cell.config.out))
        assert status[cell.run_id]["status"] == "finished"


def test_a_second_study_into_the_same_folder_is_refused_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with study_lock(out):
        with pytest.raises(PrivmedError) as err:
            run_study(study_from_dict(STUDY), STUDY, out=out, progress=lambda _: None)
    assert str(err.value) == STUDY_BUSY.format(path=out, pid=os.getpid())
    assert not (out / "study.yaml").exists() and not (out / "runs").exists()


def test_status_forgets_a_run_whose_folder_is_gone_and_learns_one_finished_elsewhere(tmp_path):
    from privmed.study.state import sync_status

    study = study_from_dict(STUDY)
    cells = study.cells(tmp_path)
    from privmed.config import save_config

    first, second = (Path(c.config.out) for c in cells)
    (first / rundir.CHECKPOINTS).mkdir(parents=True)
    save_config(cells[0].config, first / rundir.CONFIG)
    for name in (rundir.METRICS, rundir.PRIVACY, f"{rundir.CHECKPOINTS}/{rundir.BEST}"):
        (first / name).write_text("{}")
    rundir.seal_run(first)  # all records written and sealed: finished
    rundir.write_json(tmp_path / STATUS, {cells[1].run_id: {"status": "finished", "seconds": 1.0, "error": ""}})
    sync_status(tmp_path, cells, study)
    status = rundir.read_json(tmp_path / STATUS)
    assert status[cells[0].run_id]["status"] == "finished" and cells[1].run_id not in status


def test_status_keeps_the_failure_of_a_finished_run_whose_cell_changed(tmp_path):
    import dataclasses

    from privmed.config import save_config
    from privmed.study.state import sync_status

    study = study_from_dict(STUDY)
    cell = study.cells(tmp_path)[0]
    run = Path(cell.config.out)
    run.mkdir(parents=True)
    (run / rundir.METRICS).write_text("{}")
    changed = dataclasses.replace(cell.config, training=dataclasses.replace(cell.config.training, lr=0.01))
    save_config(changed, run / rundir.CONFIG)
    failure = {"status": "failed", "seconds": 0.0, "error": "trained with another configuration"}
    rundir.write_json(tmp_path / STATUS, {cell.run_id: failure})
    sync_status(tmp_path, study.cells(tmp_path), study)
    assert rundir.read_json(tmp_path / STATUS)[cell.run_id] == failure


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux) to find the ranks")
def test_no_rank_outlives_a_killed_train_nproc(tmp_path):
    """``privmed train --nproc 2`` killed with SIGKILL: its rank processes end too, within 10 s (checked in
    /proc), and write nothing more into the run folder."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "privmed", "train", "--image-size", "32", "--epochs", "200", "--epsilon", "8",
               "--nproc", "2", "--model", "resnet9_small", "--out", str(out)]
    parent = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = wait_for(lambda: (out / rundir.CHECKPOINTS / rundir.LAST).is_file(), 240)
        assert started, "the ranks never wrote a checkpoint"
        ranks = [p for child in children(parent.pid) for p in [child, *children(child)]]
        assert ranks, "privmed train --nproc 2 has no rank processes"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not any(alive(r) for r in ranks), 10), "ranks survived their privmed train"
        before = (out / rundir.CHECKPOINTS / rundir.LAST).stat().st_mtime_ns
        time.sleep(2)
        assert (out / rundir.CHECKPOINTS / rundir.LAST).stat().st_mtime_ns == before
        assert not (out / rundir.PRIVACY).exists()
    finally:
        if parent.poll() is None:
            parent.kill()
