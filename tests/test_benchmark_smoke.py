"""The benchmark scripts still run: ``benchmarks/run.py --smoke`` covers every shape in both modes,
``benchmarks/fanout.py`` runs with a small N."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHAPES = ("independent", "chain", "container", "nested")
MODES = ("thread", "process")
FLOORS = ("thread_serial", "thread_all", "process_serial", "process_all")
TIMEOUT = 120  # seconds the smoke run may take


@pytest.mark.timeout_seconds(TIMEOUT + 30)  # the subprocess timeout below comes first
def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    for mode in MODES:
        for shape in SHAPES:
            assert re.search(rf"^{mode}\s+{shape}\s+10\s", proc.stdout, re.M), \
                f"no {mode} {shape} row in:\n{proc.stdout}"
    assert "per-task INFO logging is off" in proc.stdout

    results = json.loads(out.read_text())
    rows = results["rows"]
    assert {(r["mode"], r["shape"]) for r in rows} == {(m, s) for m in MODES for s in SHAPES}
    for row in rows:
        assert row["wall_s"] > 0, row
        assert row["us_per_step"] > 0 and row["peak_mb"] > 0, row
    for name in FLOORS:
        assert results["floors"][name]["per_call_us"] > 0, name
    assert results["hop"]["median_ms"] >= 0
    assert results["import"]["sequent_ms"] > 0
    assert not results["failures"]


FANOUT_N = 100  # items in the smoke run of benchmarks/fanout.py


@pytest.mark.timeout_seconds(TIMEOUT + 30)
def test_fanout_benchmark_smoke(tmp_path):
    """``benchmarks/fanout.py`` with a small N: both flows run (every task succeeded and got its item),
    the report gives ms per task for both, the ratio and a verdict, and the JSON holds the same."""
    out = tmp_path / "fanout.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fanout.py"), "--n", str(FANOUT_N),
                           "--repeat", "1", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for shape in ("independent", "fanout"):
        assert re.search(rf"^{shape}\s+{FANOUT_N}\s", proc.stdout, re.M), f"no {shape} row in:\n{proc.stdout}"
    assert re.search(r"^\s+(PASS|FAIL)\s+fan-out ms per task vs independent", proc.stdout, re.M), proc.stdout
    assert "per-task INFO logging is off" in proc.stdout

    results = json.loads(out.read_text())
    rows = results["rows"]
    assert set(rows) == {"independent", "fanout"}
    assert all(row["n"] == FANOUT_N and row["ms_per_task"] > 0 for row in rows.values()), rows
    assert results["ratio"] == pytest.approx(rows["fanout"]["ms_per_task"] / rows["independent"]["ms_per_task"])
    assert [t["result"] for t in results["targets"]] in (["PASS"], ["FAIL"])
    assert not results["failures"]
