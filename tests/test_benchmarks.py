"""`make bench` keeps working: every figure runs end to end at small sizes and is written out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e
def test_the_benchmark_runs_every_figure_and_writes_its_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "-n", "30", "--quick"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    figures = [row["figure"] for row in results["rows"]]
    for expected in (
        "small read_files, internal API: p50",
        "small read_files via REST (keep-alive): p50",
        "calls/s, 1 workspace, 64 in flight",
        "search_files over 500 files",
        "hub start to answering /healthz",
        "client start to connected",
    ):
        assert expected in figures, figures
    for row in results["rows"]:
        assert row["value"] > 0, row
        if row["baseline"]:
            assert row["baseline_value"] > 0 and row["ratio"] > 0, row
    assert "baseline: echo p50 (another process)" in done.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("options", [[], ["--chunks", "20", "--stream"]])
def test_the_chat_turn_benchmark_runs(options: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.chat_turns", "-n", "3", *options],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "a new conversation each turn" in done.stdout and "one conversation growing" in done.stdout
