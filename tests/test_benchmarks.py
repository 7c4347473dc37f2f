"""`make bench` keeps working: the benchmark runs end to end on a few round trips."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_the_benchmark_runs_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "-n", "20"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "raw websockets echo round trip (baseline)" in done.stdout
    assert "x echo" in done.stdout and "x (healthz + echo)" in done.stdout
