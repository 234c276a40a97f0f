"""Threads: OpenMP waits without spinning, and study workers share the cores instead of each taking all."""

import os
import subprocess
import sys
from pathlib import Path

from privmed import threads

ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_sets_a_passive_openmp_wait_policy_before_torch_starts():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = "import privmed.cli, os, sys; sys.stdout.write(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's own choice wins
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out == "ACTIVE"


def test_workers_share_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.threads_per_worker(2) == 1 and threads.threads_per_worker(1) == 2
    assert threads.threads_per_worker(5) == 1
    monkeypatch.setattr(threads, "available_cpus", lambda: 16)
    assert threads.threads_per_worker(4) == 4
