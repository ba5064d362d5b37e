"""The real Dask cluster of the ``dask_cluster`` fixture (tests/daskcluster.py), and its fault injection.

The scheduler lists workers w1, w2, w3; a task pinned to a worker runs there and imports this
repository's test modules; the scheduler runs with ``allowed-failures`` 0, so a task whose worker
is killed fails at once with ``KilledWorker``, and the worker can be started again under its name;
and a set of its own, started and stopped from the command line or in-process, leaves no process
behind and none of its processes is a child of the test process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import daskcluster
from procs import is_alive, proc_stat

distributed = pytest.importorskip("distributed", reason="[required] dask cluster: distributed is not installed")
dask = pytest.importorskip("dask")

pytestmark = [pytest.mark.dask, pytest.mark.timeout_seconds(60)]

SCRIPT = Path(__file__).resolve().parent / "daskcluster.py"


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition"):
    """Poll ``predicate`` until it returns something true; fail (not hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.02)
    return value


def worker_name() -> str:
    """Run in a task: the name of the worker running it."""
    return distributed.get_worker().name


def where_am_i() -> tuple[str, int, str]:
    """Run in a task: the worker's name, its pid, and the file of a test helper module it imports."""
    import procs  # from <repo>/tests, on the workers' PYTHONPATH

    return distributed.get_worker().name, os.getpid(), procs.__file__


def touch_and_sleep(path: str, seconds: float) -> str:
    """Run in a task: create ``path`` (the task has started), then sleep."""
    Path(path).touch()
    time.sleep(seconds)
    return "slept"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def assert_no_child_of_mine(pids: set[int]) -> None:
    assert pids, "no processes to check"
    assert [pid for pid in pids if proc_stat(pid) and proc_stat(pid)[1] == os.getpid()] == []


def test_the_scheduler_lists_workers_w1_w2_w3(dask_cluster):
    assert dask_cluster.names == ["w1", "w2", "w3"]
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", dask_cluster.address)
    with distributed.Client(dask_cluster.address, timeout=10) as client:
        workers = client.scheduler_info()["workers"].values()
        assert sorted(worker["name"] for worker in workers) == ["w1", "w2", "w3"]
        assert {worker["nthreads"] for worker in workers} == {daskcluster.NTHREADS}
    assert_no_child_of_mine(dask_cluster.processes())


def test_a_task_pinned_to_w2_runs_on_w2_and_imports_the_test_helpers(dask_cluster):
    with distributed.Client(dask_cluster.address, timeout=10) as client:
        futures = [client.submit(worker_name, workers=[name], allow_other_workers=False, pure=False)
                   for name in ("w2", "w1", "w3", "w2")]
        assert client.gather(futures) == ["w2", "w1", "w3", "w2"]
        name, pid, helper = client.submit(where_am_i, workers=["w2"], pure=False).result()
    assert (name, pid) == ("w2", dask_cluster.worker_pid("w2"))
    assert Path(helper).resolve() == Path(__file__).resolve().parent / "procs.py"


def test_the_scheduler_allows_no_failures_and_waits_5_s_for_workers(dask_cluster):
    with distributed.Client(dask_cluster.address, timeout=10) as client:
        settings = client.run_on_scheduler(lambda dask_scheduler: (
            dask.config.get("distributed.scheduler.allowed-failures"),
            dask.config.get("distributed.scheduler.no-workers-timeout")))
    assert settings == (0, "5s")


def test_a_killed_worker_fails_its_task_with_killed_worker_and_restarts(dask_cluster, tmp_path):
    old_pid = dask_cluster.worker_pid("w3")
    started = tmp_path / "started"
    try:
        with distributed.Client(dask_cluster.address, timeout=10) as client:
            future = client.submit(touch_and_sleep, str(started), 60, workers=["w3"], allow_other_workers=False,
                                   pure=False)
            wait_until(started.exists, what="the task running on w3")
            killed = dask_cluster.kill_worker("w3")
            assert killed == {old_pid}
            assert not is_alive(old_pid) and not dask_cluster.running("w3")
            with pytest.raises(distributed.KilledWorker):
                future.result(timeout=10)
            wait_until(lambda: "w3" not in dask_cluster.workers(), what="the scheduler dropping w3")
            assert dask_cluster.kill_worker("w3") == set()  # already dead: nothing to kill

            new_pid = dask_cluster.restart_worker("w3")
            assert new_pid != old_pid and new_pid == dask_cluster.worker_pid("w3") and dask_cluster.running("w3")
            assert dask_cluster.workers()["w3"]["status"] == "running"
            assert client.submit(worker_name, workers=["w3"], pure=False).result(timeout=10) == "w3"
        assert_no_child_of_mine({new_pid})
    finally:
        if not dask_cluster.running("w3"):  # leave the session's cluster whole for the next test
            dask_cluster.restart_worker("w3")


def test_the_command_line_starts_and_stops_a_set(tmp_path, dask_cluster):
    directory = (tmp_path / "cli").resolve()
    processes: set[int] = set()
    try:
        # captured through pipes: a daemon holding one open would hang this call (and `$(...)` in .ci/run)
        done = subprocess.run([sys.executable, str(SCRIPT), "start", str(directory)], capture_output=True,
                              text=True, timeout=60)
        cluster = daskcluster.DaskCluster(directory)
        processes = cluster.processes()
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{cluster.address}\n", "")
        assert cluster.address != dask_cluster.address
        assert sorted(cluster.workers()) == ["w1", "w2", "w3"]
        assert processes == {cluster.scheduler_pid, *map(cluster.worker_pid, cluster.names)}
        assert_no_child_of_mine(processes)
    finally:
        stopped = subprocess.run([sys.executable, str(SCRIPT), "stop", str(directory)], capture_output=True,
                                 text=True, timeout=60)
    assert (stopped.returncode, stopped.stdout, stopped.stderr) == (0, "", "")
    assert [pid for pid in processes if is_alive(pid)] == []
    assert dask_cluster.workers().keys() == {"w1", "w2", "w3"}  # the session's set is untouched


def test_stop_leaves_no_process_behind(tmp_path):
    directory = tmp_path / "inproc"
    try:
        cluster = daskcluster.start(directory, workers=("a", "b"))
        assert sorted(cluster.workers()) == ["a", "b"]
        with distributed.Client(cluster.address, timeout=10) as client:
            assert client.submit(worker_name, workers=["b"], pure=False).result(timeout=10) == "b"
        processes = cluster.processes()
        assert len(processes) == 3
        assert_no_child_of_mine(processes)
    finally:
        daskcluster.stop(directory)
    assert [pid for pid in processes if is_alive(pid)] == []
    assert cluster.processes() == set() and not cluster.scheduler_running()
    leftovers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if is_alive(pid) and str(directory.resolve()) in cmdline(pid)]
    assert leftovers == []
    daskcluster.stop(directory)  # a second stop is fine
