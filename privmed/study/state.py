"""A study folder's state: which runs are finished, ``status.json``, ``timing.json``, failure notes.

The runner (:mod:`privmed.study.runner`) writes this state and the tables
(:mod:`privmed.study.results`) and the report read it; both import it from here, so neither
imports the other's module for it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from privmed import atomic, rundir
from privmed.audit.config import AuditConfig
from privmed.errors import error_kind

from .config import Cell, StudyConfig

STATUS = "status.json"
TIMING = "timing.json"
STUDY_FILE = "study.yaml"
FAILED = "failed"
CHANGED = ("'{run}' was trained with another configuration than the study now gives it ({changes}); run the changed "
           "study into a new --out, or delete that run directory to retrain it.")


@dataclass(frozen=True)
class CellOutcome:
    """What became of one run in this invocation."""

    run_id: str
    status: str  # "finished" (trained now), "skipped" (finished before), "failed"
    seconds: float = 0.0
    error: str = ""


def finished(run: Path) -> bool:
    """A run directory whose results are all written and sealed (:func:`~privmed.rundir.run_finished`)."""
    return rundir.run_finished(run)


def evaluated(run: Path, spec) -> bool:
    """Whether ``run`` has its evaluation on the external test set ``spec``."""
    from privmed.evaluation.external import evaluation_dir

    return (evaluation_dir(run, spec.name, spec.split) / rundir.METRICS).is_file()


def _finished(cell: Cell, study: StudyConfig) -> bool:
    run = Path(cell.config.out)
    return finished(run) and all(evaluated(run, e) for e in study.external) and not config_drift(cell)


def audit_config(study: StudyConfig, workers: int = 1) -> AuditConfig | None:
    """The :class:`~privmed.audit.config.AuditConfig` of the study's audit (``None``: no audit)."""
    a = study.audit
    return None if a is None else AuditConfig(shadows=a.shadows, canaries=a.canaries, canary_kind=a.canary_kind,
                                              workers=workers)


def config_drift(cell: Cell) -> list[str]:
    """How the configuration a run directory was trained with differs from its cell's (empty: same)."""
    from privmed.config import config_from_run_dict

    run = Path(cell.config.out)
    if not (run / rundir.CONFIG).is_file():
        return []
    return rundir.config_changes(config_from_run_dict(rundir.read_config_dict(run)).identity(), cell.config.identity())


def sync_status(out: Path, cells: list[Cell], study: StudyConfig) -> set[str]:
    """Make ``status.json`` agree with the run folders: a finished run (trained with its cell's configuration
    and evaluated on every external set) is recorded as finished, also one finished by an earlier, killed
    invocation; no other run is recorded as finished. Returns the finished runs' ids."""
    status = rundir.read_json(out / STATUS) if (out / STATUS).is_file() else {}
    changed, finished_ids = False, set()
    for cell in cells:
        done, entry = _finished(cell, study), status.get(cell.run_id)
        if done:
            finished_ids.add(cell.run_id)
        if done and (entry is None or entry.get("status") != "finished"):
            status[cell.run_id] = {"status": "finished", "seconds": (entry or {}).get("seconds", 0.0), "error": ""}
            changed = True
        elif not done and entry is not None and entry.get("status") == "finished":
            del status[cell.run_id]
            changed = True
    if changed:
        rundir.write_json(out / STATUS, status)
    return finished_ids


def record(out: Path, outcome: CellOutcome) -> None:
    """Write ``outcome`` to ``status.json`` with its error's kind only (its text may name a patient, a file or a
    path), and the error's full text to ``failed/<run>.txt`` (removed once it succeeds)."""
    status = rundir.read_json(out / STATUS) if (out / STATUS).is_file() else {}
    status[outcome.run_id] = {"status": outcome.status, "seconds": round(outcome.seconds, 1),
                              "error": error_kind(outcome.error)}
    rundir.write_json(out / STATUS, status)
    failure = out / FAILED / f"{outcome.run_id}.txt"
    if outcome.status == "failed":
        atomic.write_text(failure, outcome.error + "\n")
    elif failure.exists():
        failure.unlink()


def log_timing(out: Path, started: float, workers: int, trained: int) -> None:
    """Append this invocation's wall time to ``timing.json``."""
    path = out / TIMING
    log = rundir.read_json(path) if path.is_file() else {"invocations": []}
    log["invocations"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                               "seconds": round(time.time() - started, 1), "workers": workers,
                               "cpu_count": os.cpu_count(), "runs_trained": trained})
    log["wall_seconds"] = round(sum(i["seconds"] for i in log["invocations"]), 1)
    rundir.write_json(path, log)
