"""Stopping one running task (``Executor.signal_task``, what a per-step timeout uses), and the tries
of a task on a remote agent.

A signal to one task reaches its whole process group (the task and the programs it started) and no
other task; an executor that cannot stop one task (threads) says so.  Tasks here start a ``sleep 60``
grandchild and tell the test their pids through a file; the test checks /proc.  The executors are
real: a ProcessExecutor with its launcher, an agent on an SSH host (tests/sshhosts.py), an agent
beside a worker of the Dask cluster (tests/daskcluster.py), each recording in a real store.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

TESTS = str(Path(__file__).resolve().parent)
sys.path.insert(0, TESTS)
from elsewhere import gone, wait_for  # noqa: E402
from procs import is_alive  # noqa: E402
from sequent.eventor.context import TaskContext  # noqa: E402
from sequent.eventor.executors import InvokeExecutor, ProcessExecutor, ThreadExecutor  # noqa: E402
from sequent.eventor.executors.base import Executor, RunInfo  # noqa: E402
from sequent.eventor.model import StepDef  # noqa: E402
from sequent.eventor.outcome import OutcomeStatus, TaskOutcome  # noqa: E402

MODULE = "test_signal_task"  # this module, as the agents on other hosts import it (tests/ on their path)
GONE_WITHIN = 15.0  # seconds a stopped process gets to be seen gone


# --------------------------------------------------------------------------------------------
# Task functions (module level: forked by the launcher, or imported by an agent elsewhere)


def _write_json(path: str, data: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(path + ".tmp", path)


def spawn_sleep(ready: str, release: str) -> str:
    """Start ``sleep 60`` (a grandchild of the launcher), report both pids, wait for ``release``; say
    whether the sleep still ran then (a task that finishes with its program untouched)."""
    sleeper = subprocess.Popen(["sleep", "60"])
    _write_json(ready, {"task": os.getpid(), "sleep": sleeper.pid})
    while not os.path.exists(release):
        time.sleep(0.02)
    return "sleep running" if sleeper.poll() is None else f"sleep ended with {sleeper.returncode}"


def stop_on_sigterm(ready: str) -> None:
    """Turn SIGTERM into an exception of its own, report the pid, and wait."""
    def stop(signum: int, frame: Any) -> None:
        raise RuntimeError("asked to stop by SIGTERM")

    signal.signal(signal.SIGTERM, stop)
    _write_json(ready, {"task": os.getpid()})
    time.sleep(60)


def fail_try(message: str) -> None:
    raise ValueError(message)


def succeed(text: str) -> str:
    return text


# --------------------------------------------------------------------------------------------
# Helpers


def wait_ready(path: Path, timeout: float = 60.0) -> dict:
    """The pids a task wrote once its programs had started."""
    wait_for(path.exists, timeout, f"{path} written")
    return json.loads(path.read_text())


def ctx_for(step: str, run_id: str = "r", try_number: int = 1, final_try: bool = True) -> TaskContext:
    return TaskContext(step, "1", 0, f"f-{run_id}.{step}_1", run_id, {"SEQUENT_STEP_NAME": step},
                       try_number=try_number, final_try=final_try)


class Collected:
    """Outcomes from an executor, whether it reports them (a callback) or is collected (a fileno)."""

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor
        self.items: list[TaskOutcome] = []
        self.lock = threading.Lock()

    def report(self, outcome: TaskOutcome) -> None:
        with self.lock:
            self.items.append(outcome)

    def wait(self, task_id: int, timeout: float = 60.0) -> TaskOutcome:
        """The outcome of ``task_id`` once it came; fail after ``timeout`` seconds."""
        def arrived() -> bool:
            if self.executor is not None:
                for outcome in self.executor.collect():
                    self.report(outcome)
            return any(o.task_id == task_id for o in self.items)

        wait_for(arrived, timeout, f"the outcome of task {task_id}")
        return next(o for o in self.items if o.task_id == task_id)

    def ids(self) -> set[int]:
        with self.lock:
            return {o.task_id for o in self.items}


def assert_gone(*pids: int) -> None:
    for pid in pids:
        assert gone(pid, GONE_WITHIN), f"process {pid} is still running"


def stop_pids(pids: dict) -> None:
    """Kill what a failed test left running (by pid, only if it is still a sleep or the task)."""
    for pid in pids.values():
        if pid and is_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------------------------
# A real ProcessExecutor


@contextlib.contextmanager
def process_executor(*steps: tuple) -> Iterator[tuple[ProcessExecutor, list[StepDef], Collected]]:
    """A started ProcessExecutor for ``steps`` given as (name, func, *args): its launcher is a fork made
    at the start, so the steps exist before it."""
    defs = [StepDef(name=name, func=func, args=tuple(args), index=i) for i, (name, func, *args) in enumerate(steps)]
    ex = ProcessExecutor(defs, on_task_start=lambda name: None, name="sequent-launcher-test")
    ex.start()
    try:
        yield ex, defs, Collected(ex)
    finally:
        ex.stop(1.0, abandon=False)


def test_signal_task_stops_one_task_and_its_grandchild_and_leaves_the_other_task_running(
        mode: str, tmp_path: Path) -> None:
    ready = {n: tmp_path / f"ready{n}" for n in (1, 2)}
    release = {n: tmp_path / f"release{n}" for n in (1, 2)}
    with process_executor(*[(f"s{n}", spawn_sleep, str(ready[n]), str(release[n])) for n in (1, 2)]) as (ex, steps,
                                                                                                     out):
        for n in (1, 2):
            ex.submit(n, steps[n - 1], ctx_for(f"s{n}"))
        pids = {n: wait_ready(ready[n]) for n in (1, 2)}
        check_one_of_two(ex, out, pids, release[2])


def check_one_of_two(ex: Executor, out: Collected, pids: dict, release: Path) -> None:
    """Tasks 1 and 2 run, each with its sleep (``pids``): signal_task(1) ends task 1 and its sleep,
    and task 2 runs on with its sleep to its own end (once ``release`` exists)."""
    try:
        assert ex.signal_task(1, signal.SIGTERM) is True
        stopped = out.wait(1)
        assert (stopped.status, stopped.signal, stopped.pid) == (OutcomeStatus.failure, signal.SIGTERM,
                                                                  pids[1]["task"])
        assert "killed by signal 15 (SIGTERM)" in stopped.error
        assert_gone(pids[1]["task"], pids[1]["sleep"])
        assert is_alive(pids[2]["task"]) and is_alive(pids[2]["sleep"])  # untouched
        assert out.ids() == {1}
        release.touch()
        finished = out.wait(2)
        assert (finished.status, finished.result) == (OutcomeStatus.success, repr("sleep running"))
        assert ex.signal_task(2, signal.SIGTERM) is False  # ended
    finally:
        stop_pids(pids[1])
        stop_pids(pids[2])


def test_a_task_that_handles_sigterm_ends_with_its_own_exception(mode: str, tmp_path: Path) -> None:
    with process_executor(("s1", stop_on_sigterm, str(tmp_path / "ready"))) as (ex, steps, out):
        ex.submit(1, steps[0], ctx_for("s1"))
        pids = wait_ready(tmp_path / "ready")
        assert ex.signal_task(1, signal.SIGTERM) is True
        outcome = out.wait(1)
    assert outcome.status is OutcomeStatus.failure and outcome.signal is None
    assert outcome.error == "RuntimeError('asked to stop by SIGTERM')"
    assert_gone(pids["task"])


def test_signal_task_on_an_unknown_or_ended_task_returns_false_and_touches_nothing(
        mode: str, tmp_path: Path) -> None:
    with process_executor(("quick", fail_try, "done"),
                          ("long", spawn_sleep, str(tmp_path / "ready"), str(tmp_path / "release"))) as (ex, steps,
                                                                                                      out):
        ex.submit(1, steps[0], ctx_for("quick"))
        assert out.wait(1).status is OutcomeStatus.failure
        ex.submit(2, steps[1], ctx_for("long"))
        pids = wait_ready(tmp_path / "ready")
        try:
            assert ex.signal_task(1, signal.SIGKILL) is False  # ended (and collected)
            assert ex.signal_task(99, signal.SIGKILL) is False  # never submitted
            (tmp_path / "release").touch()
            finished = out.wait(2)
            assert (finished.status, finished.result) == (OutcomeStatus.success, repr("sleep running"))
        finally:
            stop_pids(pids)


def test_thread_and_invoke_executors_cannot_stop_one_task() -> None:
    out = Collected()
    release = threading.Event()
    ex = ThreadExecutor(out.report, name="sequent-test")
    ex.start()
    try:
        ex.submit(1, StepDef(name="t", func=release.wait, args=(30,)), ctx_for("t"))
        assert ex.signal_task(1, signal.SIGTERM) is False
        release.set()
        assert out.wait(1).status is OutcomeStatus.success  # it ran on, to its own end
    finally:
        ex.stop(5.0, abandon=False)
    invoke = InvokeExecutor(out.report, name="sequent-test")
    assert invoke.signal_task(1, signal.SIGTERM) is False


# --------------------------------------------------------------------------------------------
# Agents elsewhere: a store with an attempt whose tasks are active, as a coordinator leaves them


def prepare_store(url: str, run_id: str, steps: list[str]) -> tuple[Any, Any]:
    """(store, target) of an attempt ``run_id`` whose ``steps`` (sequence 1) are active."""
    from sequent.eventor.dburl import resolve_store
    from sequent.eventor.store import Store

    target = resolve_store(url, {}, "")
    store = Store(target).open()
    store.start_attempt(run_id=run_id, flow="f", program=None, host="here", mode="restart", recovery=0,
                        based_on=None, fingerprint="x", steps=[])
    writer = store.writer(run_id, 0, "here")
    for step in steps:
        writer.task(step, "1", "active", created=1.0, started=1.0, new=True)
    writer.commit()
    return store, target


def run_info(target: Any, run_id: str, tmp_path: Path) -> RunInfo:
    return RunInfo(target=target, busy_timeout=5.0, run_id=run_id, recovery=0, logger_name=f"f-{run_id}",
                   logging={"logdir": str(tmp_path / "logs"), "console": False}, grace=1.0)


def signal_one_of_two(ex: Executor, out: Collected, tmp_path: Path) -> None:
    """Two tasks on ``ex`` (ids 1 and 2, steps s1 and s2), each with a ``sleep 60``: see check_one_of_two."""
    ready = {n: tmp_path / f"ready{n}" for n in (1, 2)}
    release = {n: tmp_path / f"release{n}" for n in (1, 2)}
    for n in (1, 2):
        ex.submit(n, StepDef(name=f"s{n}", func=spawn_sleep, args=(str(ready[n]), str(release[n]))),
                  ctx_for(f"s{n}", run_id="remote"))
    check_one_of_two(ex, out, {n: wait_ready(ready[n]) for n in (1, 2)}, release[2])


@pytest.mark.ssh
@pytest.mark.timeout_seconds(120)
def test_signal_task_on_an_ssh_host_stops_one_task_and_its_grandchild(ssh_hosts: Any, postgres_database: str,
                                                                      tmp_path: Path) -> None:
    from sequent.eventor.executors.remote import RemoteExecutor
    from sequent.eventor.ssh import SshOptions

    store, target = prepare_store(postgres_database, "remote", ["s1", "s2"])
    out = Collected()
    ex = RemoteExecutor("h1", "h1", python=sys.executable, env={"PYTHONPATH": TESTS}, report=out.report,
                        options=SshOptions(config_file=ssh_hosts.config, alive_interval=1, alive_count=2),
                        imports=[MODULE])
    ex.start()
    try:
        ex.bind(run_info(target, "remote", tmp_path))
        signal_one_of_two(ex, out, tmp_path)
    finally:
        ex.stop(1.0, abandon=False)
    rows = {row.step: row for row in store.task_rows("remote")}
    # the coordinator stopped s1 itself: the agent leaves its end to it (here, nobody writes it)
    assert (rows["s1"].status, rows["s2"].status) == ("active", "success")
    store.dispose()


@pytest.mark.dask
@pytest.mark.timeout_seconds(120)
def test_signal_task_on_a_dask_worker_stops_one_task_and_its_grandchild(dask_cluster: Any, postgres_database: str,
                                                                        tmp_path: Path) -> None:
    from sequent.eventor.executors.dask import DaskCluster, DaskExecutor

    store, target = prepare_store(postgres_database, "remote", ["s1", "s2"])
    out = Collected()
    cluster = DaskCluster({"address": dask_cluster.address})
    executors = {n: DaskExecutor(cluster, f"w{n}", out.report, imports=(MODULE,)) for n in (1, 2)}
    for ex in executors.values():
        ex.start()
    try:
        for ex in executors.values():
            ex.bind(run_info(target, "remote", tmp_path))

        class Both(Executor):  # task n on worker wn, signalled through the executor that runs it
            def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
                executors[task_id].submit(task_id, step, ctx)

            def signal_task(self, task_id: int, signum: int) -> bool:
                return executors[task_id].signal_task(task_id, signum)

            def stop(self, grace: float, *, abandon: bool) -> None:
                pass

        signal_one_of_two(Both(), out, tmp_path)
        assert out.wait(1).host == "w1" and out.wait(2).host == "w2"
    finally:
        for ex in executors.values():
            ex.stop(1.0, abandon=False)
    assert {row.step: row.status for row in store.task_rows("remote")} == {"s1": "active", "s2": "success"}
    store.dispose()


def test_a_dask_task_signalled_before_it_starts_never_starts() -> None:
    from sequent.eventor import daskworker

    key = "sequent-r-0-7-abcdef01"
    assert daskworker.signal_task(key, signal.SIGTERM) is False  # not running on this worker (yet)
    done = daskworker.run_task({}, {"id": 7, "key": key, "ctx": ctx_for("s"), "blob": b""})
    outcome = TaskOutcome(**done["outcome"])
    assert outcome.status is OutcomeStatus.failure and outcome.signal == signal.SIGTERM
    assert "not started: the coordinator stopped it" in outcome.error


# --------------------------------------------------------------------------------------------
# Tries on an agent (the agent of a Dask worker, driven directly, with a SQLite store)


def test_an_agent_leaves_a_task_active_after_a_failed_try_that_is_not_the_last_and_records_the_try(
        tmp_path: Path) -> None:
    from sequent.eventor.daskworker import _LocalAgent
    from sequent.eventor.executors.remote import dumps, step_spec

    store, target = prepare_store(str(tmp_path / "store.db"), "r", ["retried", "last"])
    out = Collected()
    agent = _LocalAgent("w9", "w9", python=sys.executable, env={"PYTHONPATH": TESTS}, report=out.report,
                        imports=[MODULE])
    agent.claim_first = True
    agent.start()
    try:
        agent.bind(run_info(target, "r", tmp_path))
        tries = [(1, "retried", 1, False), (2, "last", 2, True)]  # (task id, step, try, final)
        for task_id, step, try_number, final in tries:
            ctx = ctx_for(step, try_number=try_number, final_try=final)
            blob = dumps(step_spec(StepDef(name=step, func=fail_try, args=(f"{step} try {try_number}",))))
            assert agent.submit_blob(task_id, ctx, blob)
        first, second = out.wait(1), out.wait(2)
    finally:
        agent.stop(1.0, abandon=False)
    assert (first.error, second.error) == ("ValueError('retried try 1')", "ValueError('last try 2')")  # as always
    rows = {row.step: row for row in store.task_rows("r")}
    assert rows["retried"].status == "active" and rows["retried"].owner.startswith(f"{os.uname().nodename}:")
    assert rows["last"].status == "failure" and rows["last"].tries == 2  # its final try ends it
    recorded = [(t.step, getattr(t, "try"), t.host, t.timed_out) for t in store.try_rows("r")]
    assert recorded == [("retried", 1, "w9", False)]
    [row] = store.try_rows("r")
    assert row.error.startswith("ValueError('retried try 1')\n") and row.owner == rows["retried"].owner
    store.dispose()


def test_a_later_try_on_an_agent_takes_the_task_over_and_its_success_ends_it(tmp_path: Path) -> None:
    from sequent.eventor.daskworker import _LocalAgent
    from sequent.eventor.executors.remote import dumps, step_spec

    store, target = prepare_store(str(tmp_path / "store.db"), "r", ["s"])
    out = Collected()
    agent = _LocalAgent("h9", "h9", python=sys.executable, env={"PYTHONPATH": TESTS}, report=out.report,
                        imports=[MODULE])
    agent.claim_first = False  # as an SSH host's agent: a first try is claimed while it starts
    agent.start()
    try:
        agent.bind(run_info(target, "r", tmp_path))
        for try_number, func in ((1, fail_try), (2, succeed)):
            blob = dumps(step_spec(StepDef(name="s", func=func, args=(f"try {try_number}",))))
            assert agent.submit_blob(try_number, ctx_for("s", try_number=try_number, final_try=try_number == 2),
                                     blob)
            out.wait(try_number)
    finally:
        agent.stop(1.0, abandon=False)
    [row] = store.task_rows("r")
    assert (row.status, row.result, row.tries) == ("success", repr("try 2"), 2)
    assert [(getattr(t, "try"), t.error.splitlines()[0]) for t in store.try_rows("r")] == [(1, "ValueError('try 1')")]
    store.dispose()
