"""``privmed study``, ``report`` and ``demo``: grids of runs and their report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from privmed.errors import WORKERS_NOT_POSITIVE, PrivmedError
from privmed.tracking import tracker_from_args

from .options import TRACKING_OPTIONS, Option, add_command


#: every option of ``privmed study``; with --mlflow the study is an MLflow run, each of its runs nested in it
STUDY_OPTIONS = [
    Option("study", help="study file (YAML): data, strategies, epsilons, seeds, fairness attributes"),
    Option("--out", help="study folder; re-run the same command to resume", required=True),
    Option("--workers", help="worker processes (default: the study's 'workers', else 1)", type=int),
    Option("--devices", help="GPU indices; each worker process is pinned to one of them in turn (default: none)",
           metavar="0,1"),
    Option("--no-report", help="do not write report.html/report.md at the end", action="store_true"),
    *TRACKING_OPTIONS,
]
#: every option of ``privmed report``
REPORT_OPTIONS = [Option("out", help="study folder")]
#: every option of ``privmed demo``
DEMO_OPTIONS = [
    Option("--out", help="study folder (default demo); re-run to resume", default="demo"),
    Option("--workers", help="worker processes (default: the demo study's 'workers')", type=int),
]


def add_parsers(sub) -> None:
    """The ``study``, ``report`` and ``demo`` commands."""
    add_command(sub, "study", STUDY_OPTIONS, cmd_study,
                help="run a study: a grid of runs from one YAML file (resumable)")
    add_command(sub, "report", REPORT_OPTIONS, cmd_report,
                help="write a study's report.html and report.md (from what has finished)")
    add_command(sub, "demo", DEMO_OPTIONS, cmd_demo, help="built-in data -> small study -> report (a few minutes)")


def cmd_study(args: argparse.Namespace) -> int:
    """``privmed study``: run (or resume) a study file's grid, then write its report."""
    from privmed.study import load_study

    devices = _devices(args.devices)  # refused before the study is read
    study, raw = load_study(args.study)
    with tracker_from_args(args, params=raw, run_name=Path(args.out).name) as tracker:  # no-op without --mlflow
        status = _run_and_report(study, raw, Path(args.out), args.workers, report=not args.no_report, devices=devices)
        tracker.log_study(Path(args.out), [Path(c.config.out) for c in study.cells(Path(args.out))])
    return status


def _devices(text: str | None) -> tuple[str, ...]:
    from privmed.training.devices import parse_devices

    return parse_devices(text) if text else ()


def cmd_report(args: argparse.Namespace) -> int:
    """``privmed report``: the report of what has finished in a study folder."""
    from privmed.report import write_report

    html, md = write_report(Path(args.out))
    print(f"report: {html} (and {md.name})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``privmed demo``: the built-in demo study (``privmed/study/demo.yaml``) and its report."""
    from importlib.resources import files

    from privmed import safe_yaml
    from privmed.study import study_from_dict

    raw = safe_yaml.load(files("privmed.study").joinpath("demo.yaml").read_text(), "privmed/study/demo.yaml")
    return _run_and_report(study_from_dict(raw), raw, Path(args.out), args.workers, report=True)


def _run_and_report(study, raw: dict, out: Path, workers: int | None, *, report: bool,
                    devices: tuple[str, ...] = ()) -> int:
    from privmed import rundir
    from privmed.report import write_report
    from privmed.study import run_study

    if workers is not None and workers < 1:
        raise PrivmedError(WORKERS_NOT_POSITIVE.format(n=workers))
    rundir.check_writable(out)
    t0 = time.perf_counter()
    result = run_study(study, raw, out=out, workers=workers, devices=devices)
    outcomes = result.outcomes
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished ({time.perf_counter() - t0:.0f} s); "
          f"results: {out / 'results.csv'}")
    if report:
        html, _ = write_report(out, tables=result.tables)
        print(f"report: {html}")
    for outcome in failed:
        print(f"FAILED {outcome.run_id}: {outcome.error.splitlines()[0]} (details: {out / 'failed'})", file=sys.stderr)
    return 1 if failed else 0
