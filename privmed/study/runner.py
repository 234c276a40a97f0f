"""``privmed study``: make a study's generators, then run its grid on worker processes.

Re-running the same command is how a study resumes: a finished run (its records written and sealed,
which training does last) is skipped, an interrupted one continues from its last checkpoint with the
accountant's spend restored (``privmed train --resume``), and one that stopped before its
first checkpoint starts again (nothing of it was released). A run that fails is recorded with
its error in ``OUT/status.json`` and ``OUT/failed/<run>.txt`` and does not stop the others;
the next invocation tries it again.

Layout of ``OUT``: ``study.yaml`` (the study file as given), ``generators/<name>/`` (a
generator folder and its ``samples/``; for the phantom, ``samples/`` alone), ``runs/<run id>/``
(ordinary run directories, each with ``evaluations/<external name>/`` when the study has
external test sets), ``status.json``, ``timing.json`` (wall time of every invocation) and the
tables of :mod:`privmed.study.results`.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from privmed import rundir
from privmed.errors import WORKER_KILLED, PrivmedError
from privmed.threads import threads_per_worker
from privmed.workers import die_with_parent

from .config import Cell, GeneratorSpec, StudyConfig, generator_dir, generator_samples
from .lifeline import study_lock
from .results import StudyTables, collect
from .state import (CHANGED, STUDY_FILE, CellOutcome, audit_config, config_drift, evaluated, finished, log_timing,
                    record, sync_status)

Progress = Callable[[str], None]
_STARTED = None  # in a worker process: the queue on which it names each run it begins


@dataclass(frozen=True)
class StudyResult:
    """One outcome per cell (in grid order) and the study's tables, as written to ``OUT``."""

    outcomes: list[CellOutcome]
    tables: StudyTables


def run_study(study: StudyConfig, raw: dict[str, Any], *, out: Path, workers: int | None = None,
              progress: Progress = print, devices: tuple[str, ...] = ()) -> StudyResult:
    """Run every generator and cell of ``study`` not finished yet, then write the study's tables
    (``results.csv`` and the fairness tables). ``devices``: GPU indices the workers are pinned to
    in turn (:mod:`privmed.training.devices`)."""
    out = Path(out)
    with study_lock(out):
        return _run_locked(study, raw, out=out, workers=workers, progress=progress, devices=devices)


def _run_locked(study: StudyConfig, raw: dict[str, Any], *, out: Path, workers: int | None,
                progress: Progress, devices: tuple[str, ...] = ()) -> StudyResult:
    rundir.write_yaml(out / STUDY_FILE, raw)
    workers = workers or study.workers
    started = time.time()
    cells = study.cells(out)
    _check_attributes(study)
    if study.generators:  # trained here, before the workers start: as many threads as one worker gets
        import torch

        torch.set_num_threads(threads_per_worker(workers))
    for spec in study.generators:
        GENERATOR_MAKERS[spec.kind](spec, generator_dir(out, spec.name), generator_samples(out, spec.name), progress)
    finished = sync_status(out, cells, study)
    todo = [c for c in cells if c.run_id not in finished]
    progress(f"study {study.name}: {len(cells)} runs, {len(cells) - len(todo)} already finished, "
             f"{len(todo)} to run" + (f" on {min(workers, len(todo))} worker(s)" if todo else ""))
    outcomes = {c.run_id: CellOutcome(c.run_id, "skipped") for c in cells if c not in todo}
    for k, outcome in enumerate(_run_cells(todo, study, out, workers, devices), 1):
        outcomes[outcome.run_id] = outcome
        record(out, outcome)
        progress(f"[{k}/{len(todo)}] {outcome.run_id}: {outcome.status} ({outcome.seconds:.0f} s)"
                 + (f" -- {outcome.error.splitlines()[0]}" if outcome.error else ""))
    _audit_runs(study, cells, out, workers, progress)
    log_timing(out, started, workers, sum(o.status == "finished" for o in outcomes.values()))
    sync_status(out, cells, study)
    return StudyResult([outcomes[c.run_id] for c in cells], collect(study, out))


def _run_cells(cells: list[Cell], study: StudyConfig, out: Path, workers: int, devices: tuple[str, ...] = ()):
    from privmed.training.devices import pin, worker_slots

    if workers == 1 or len(cells) <= 1:
        pin(next(iter(devices), None))
        for cell in cells:
            yield _run_cell(cell, study.external)
        return
    context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    saved = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # workers inherit it at start: no interleaved bars; one line per run instead
    todo = list(cells)
    try:
        while todo:  # a pool whose worker was killed is broken: its runs fail, the others go on in a new pool
            started, done = context.Queue(), set()
            slots = context.Queue()
            for device in worker_slots(devices, workers):
                slots.put(device)
            try:
                yield from _pool_round(todo, study, workers, context, slots if devices else None, started, done)
                return
            except BrokenProcessPool:
                killed = (_drain(started) - done) or {c.run_id for c in todo} - done  # none begun: stop
                yield from (_killed(c) for c in todo if c.run_id in killed)
                todo = [c for c in todo if c.run_id not in done and c.run_id not in killed]
    finally:
        os.environ.pop("TQDM_DISABLE") if saved is None else os.environ.update(TQDM_DISABLE=saved)


def _pool_round(cells: list[Cell], study: StudyConfig, workers: int, context, slots, started, done: set):
    """Run ``cells`` on one pool of ``workers`` processes, adding each finished run's id to ``done``; raises
    BrokenProcessPool when a worker dies (``started`` then names the runs the workers had begun)."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(threads_per_worker(workers), slots, started)) as pool:
        futures = [pool.submit(_run_cell, cell, study.external) for cell in cells]
        for future in as_completed(futures):
            outcome = future.result()
            done.add(outcome.run_id)
            yield outcome


def _killed(cell: Cell) -> CellOutcome:
    return CellOutcome(cell.run_id, "failed", 0.0, WORKER_KILLED.format(run=cell.run_id))


def _drain(queue) -> set[str]:
    """What a queue holds now."""
    import queue as queues

    found = set()
    while True:
        try:
            found.add(queue.get(timeout=0.5))
        except queues.Empty:
            return found


def _init_worker(threads: int, slots=None, started=None) -> None:
    import warnings

    global _STARTED
    _STARTED = started

    from privmed.training.devices import pin

    pin(slots.get() if slots is not None else None)  # before torch touches CUDA
    import torch

    die_with_parent()

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", module="opacus")
    warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")


def _run_cell(cell: Cell, external) -> CellOutcome:
    """Train (or resume) one run and evaluate it on the external sets; never raises."""
    from privmed.evaluation.external import evaluate_run
    from privmed.training.trainer import train

    t0 = time.perf_counter()
    run = Path(cell.config.out)
    if _STARTED is not None:  # a worker: say which run it begins (the study's record if the worker is killed)
        _STARTED.put(cell.run_id)
    try:
        changes = config_drift(cell)
        if changes:
            raise PrivmedError(CHANGED.format(run=run, changes="; ".join(changes)))
        if not finished(run):
            train(cell.config, resume=_resume_or_clear(run))
        for spec in external:
            if not evaluated(run, spec):
                evaluate_run(run, data=spec.path, split=spec.split, name=spec.name,
                             n_resamples=cell.config.training.bootstrap_resamples)
        return CellOutcome(cell.run_id, "finished", time.perf_counter() - t0)
    except PrivmedError as err:
        return CellOutcome(cell.run_id, "failed", time.perf_counter() - t0, str(err))
    except Exception as err:  # noqa: BLE001 -- one failed run must not stop the study
        detail = "".join(traceback.format_exception(err)[-6:])
        return CellOutcome(cell.run_id, "failed", time.perf_counter() - t0, f"{type(err).__name__}: {err}\n{detail}")


def _audit_runs(study: StudyConfig, cells: list[Cell], out: Path, workers: int, progress: Progress) -> None:
    """Membership audits of the chosen finished runs; shadows shared by runs with the same recipe."""
    from privmed.audit.membership import audit_path, audit_run

    config = audit_config(study, workers)
    todo = [c for c in cells if study.audited(c) and finished(Path(c.config.out))
            and not audit_path(Path(c.config.out), config).is_file()] if config else []
    for k, cell in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            result = audit_run(Path(cell.config.out), config=config, shadow_dir=out / "shadows")
            bounds = [a["eps_lower_bound"] for a in result["attacks"] if a["randomised"]]
            outcome = CellOutcome(f"{cell.run_id}:audit", "finished", time.perf_counter() - t0)
            found = (f"one-run epsilon lower bound {max(bounds):.3g}" if bounds
                     else "train-vs-test diagnostic only (confounded, no epsilon bound)")
            progress(f"[audit {k}/{len(todo)}] {cell.run_id}: {found} ({outcome.seconds:.0f} s)")
        except Exception as err:  # noqa: BLE001 -- one failed audit must not stop the others
            outcome = CellOutcome(f"{cell.run_id}:audit", "failed", time.perf_counter() - t0,
                                  str(err) if isinstance(err, PrivmedError) else f"{type(err).__name__}: {err}")
            progress(f"[audit {k}/{len(todo)}] {cell.run_id}: failed -- {outcome.error.splitlines()[0]}")
        record(out, outcome)


def _train_and_sample_gan(spec: GeneratorSpec, folder: Path, samples: Path, progress: Progress) -> None:
    """``privmed synth train`` on the private training split (resumed if interrupted), then ``synth sample``."""
    from privmed.synth.sample import sample
    from privmed.synth.training import train_generator

    if not (folder / "generator.pt").is_file():
        resume = _resume_or_clear(folder)
        progress(f"generator {spec.name}: training{' (resuming)' if resume else ''}")
        train_generator(dataclasses.replace(spec.config, out=str(folder)), resume=resume)
    if not (samples / "manifest.csv").is_file():
        shutil.rmtree(samples, ignore_errors=True)
        sample(folder, n=spec.samples, out=samples, seed=spec.sample_seed)
        progress(f"generator {spec.name}: {spec.samples} samples in {samples}")


def _write_phantom(spec: GeneratorSpec, folder: Path, samples: Path, progress: Progress) -> None:
    """privmed's phantom at the generator's image size; its origin record (written last) says it costs nothing."""
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    if (samples / rundir.PRIVACY).is_file():
        return
    shutil.rmtree(samples, ignore_errors=True)
    write_phantom_dataset(samples, PhantomSpec(n_samples=spec.samples, image_size=spec.config.data.image_size,
                                               seed=spec.sample_seed))
    progress(f"generator {spec.name}: {spec.samples} phantom images in {samples} (no patient data)")


#: how each kind of study generator is made (``GeneratorSpec.kind``)
GENERATOR_MAKERS: dict[str, Callable[[GeneratorSpec, Path, Path, Progress], None]] = {
    "gan": _train_and_sample_gan, "phantom": _write_phantom}


def _resume_or_clear(folder: Path) -> bool:
    """True when ``folder`` holds a checkpoint to resume from; otherwise remove what is there (a
    run that stopped before its first checkpoint released nothing) so training starts afresh."""
    if (folder / rundir.CHECKPOINTS / rundir.LAST).is_file():
        return True
    if folder.exists():
        shutil.rmtree(folder)
    return False


def _check_attributes(study: StudyConfig) -> None:
    """Fairness attributes must be columns of the data: say so before hours of training."""
    if not study.fairness.attributes:
        return
    from privmed.data.sources import load_dataset

    config = study.cells(Path("OUT"))[0].config
    data = load_dataset(config.data)
    missing = [a for a in study.fairness.attributes if a not in data.attribute_columns]
    if missing:
        raise PrivmedError(f"fairness attribute(s) {missing} are not columns of the data '{data.name}' "
                           f"(attribute columns: {list(data.attribute_columns)}); fix fairness.attributes.")


