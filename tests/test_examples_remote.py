"""examples/remote_hosts.py runs as README.rst says: a flow spread over the real sshd hosts h1, h2, h3
on a PostgreSQL store, printing where each task ran; and it refuses an SQLite store before anything
starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import sshhosts

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "remote_hosts.py"
TIMEOUT = 40  # seconds the example may take (it takes about 3)


def run_example(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=REPO)


def table(stdout: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    """The example's closing table: (step, sequence) -> (status, host, ran on)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["step", "sequence"])
    rows = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if not fields:
            break
        step, sequence, status, host, *ran_on = fields
        rows[(step, sequence)] = (status, host, " ".join(ran_on))
    return rows


@pytest.mark.ssh
@pytest.mark.timeout_seconds(TIMEOUT + 15)
def test_example_spreads_the_flow_over_the_hosts(ssh_hosts, postgres_database, tmp_path):
    done = run_example("--store", postgres_database, "--ssh-config", ssh_hosts.config,
                       "--logdir", str(tmp_path / "logs"), "--quiet", "h1", "h2", "h3")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "on h1, h2, h3" in done.stdout and ": success" in done.stdout, done.stdout

    rows = table(done.stdout)
    expected = {("prepare", "1"): "h1", ("report", "1"): "h3"}  # report: hosts h3, h2, h1; runs once, on h3
    for copy in ("h1", "h2"):  # the container on two hosts: one copy per host, each running all iterations
        expected[(f"batch@{copy}", "1")] = copy
        for seq in ("1.1", "1.2"):
            expected[(f"batch@{copy}_extract", seq)] = copy
            expected[(f"batch@{copy}_transform", seq)] = copy
    here = socket.gethostname()
    assert set(rows) == {*expected, ("summary", "1")}, rows
    for key, host in expected.items():
        status, placed, ran_on = rows[key]
        assert (status, placed) == ("success", host), (key, rows[key])
        if key[0] not in ("batch@h1", "batch@h2"):  # a processing step: its function said where it ran
            assert ran_on == host, (key, rows[key])
    assert rows[("summary", "1")][0] == "success" and rows[("summary", "1")][2] == here

    # the agents are gone once run() returned: nothing of the run is left running on the hosts
    for name in ssh_hosts.names:
        agents = [pid for pid in ssh_hosts.session_pids(name)
                  if any("agent.main()" in part for part in sshhosts._cmdline(pid))]
        assert not agents, f"agent processes left on {name}: {agents}"


def test_example_refuses_a_store_other_hosts_cannot_reach(tmp_path):
    done = run_example("--store", str(tmp_path / "local.db"), "--logdir", str(tmp_path / "logs"), "--quiet",
                       "h1", "h2")
    assert done.returncode == 2, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "the run did not start" in done.stderr and "other hosts cannot reach" in done.stderr, done.stderr
    assert "sequence" not in done.stdout and not (tmp_path / "local.db").exists(), done.stdout
