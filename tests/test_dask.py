"""Tasks on a Dask cluster: a real scheduler with workers w1, w2, w3 (tests/daskcluster.py) and a
real PostgreSQL, and the local cluster a run starts when no scheduler is given.

Each test runs a flow with ``task_construct: 'dask'`` and checks the store, the journal the steps
write (the workers share this machine's files) and the workers' processes: where each task ran,
that pins hold and limits too, that Dask never reruns or parks a task silently (a worker's death
is the task's failure, a pin to an unknown worker fails at once), that the coordinator's signals
kill what runs, and that a task ending after its coordinator died is recorded and skipped by the
recovery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sequent as seq

TESTS = str(Path(__file__).resolve().parent)
sys.path.insert(0, TESTS)
import remotefuncs  # noqa: E402
from elsewhere import Flows, gone, wait_for  # noqa: E402

OK = seq.STEP_SUCCESS

pytestmark = [pytest.mark.dask, pytest.mark.timeout_seconds(120)]


class DaskFlows(Flows):
    """Flows on the test cluster's workers w1, w2, w3."""

    name, first, second, second_func = "dask", "w1", "w2", "on_worker"

    def __init__(self, cluster: Any, store: str, tmp_path: Path):
        super().__init__(store, tmp_path)
        self.cluster = cluster

    def config(self, **extra: Any) -> dict:
        return super().config(task_construct="dask", DASK={"address": self.cluster.address}, **extra)


@pytest.fixture
def flows(dask_cluster: Any, postgres_database: str, tmp_path: Path) -> DaskFlows:
    return DaskFlows(dask_cluster, postgres_database, tmp_path)


def test_a_flow_over_three_workers_runs_each_pinned_step_on_its_worker(flows: DaskFlows) -> None:
    flow = flows.flow()
    a = flow.add_step("a", remotefuncs.on_worker, args=(flows.journal, "one"), hosts=["w1"])
    b = flow.add_step("b", remotefuncs.on_worker, args=(flows.journal, "two"), hosts=["w2"], requires=[(a, OK)])
    flow.add_step("c", remotefuncs.on_worker, args=(flows.journal, "three"), hosts=["w3"], requires=[(b, OK)])
    assert flow.run() is True
    ran = [line.split("|") for line in flows.lines()]
    assert [(r[0], r[2], r[3]) for r in ran] == [("a", "w1", "one"), ("b", "w2", "two"), ("c", "w3", "three")]
    assert {r[4] for r in ran} == {flow.run_id}
    tasks = flows.tasks(flow.run_id)
    for step, worker in (("a", "w1"), ("b", "w2"), ("c", "w3")):
        task = tasks[f"{step}/1/0"]
        assert (task.status, task.host) == ("success", worker)
        assert _agent_host(flows.store, task.owner) == worker  # the agent beside that worker ran it
        assert "dask line from" in Path(task.logfile).read_text()  # its own log file, where it ran
    run_log = (flows.tmp / "logs" / f"dask-{flow.run_id}.log").read_text()
    assert run_log.count("dask line from") == 3  # its records reach the run log


def test_an_unpinned_fan_out_runs_each_task_once_on_any_worker_within_the_flows_limit(flows: DaskFlows) -> None:
    flow = flows.flow(config=flows.config(max_concurrent=3))
    for i in range(9):
        flow.add_step(f"s{i}", remotefuncs.span_on_worker, args=(flows.journal, 0.3))
    assert flow.run() is True
    spans = [line.split() for line in flows.lines()]
    assert len(spans) == 9 and len({worker for worker, _, _ in spans}) >= 2
    events = sorted([(float(s), 1) for _, s, _ in spans] + [(float(e), -1) for _, _, e in spans])
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most <= 3


def test_a_step_with_two_workers_runs_on_the_first_with_room_under_a_per_worker_limit(flows: DaskFlows) -> None:
    config = flows.config(HOSTS={"w1": {"max_concurrent": 1}, "w2": {"max_concurrent": 1}})
    flow = flows.flow(config=config)
    for i in range(4):
        flow.add_step(f"s{i}", remotefuncs.span_on_worker, args=(flows.journal, 0.5), hosts=["w1", "w2"])
    assert flow.run() is True
    by_worker: dict[str, list] = {}
    for worker, start, end in (line.split() for line in flows.lines()):
        by_worker.setdefault(worker, []).append((float(start), float(end)))
    assert set(by_worker) == {"w1", "w2"}
    for intervals in by_worker.values():
        intervals.sort()
        assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:]))


def test_a_pin_to_an_unknown_worker_fails_at_once_naming_it(flows: DaskFlows) -> None:
    flow = flows.flow(run_id="unknown")
    flow.add_step("a", remotefuncs.on_worker, args=(flows.journal,), hosts=["w9"])
    started = time.monotonic()
    assert flow.run() is False
    assert time.monotonic() - started < 20
    task = flows.tasks("unknown")["a/1/0"]
    assert task.status == "failure" and "no Dask worker is named 'w9'" in task.error
    assert flows.lines() == []


def test_a_worker_killed_mid_task_is_the_tasks_failure_and_it_never_runs_again(flows: DaskFlows) -> None:
    flow = flows.flow(run_id="killed-worker")
    flow.add_step("a", remotefuncs.pause_on_worker, args=(flows.journal, 60), hosts=["w2"])
    flow.add_step("b", remotefuncs.on_worker, args=(flows.journal, "b"), hosts=["w3"])

    def kill() -> None:  # the worker process alone: its agent and the task must notice and end
        wait_for(lambda: any(line.startswith("start a") for line in flows.lines()), 60, "the task")
        os.kill(flows.cluster.worker_pid("w2"), signal.SIGKILL)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    try:
        started = time.monotonic()
        assert flow.run() is False
        assert time.monotonic() - started < 20  # the scheduler sees the worker's death at once
    finally:
        killer.join()
        flows.cluster.restart_worker("w2")
    task = flows.tasks("killed-worker")["a/1/0"]
    assert task.status == "failure"
    # whoever records it first, the worker's agent (it stopped the task) or the coordinator (KilledWorker)
    assert "the Dask worker 'w2' running it died" in task.error, task.error
    assert flows.tasks("killed-worker")["b/1/0"].status == "success"
    assert sum(line.startswith("start a") for line in flows.lines()) == 1  # never rerun by Dask
    task_pid = int(next(line for line in flows.lines() if line.startswith("start a")).split()[3])
    assert gone(task_pid, 15), "the task outlived its worker"  # SIGTERM, then SIGKILL after the grace
    assert "end a" not in flows.lines()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_coordinator_kills_what_runs_on_the_workers(flows: DaskFlows, signum: int) -> None:
    run_id = f"dask-signal{int(signum)}"
    proc = flows.coordinator(run_id, "child_sleep", [flows.journal, 120])
    wait_for(lambda: any(line.startswith("sleep ") for line in flows.lines()), 60, "the task's sleep")
    sleeper = int(next(line for line in flows.lines() if line.startswith("sleep ")).split()[1])
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert gone(sleeper, 15), "the task's own child is still running on the worker"
    [run] = [r for r in seq.list_runs(flows.store) if r.run_id == run_id]
    assert run.outcome == "interrupted"
    assert flows.tasks(run_id)["s1/1/0"].status == "failure"


def test_a_task_that_ends_after_its_coordinator_was_killed_is_recorded_and_skipped_by_recovery(
        flows: DaskFlows) -> None:
    proc = flows.coordinator("dask-killed", "pause_on_worker", [flows.journal, 3])
    wait_for(lambda: any(line.startswith("start s1") for line in flows.lines()), 60, "the task")
    proc.kill()
    proc.communicate(timeout=10)
    again = flows.flow(name="dask-killed", run_id="dask-killed", run_mode=seq.RUN_RECOVER)
    s1 = again.add_step("s1", remotefuncs.pause_on_worker, args=(flows.journal, 3), hosts=["w1"])
    again.add_step("s2", remotefuncs.on_worker, args=(flows.journal, "two"), hosts=["w2"], requires=[(s1, OK)])
    assert again.run() is True  # it waited for the worker, which recorded s1 after the coordinator died
    assert sum(line.startswith("start s1") for line in flows.lines()) == 1
    tasks = flows.tasks("dask-killed")
    assert tasks["s1/1/0"].status == "success" and tasks["s1/1/0"].host == "w1"
    assert tasks["s1/1/1"].skipped and tasks["s2/1/1"].status == "success"


def test_a_step_that_cannot_be_sent_or_a_store_workers_cannot_reach_is_refused_before_the_run(
        flows: DaskFlows, tmp_path: Path) -> None:
    flow = flows.flow()
    flow.add_step("s1", remotefuncs.make_closure())
    with pytest.raises(seq.SequentError, match=r"step 's1' runs on Dask, but .*defined inside another function"):
        flow.run()
    for store in (str(tmp_path / "store.db"), ":memory:"):
        flow = seq.Sequent(name="dask", store=store, config=flows.config())
        flow.add_step("s1", remotefuncs.on_worker, args=(flows.journal,))
        with pytest.raises(seq.SequentError, match="which its workers cannot reach"):
            flow.run()
    assert flows.lines() == []


def test_without_an_address_a_run_starts_a_local_cluster_and_stops_it(tmp_path: Path, flow_config: Any) -> None:
    journal = str(tmp_path / "journal")
    flow = seq.Sequent(name="local-dask", store=str(tmp_path / "store.db"), config=flow_config(task_construct="dask"))
    a = flow.add_step("a", remotefuncs.on_worker, args=(journal, "a"))
    flow.add_step("b", remotefuncs.on_worker, args=(journal, "b"), requires=[(a, OK)])
    assert flow.run() is True
    workers = [line.split("|")[2] for line in Path(journal).read_text().splitlines()]
    assert len(workers) == 2 and all(w.startswith("local-") for w in workers)
    assert _children(os.getpid()) == []  # its scheduler and workers are gone


# --------------------------------------------------------------------------------------- helpers


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def test_import_sequent_does_not_import_dask() -> None:
    code = "import sys, sequent; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_scheduler_settings_that_would_hide_failures_are_named_with_what_to_set(caplog: Any) -> None:
    import logging

    from sequent.eventor.executors.dask import DaskCluster
    from sequent.eventor.executors.base import RunInfo

    class Client:
        def run_on_scheduler(self, function: Any) -> tuple:
            return (3, None)  # Dask's defaults: three reruns, and waiting forever for a worker

    cluster = DaskCluster({"address": "tcp://scheduler:8786"})
    cluster.client = Client()
    log = logging.getLogger("test-dask-settings")
    with caplog.at_level(logging.WARNING, logger="test-dask-settings"):
        cluster.bind(RunInfo(target=None, busy_timeout=1.0, run_id="r", recovery=0, logger_name="x", logging={},
                             grace=1.0), log)
    assert "reruns a task up to 3 times" in caplog.text
    assert "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0" in caplog.text
    assert "DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT=5s" in caplog.text


def test_the_runs_client_sends_to_the_scheduler_without_dasks_10_ms_batching(dask_cluster: Any) -> None:
    """Dask's client holds a message sent within 10 ms of its previous batch; in a chain that wait
    was most of a task's cost, so the run's client batches at CLIENT_BATCH_INTERVAL (1 ms)."""
    from sequent.eventor.executors.dask import CLIENT_BATCH_INTERVAL, DaskCluster

    cluster = DaskCluster({"address": dask_cluster.address})
    cluster.start()
    try:
        assert cluster.client.scheduler_comm.interval == CLIENT_BATCH_INTERVAL
    finally:
        cluster.stop(abandon=False)
    assert cluster.client is None


def _agent_host(store: str, token: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(store, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("select host from sequent_agents where token = :t"), {"t": token}).scalar()
    finally:
        engine.dispose()


def test_an_agent_that_claims_first_never_runs_a_task_another_agent_claimed(tmp_path: Path) -> None:
    """What makes a Dask rerun after a worker's death harmless: only the first claim runs the task."""
    from sequent.eventor.context import TaskContext
    from sequent.eventor.daskworker import _LocalAgent
    from sequent.eventor.dburl import resolve_store
    from sequent.eventor.executors.base import RunInfo
    from sequent.eventor.executors.remote import dumps, step_spec
    from sequent.eventor.model import StepDef
    from sequent.eventor.store import Store

    path, journal = str(tmp_path / "store.db"), str(tmp_path / "journal")
    target = resolve_store(path, {}, "")
    store = Store(target).open()
    store.start_attempt(run_id="r", flow="f", program=None, host="here", mode="restart", recovery=0, based_on=None,
                        fingerprint="x", steps=[])
    writer = store.writer("r", 0, "here")
    for step in ("taken", "free"):
        writer.task(step, "1", "active", created=1.0, started=1.0, new=True)
    writer.commit()
    assert store.claim_task("r", 0, "taken", "1", owner="w1:1:1", pid=None, logfile=None)  # the first worker's
    outcomes: list = []
    agent = _LocalAgent("w2", "w2", python=sys.executable, env={"PYTHONPATH": TESTS}, report=outcomes.append,
                        imports=["remotefuncs"])
    agent.claim_first = True
    agent.start()
    try:
        agent.bind(RunInfo(target=target, busy_timeout=5.0, run_id="r", recovery=0, logger_name="f-r",
                           logging={"logdir": str(tmp_path / "logs"), "console": False}, grace=1.0))
        for task_id, step in ((1, "taken"), (2, "free")):
            ctx = TaskContext(step, "1", 0, f"f-r.{step}_1", "r", {"SEQUENT_STEP_NAME": step})
            blob = dumps(step_spec(StepDef(name=step, func=remotefuncs.note, args=(journal, step))))
            assert agent.submit_blob(task_id, ctx, blob)
        wait_for(lambda: len(outcomes) == 2, 30, "both outcomes")
    finally:
        agent.stop(1.0, abandon=False)
    by_id = {o.task_id: o for o in outcomes}
    assert by_id[1].status.value == "failure" and "another worker ran it already" in by_id[1].error
    assert by_id[2].status.value == "success"
    assert Path(journal).read_text().splitlines() == ["free"]  # the claimed one never ran here
    rows = {row.step: row for row in store.task_rows("r")}
    assert (rows["taken"].status, rows["taken"].owner) == ("active", "w1:1:1")  # still the first worker's
    assert rows["free"].status == "success" and rows["free"].owner.startswith(f"{os.uname().nodename}:")
    store.dispose()
