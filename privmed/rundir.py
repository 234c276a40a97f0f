"""The run directory: resolved config, privacy ledger, metrics, predictions, checkpoints, log.

Files are written atomically (temporary file + rename) so an interrupted run never
leaves a half-written JSON or CSV behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import yaml

from privmed import atomic, safe_yaml, seal
from privmed.errors import (
    CHECKPOINT_UNREADABLE,
    CHECKPOINT_UNSAFE,
    CLASS_NAME_UNSAFE,
    CONFIG_UNREADABLE,
    JSON_UNREADABLE,
    LEDGER_CHANGED,
    METRICS_MISSING,
    OUT_NOT_EMPTY,
    OUT_NOT_WRITABLE,
    PRIVACY_RECORD_MISSING,
    RESUME_CONFIG_CHANGED,
    RESUME_NOTHING,
    RUN_DATA_MISSING,
    RESTARTED,
    PrivmedError,
)
from privmed.privacy.record import PrivacyRecord

LOCK_FILE = ".lock"  # held by the process writing the folder (a run, a study): see folder_lock
CONFIG = "config.yaml"
PRIVACY = "privacy.json"
LEDGER_SEAL = "privacy.sha256"  # SHA-256 of privacy.json as training wrote it
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
LOG = "train.log"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def check_recorded_data(run: Path, path: str | None) -> None:
    """A run's own data path (``None``: the built-in phantom) must exist from here; otherwise say to pass --data."""
    if path is not None and not Path(path).exists():
        raise PrivmedError(RUN_DATA_MISSING.format(run=run, path=path, cwd=Path.cwd()))


def seal_ledger(run: Path) -> str:
    """Record the digest of the run's ``privacy.json`` beside it (the trainer also keeps it in
    ``best.pt``); call right after training wrote the ledger. Returns the digest."""
    digest = _ledger_digest(run)
    _atomic_write(Path(run) / LEDGER_SEAL, f"{digest}  {PRIVACY}\n")
    return digest


def check_ledger(run: Path, *, kept: str | None = None) -> None:
    """Refuse a run whose ``privacy.json`` differs from the one training wrote: the digest ``kept`` in
    ``checkpoints/best.pt`` (its ``ledger_sha256``) and the seal beside the ledger, each when present."""
    seal = Path(run) / LEDGER_SEAL
    recorded = [kept] if kept is not None else []
    if seal.is_file():
        words = seal.read_text().split()
        recorded.append(words[0] if words else "")
    if not recorded:
        return
    digest = _ledger_digest(run) if (Path(run) / PRIVACY).is_file() else None
    if any(digest != r for r in recorded):
        raise PrivmedError(LEDGER_CHANGED.format(path=Path(run) / PRIVACY, seal=seal))


def _ledger_digest(run: Path) -> str:
    import hashlib

    return hashlib.sha256((Path(run) / PRIVACY).read_bytes()).hexdigest()


def is_new_or_empty(path: Path) -> bool:
    """True when ``path`` does not exist or is an empty folder (but for its :data:`LOCK_FILE`): a place to
    write without overwriting anything."""
    return not path.exists() or (path.is_dir() and all(p.name == LOCK_FILE for p in path.iterdir()))


@contextlib.contextmanager
def folder_lock(out: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``out`` (created if new) for the block: ``flock`` on
    ``out/.lock``, released by the kernel when the holder dies (also by ``kill -9``). Refuses with
    ``busy`` (a message template of ``path`` and ``pid``) while another live process holds it. A folder
    this lock created and nothing else wrote to is removed again."""
    import fcntl

    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise atomic.write_error(err, out) from None
    try:
        fh = open(out / LOCK_FILE, "a+")
    except OSError as err:  # a read-only folder: one message, no traceback
        raise atomic.write_error(err, out / LOCK_FILE) from None
    with fh:
        _acquire(fh, out, busy)
        try:
            yield
        finally:
            if created and [p.name for p in out.iterdir()] == [LOCK_FILE]:
                (out / LOCK_FILE).unlink()
                out.rmdir()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _acquire(fh, out: Path, busy: str) -> None:
    """Lock the open lock file ``fh`` of ``out`` and write this process's id into it."""
    import fcntl

    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = fh.read().strip() if fh.seek(0) == 0 else ""
        raise PrivmedError(busy.format(path=out, pid=holder or "?")) from None
    path = out / LOCK_FILE
    if not path.exists() or os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino:  # its holder just removed it
        fcntl.flock(fh, fcntl.LOCK_UN)
        raise PrivmedError(busy.format(path=out, pid="that just finished"))
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()


def write_json(path: Path, data: Any) -> None:
    """Atomically write JSON (inf/nan become the strings 'inf'/'nan')."""
    _atomic_write(path, json.dumps(_jsonable(data), indent=2) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file privmed wrote; refuses one that was cut short or edited into invalid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PrivmedError(JSON_UNREADABLE.format(path=path, reason=str(err).splitlines()[0])) from None


def write_record(folder: Path, record: PrivacyRecord) -> None:
    """Atomically write ``folder/privacy.json`` and seal it (:mod:`privmed.seal`): the one writer of privacy
    records (a run's or generator's ledger, a synthetic sample's copy of it, the phantom's origin record)."""
    write_json(Path(folder) / PRIVACY, record.to_dict())
    seal.seal(folder, [PRIVACY])


def upstream_entry(folder: Path, record: PrivacyRecord) -> str:
    """How a record composed into another names it: its path, plain digest and seal (``record.seal``)."""
    path = Path(folder) / PRIVACY
    return f"{path.resolve()} sha256 {seal.file_digest(path)} ({record.seal or 'seal not checked'})"


#: the records of a finished run that its seal covers
RUN_RECORDS = (CONFIG, PRIVACY, METRICS, f"{CHECKPOINTS}/{BEST}")


def seal_run(run: Path) -> None:
    """Seal a finished run's records (:data:`RUN_RECORDS`) under this machine's key."""
    seal.seal(run, [name for name in RUN_RECORDS if (Path(run) / name).is_file()])


def run_finished(run: Path) -> bool:
    """Whether training finished ``run``: its records are all there and sealed together, which
    :func:`seal_run` does last (``best.pt`` is sealed nowhere else). A run killed between its results (e.g.
    after ``metrics.json``, before ``privacy.json``) is not finished: ``--resume`` and a study continue it."""
    run = Path(run)
    if not all((run / name).is_file() for name in RUN_RECORDS):
        return False
    sealed = seal.read_seals(run)
    if sealed is None:  # sealed before keyed seals: the ledger's digest, written before best.pt
        return (run / LEDGER_SEAL).is_file()
    return all(name in sealed["hmac_sha256"] for name in RUN_RECORDS)


def verify_run(run: Path) -> seal.Verdict:
    """Verify a run's records (refusing one whose seal fails) and, for a run sealed before keyed seals, its
    ledger's plain digest; the verdict says whether they are verified or why not."""
    verdict = seal.verify(run, RUN_RECORDS)
    if not verdict.verified and (Path(run) / LEDGER_SEAL).is_file():
        check_ledger(run)
    return verdict


def read_record(folder: Path) -> PrivacyRecord:
    """The privacy record in ``folder/privacy.json`` (a run, a generator, synthetic samples): the one reader.
    Refuses a missing file (:data:`~privmed.errors.PRIVACY_RECORD_MISSING`), invalid JSON and a mapping that is
    not a privacy record (:data:`~privmed.errors.PRIVACY_RECORD_MALFORMED`), each naming the file.
    Verifies its seal (:func:`privmed.seal.verify`): a failing seal is refused, and the record's ``seal`` says
    whether it was verified."""
    path = Path(folder) / PRIVACY
    if not path.is_file():
        raise PrivmedError(PRIVACY_RECORD_MISSING.format(path=path))
    verdict = seal.verify(folder, [PRIVACY])
    record = PrivacyRecord.from_dict(read_json(path), where=str(path))
    return dataclasses.replace(record, seal=verdict.words())


def read_metrics(run: Path) -> dict[str, Any]:
    """A finished run's ``metrics.json`` (per split each metric with its CI; the kept ``checkpoint``); refuses a
    missing file (:data:`~privmed.errors.METRICS_MISSING`) and invalid JSON."""
    path = Path(run) / METRICS
    if not path.is_file():
        raise PrivmedError(METRICS_MISSING.format(path=path))
    return read_json(path)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Atomically write a CSV without the index."""
    _atomic_write(path, frame.to_csv(index=False))


def write_yaml(path: Path, data: Any) -> None:
    """Atomically write a plain mapping as YAML (the resolved configuration)."""
    _atomic_write(path, yaml.safe_dump(data, sort_keys=False))


def read_config_dict(run: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` as nested dicts; refuses a file that is not a YAML mapping."""
    path = Path(run) / CONFIG
    try:
        raw = safe_yaml.load(path.read_text(encoding="utf-8"), str(path))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise PrivmedError(CONFIG_UNREADABLE.format(path=path, reason=str(err).splitlines()[0])) from None
    if not isinstance(raw, dict):
        raise PrivmedError(CONFIG_UNREADABLE.format(path=path, reason=f"a {type(raw).__name__}, not a mapping"))
    return raw


def load_checkpoint(path: Path, *, fix: str) -> dict:
    """A checkpoint written by privmed (a dict saved by ``torch.save``); refuses a truncated or foreign file
    with :data:`~privmed.errors.CHECKPOINT_UNREADABLE`, ``fix`` saying what to do. Loaded with
    ``weights_only=True``: a pickle that would call anything (``os.system``, a class of its own) is refused
    with :data:`~privmed.errors.CHECKPOINT_UNSAFE` before it runs."""
    import pickle
    import re
    import zipfile

    import torch

    try:
        with torch.serialization.safe_globals(_checkpoint_types()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise PrivmedError(CHECKPOINT_UNREADABLE.format(path=path, reason=str(err).splitlines()[0][:200],
                                                            fix=fix)) from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"a call to '{found.group(1)}'" if found else "something other than weights, numbers and text"
        raise PrivmedError(CHECKPOINT_UNSAFE.format(path=path, what=what, fix=fix)) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise PrivmedError(CHECKPOINT_UNREADABLE.format(path=path, reason=str(err).splitlines()[0][:200],
                                                        fix=fix)) from None
    if not isinstance(state, dict):
        raise PrivmedError(CHECKPOINT_UNREADABLE.format(path=path, reason=f"holds a {type(state).__name__}", fix=fix))
    return state


def _checkpoint_types() -> list:
    """What a checkpoint may hold beyond torch's own safe types (tensors, dicts, lists, numbers, strings):
    numpy scalars, as a number of a history row may be. Nothing that can call code."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    scalars = (np.float64, np.float32, np.int64, np.int32, np.bool_)
    return [np.dtype, core.multiarray.scalar, *(type(np.dtype(t)) for t in scalars)]


#: the longest class name privmed writes as a folder name (and again in its files' names)
MAX_FOLDER_NAME = 100


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` (a class name) cannot be a folder name of its own, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if "/" in name or "\\" in name or name.strip(".") == "":
        return "it holds a path separator or is '.' or '..'"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it holds a control character"
    if len(name) > MAX_FOLDER_NAME:
        return f"it is {len(name)} characters long"
    return None


def check_folder_names(names, where: str) -> None:
    """Refuse, with :data:`~privmed.errors.CLASS_NAME_UNSAFE`, class names that cannot be folder names
    (checked before anything is written: a name like '../..' would write outside the output folder)."""
    for name in names:
        why = folder_name_problem(name)
        if why is not None:
            raise PrivmedError(CLASS_NAME_UNSAFE.format(name=name, where=where, why=why, limit=MAX_FOLDER_NAME))


def check_writable(path: str | Path) -> None:
    """Refuse early, before any work, an output folder that cannot be created or written: the path itself
    when it exists, otherwise its nearest existing parent. Creates nothing."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        reason = "it is a file" if existing == path else f"'{existing}' is a file, not a folder"
        raise PrivmedError(OUT_NOT_WRITABLE.format(path=path, reason=reason))
    try:  # os.access says yes to root on a read-only or virtual file system: try a file, leave none
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise PrivmedError(OUT_NOT_WRITABLE.format(path=path, reason=f"'{existing}' is not writable "
                                                                     f"({err.strerror})")) from None


def append_log(run: Path, line: str) -> None:
    atomic.append_text(Path(run) / LOG, line.rstrip("\n") + "\n")


def append_epoch_log(run: Path, row: dict[str, Any]) -> None:
    """One epoch's history row as a log line: ``key=value`` pairs, numbers to 4 significant digits."""
    append_log(run, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def checkpoint_to_resume(out: Path, identity: dict[str, Any], stored_identity: Callable[[dict], dict[str, Any]],
                         *, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, check that the configuration is unchanged
    (``stored_identity`` turns the stored ``config.yaml`` into the comparable form) and
    return the last checkpoint."""
    last = out / CHECKPOINTS / LAST
    if stopped_before_first_checkpoint(out):  # with or without --resume: nothing of it was released
        _restart_note(out)
        return None
    if not resume:
        if (out / CONFIG).exists():
            raise PrivmedError(OUT_NOT_EMPTY.format(path=out))
        return None
    if not last.is_file():
        raise PrivmedError(RESUME_NOTHING.format(path=out))
    seal.verify(out, [CONFIG])
    changes = config_changes(stored_identity(read_config_dict(out)), identity)
    if changes:
        raise PrivmedError(RESUME_CONFIG_CHANGED.format(path=out, changes="; ".join(changes)))
    return load_checkpoint(last, fix="Drop --resume and start the run again in a new --out (the spent privacy "
                                     "budget of the interrupted run is lost with it).")


def stopped_before_first_checkpoint(out: Path) -> bool:
    """A folder where a run (or generator) started, wrote its configuration, and stopped before its first
    checkpoint and before its results: no model of it exists, nothing was released, it can start again."""
    out = Path(out)
    return ((out / CONFIG).is_file() and not (out / CHECKPOINTS / LAST).is_file()
            and not (out / METRICS).is_file() and not (out / PRIVACY).is_file())


def _restart_note(out: Path) -> None:
    note = RESTARTED.format(path=out)
    logging.getLogger(__name__).warning(note)
    append_log(out, note)


def config_changes(a: dict, b: dict, prefix: str = "") -> list[str]:
    """``section.key: old -> new`` for every leaf that differs between two nested dicts."""
    changes = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            changes += config_changes(va, vb, f"{prefix}{key}.")
        elif va != vb:
            changes.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return changes


def _atomic_write(path: Path, text: str) -> None:
    atomic.write_text(path, text)  # a temporary file renamed over path: whole or not at all


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return str(obj)
    return obj
