"""What the store does for runs shared by several hosts, on an SQLite file and a real PostgreSQL.

The first final write of a task wins (a late or duplicate end is discarded), a recovery waits
a bounded time for agents of the run that still beat, resource pools hold and are recorded, and
a store of the previous schema version is brought up to date in place with its runs kept.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import sequent as seq
from sequent.eventor.dburl import resolve_store
from sequent.eventor.schema import SCHEMA_VERSION, agents, iterations, schema_info, tasks, tries
from sequent.eventor.store import Store

pytestmark = pytest.mark.timeout_seconds(60)


def open_store(where: str) -> Store:
    return Store(resolve_store(where, {}, "")).open()


def succeed() -> str:
    return "ok"


def fail_unless(flag: str) -> str:
    if not Path(flag).exists():
        raise ValueError("not yet")
    return "fixed"


def hold(journal: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    with open(journal, "a") as out:
        out.write(f"{start} {time.time()}\n")


def test_the_first_final_write_of_a_task_wins(store) -> None:
    opened = open_store(store.store)
    try:
        opened.start_attempt(run_id="r1", flow="f", program=None, host="here", mode="restart", recovery=0,
                             based_on=None, fingerprint="x", steps=[])
        writer = opened.writer("r1", 0, "here")
        writer.task("s1", "1", "active", created=1.0, started=1.0, new=True)
        writer.commit()
        assert opened.claim_task("r1", 0, "s1", "1", owner="h1:10:1", pid=None, logfile="/log/s1") is True
        # the agent records the end first ...
        assert opened.finish_task("r1", 0, "s1", "1", status="success", ended=2.0, pid=11, host="h1",
                                  result="'done'", error=None) is True
        # ... so the coordinator's own (fenced) write of a lost host, and any late duplicate, change nothing
        writer.task("s1", "1", "failure", created=1.0, started=1.0, ended=3.0, error="host 'h1' lost", host="h1",
                    new=False, fenced=True)
        writer.commit()
        assert opened.finish_task("r1", 0, "s1", "1", status="failure", ended=4.0, pid=11, host="h1",
                                  result=None, error="late") is False
        assert opened.claim_task("r1", 0, "s1", "1", owner="h2:1:1", pid=None, logfile=None) is False
        [row] = opened.task_rows("r1")
        assert (row.status, row.result, row.error, row.host, row.owner, row.logfile) == (
            "success", "'done'", None, "h1", "h1:10:1", "/log/s1")
    finally:
        opened.dispose()


def test_a_recovery_waits_for_live_agents_of_the_run_at_most_agent_wait(store, flow_config, tmp_path) -> None:
    flag_path = "/nonexistent/never"  # the step keeps failing: each recovery has something to run
    flow = seq.Sequent(name="waits", store=store.store, run_id="w1", config=flow_config(task_construct="thread"))
    flow.add_step("s1", fail_unless, args=(flag_path,))
    assert flow.run() is False
    opened = open_store(store.store)
    now = time.time()
    with opened._tx() as conn:  # an agent of the run that still beats, on a host of its own
        conn.execute(agents.insert().values(token="h9:1:1", run_id="w1", recovery=0, host="h9", hostname="h9",
                                            pid=1, started=now, heartbeat=now))
        conn.execute(tasks.insert().values(run_id="w1", recovery=0, step="s9", sequence="1", status="active",
                                           skipped=False, created=now, owner="h9:1:1"))  # still running s9
    try:
        again = seq.Sequent(name="waits", store=store.store, run_id="w1", run_mode=seq.RUN_RECOVER,
                            config=flow_config(task_construct="thread", agent_wait=1.0))
        again.add_step("s1", fail_unless, args=(flag_path,))
        started = time.monotonic()
        again.run()
        assert 1.0 <= time.monotonic() - started < 10
        run_log = (tmp_path / "logs" / "waits-w1.log").read_text()
        assert "Waiting up to 1 s (agent_wait) for agents of run 'w1' still running tasks on host(s) h9" in run_log
        assert "still running on host(s) h9 after 1 s (agent_wait): recovering without waiting" in run_log

        # an agent that ends while the recovery waits lets it go on at once
        with opened._tx() as conn:
            conn.execute(agents.update().values(heartbeat=time.time()))
        ender = threading.Timer(0.5, lambda: opened.agent_ended("h9:1:1"))
        third = seq.Sequent(name="waits", store=store.store, run_id="w1", run_mode=seq.RUN_RECOVER,
                            config=flow_config(task_construct="thread", agent_wait=30.0))
        third.add_step("s1", fail_unless, args=(flag_path,))
        started = time.monotonic()
        ender.start()
        third.run()
        ender.join()
        assert 0.4 <= time.monotonic() - started < 10
    finally:
        opened.dispose()


def test_a_resource_pool_holds_and_its_holdings_are_recorded(store, flow_config, tmp_path) -> None:
    journal = str(tmp_path / "journal")
    pool = seq.ResourcePool("one", policy={"resource_limit": 1})
    flow = seq.Sequent(name="pools", store=store.store, config=flow_config(task_construct="thread"))
    for name in ("a", "b", "c"):
        flow.add_step(name, hold, args=(journal, 0.2), acquires=[(pool, 1)])
    assert flow.run() is True
    spans = sorted(tuple(map(float, line.split())) for line in Path(journal).read_text().splitlines())
    assert len(spans) == 3 and all(x[1] <= y[0] for x, y in zip(spans, spans[1:]))
    opened = open_store(store.store)
    try:
        rows = opened.conn.execute(sa.text("select step, pool, count, released_count from sequent_holdings "
                                           "order by step")).all()
        assert [tuple(r) for r in rows] == [("a", "one", 1, 1), ("b", "one", 1, 1), ("c", "one", 1, 1)]
    finally:
        opened.dispose()


def test_a_store_of_schema_version_1_is_migrated_in_place_and_keeps_its_runs(store, flow_config) -> None:
    flow = seq.Sequent(name="old", store=store.store, config=flow_config(task_construct="thread"))
    flow.add_step("s1", succeed)
    assert flow.run() is True
    old_run = flow.run_id
    opened = open_store(store.store)
    with opened._tx() as conn:  # make it what version 1 wrote: no owner/logfile/item/tries, no agents, no tries
        for column in ("owner", "logfile", "item", "tries", "retry_at"):
            conn.execute(sa.text(f"ALTER TABLE sequent_tasks DROP COLUMN {column}"))
        for table in ("sequent_agents", "sequent_tries", "sequent_iterations"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(schema_info.update().values(value="1"))
    opened.dispose()

    [task] = seq.run_tasks(store.store, old_run)  # a reader copes with the old version as it is
    assert (task.step, task.status, task.logfile, task.owner, task.item, task.tries) == (
        "s1", "success", None, None, None, None)
    detail = seq.run_detail(store.store, old_run)
    assert (detail.tries, detail.iterations) == ([], [])

    flow = seq.Sequent(name="old", store=store.store, config=flow_config(task_construct="thread"))
    flow.add_step("s1", succeed)
    assert flow.run() is True
    assert [r.run_id for r in seq.list_runs(store.store)] == [old_run, flow.run_id]
    opened = open_store(store.store)
    try:
        assert opened.conn.execute(sa.select(schema_info.c.value)).scalar() == str(SCHEMA_VERSION)
        columns = {c["name"] for c in sa.inspect(opened.conn).get_columns(tasks.name)}
        assert {"owner", "logfile", "item", "tries", "retry_at"} <= columns
        assert all(sa.inspect(opened.conn).has_table(t.name) for t in (agents, tries, iterations))
    finally:
        opened.dispose()
