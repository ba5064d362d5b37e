"""The benchmark script still runs: ``benchmarks/run.py --smoke`` covers every shape in both modes."""

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
