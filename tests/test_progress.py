"""Slow steps report progress: a bar on a terminal, a bounded number of plain log lines otherwise."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from privmed import progress as progress_module
from privmed.progress import progress

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    return fake


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == progress_module.LOGGER]


def test_a_slow_loop_writes_a_bounded_number_of_lines_when_stderr_is_not_a_terminal(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress_module.LOGGER)
    for _ in progress(range(5000), desc="reading images", unit="img"):  # 5000 s: 83 minutes
        clock.now += 1.0
    written = lines(caplog)
    assert 5 <= len(written) <= progress_module.STEPS + 1, written
    assert written[-1].startswith("reading images: 5000/5000 img (100%), 5000 s done")
    assert any("(50%)" in line for line in written)


def test_a_fast_loop_writes_nothing(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress_module.LOGGER)
    for _ in progress(range(5000), desc="reading images", unit="img"):
        clock.now += 0.0001
    assert lines(caplog) == []


def test_a_long_loop_without_a_total_writes_ever_fewer_lines(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress_module.LOGGER)
    bar = progress(desc="batches", unit="batch")
    for _ in range(36_000):  # ten hours, a line at first every 30 s
        clock.now += 1.0
        bar.update()
    bar.close()
    assert 10 < len(lines(caplog)) < 30


def test_progress_reaches_a_log_file_when_stderr_is_redirected(tmp_path):
    """A batch job writing stderr to a file gets a few plain lines, not one per refresh (and no bar)."""
    code = ("import time\nfrom privmed import progress as p\np.QUIET_SECONDS = 0\n"
            "for _ in p.progress(range(400), desc='computing frozen features', unit='chunk'):\n"
            "    time.sleep(0.001)\n")
    log = tmp_path / "study.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TQDM_DISABLE", None)
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stderr=fh, env=env, check=True, timeout=120)
    written = [line for line in log.read_text().splitlines() if line]
    assert 2 <= len(written) <= progress_module.STEPS + 1, written
    assert all("computing frozen features" in line and "\r" not in line for line in written)
    assert "400/400 chunk (100%)" in written[-1]


def test_a_disabled_bar_writes_nothing(clock, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=progress_module.LOGGER)
    monkeypatch.setenv("TQDM_DISABLE", "1")  # a study's worker processes
    for _ in progress(range(100), desc="batches"):
        clock.now += 10
    assert lines(caplog) == []
