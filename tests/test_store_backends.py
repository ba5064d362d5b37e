"""The store's guarantees on both backends: the same tests on an SQLite file and a real PostgreSQL.

A run and its history, a recovery that skips successes and reruns failures, one coordinator
per run, every earlier run kept, a DATABASES entry with a schema, and task errors whose text no
database takes as it is (a NUL byte, a lone surrogate, a megabyte): the run must still be
recorded, its failure stored and handled.  The ``store`` fixture (tests/conftest.py) gives each
test a store of its own on each backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import sequent as seq

REPO = Path(__file__).resolve().parents[1]
OK = seq.STEP_SUCCESS
GUARD_SECONDS = 60


pytestmark = pytest.mark.timeout_seconds(GUARD_SECONDS)  # the hang guard of tests/conftest.py


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def config_of(flow_config):
    """``config_of(construct="thread")``: a flow configuration logging under tmp_path."""
    def config_of(construct: str = "thread") -> dict:
        return flow_config(task_construct=construct, shutdown_grace=2.0)
    return config_of


def note(journal: Path, line: str) -> None:
    """Append one line to the journal; one write, so process tasks do not interleave."""
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def lines(journal: Path) -> list[str]:
    return journal.read_text().splitlines() if journal.exists() else []


def work(journal: str, name: str) -> str:
    """A step: journals its name and attempt, returns a value to be stored as its result."""
    note(Path(journal), f"{name} {os.environ['SEQUENT_STEP_SEQUENCE']} {os.environ['SEQUENT_STEP_RECOVERY']}")
    return f"{name} done"


def flaky(journal: str, flag: str) -> str:
    """Fails until the flag file exists."""
    note(Path(journal), f"flaky 1 {os.environ['SEQUENT_STEP_RECOVERY']}")
    if not os.path.exists(flag):
        raise RuntimeError("flaky: the flag file is missing")
    return "flaky done"


def raiser(text: str) -> None:
    raise ValueError(text)


def task_map(store: str, run_id: str, recovery: int | None = None) -> dict:
    return {(t.step, t.sequence): t for t in seq.run_tasks(store, run_id, recovery=recovery)}


# --------------------------------------------------------------------------------------------- a run and its history


@pytest.mark.parametrize("construct", ["thread", "process"])
def test_a_run_and_its_history_are_recorded(store, tmp_path, construct, config_of):
    journal = str(tmp_path / "journal")
    flow = seq.Sequent(name="history", store=store.store, config=config_of(construct))
    a = flow.add_step("a", func=work, kwargs={"journal": journal, "name": "a"})
    c = flow.add_step("c", repeats=[1, 2], requires=((a, OK),))
    x = c.add_step("x", func=work, kwargs={"journal": journal, "name": "x"})
    c.add_step("y", func=work, kwargs={"journal": journal, "name": "y"}, requires=((x, OK),))
    flow.add_step("z", func=work, kwargs={"journal": journal, "name": "z"}, requires=((c, OK),))
    t0 = time.time()
    assert flow.run() is True

    [run] = seq.list_runs(store.store)
    assert (run.run_id, run.flow, run.recoveries, run.outcome) == (flow.run_id, "history", 0, "success")
    assert run.started is not None and run.ended is not None
    assert t0 - 1 <= run.started.timestamp() <= run.ended.timestamp() <= time.time() + 1
    assert seq.list_runs(store.store, flow="another") == []

    tasks = task_map(store.store, flow.run_id)
    assert set(tasks) == {("a", "1"), ("c", "1"), ("c_x", "1.1"), ("c_y", "1.1"), ("c_x", "1.2"),
                          ("c_y", "1.2"), ("z", "1")}
    for (step, sequence), task in tasks.items():
        assert (task.status, task.skipped, task.recovery, task.error) == ("success", False, 0, None), task
        assert task.started is not None and task.ended is not None and task.started <= task.ended
        if step != "c":
            assert task.result is not None and f"{step.split('_')[-1]} done" in task.result, task
            if construct == "process":
                assert task.pid is not None and task.pid != os.getpid()
    assert lines(Path(journal)) == ["a 1 0", "x 1.1 0", "y 1.1 0", "x 1.2 0", "y 1.2 0", "z 1 0"]


def test_a_recovery_skips_what_succeeded_and_reruns_what_failed(store, tmp_path, config_of):
    journal, flag = tmp_path / "journal", tmp_path / "flag"
    config = config_of("process")

    def build(**kwargs) -> seq.Sequent:
        flow = seq.Sequent(name="recovery", store=store.store, config=config, **kwargs)
        a = flow.add_step("a", func=work, kwargs={"journal": str(journal), "name": "a"})
        flow.add_step("side", func=work, kwargs={"journal": str(journal), "name": "side"})
        f = flow.add_step("flaky", func=flaky, kwargs={"journal": str(journal), "flag": str(flag)},
                          requires=((a, OK),))
        flow.add_step("b", func=work, kwargs={"journal": str(journal), "name": "b"}, requires=((f, OK),))
        return flow

    first = build()
    assert first.run() is False
    run_id = first.run_id
    [run] = seq.list_runs(store.store)
    assert (run.run_id, run.outcome, run.recoveries) == (run_id, "failure", 0)
    failed = task_map(store.store, run_id)[("flaky", "1")]
    assert failed.status == "failure" and "flag file is missing" in failed.error
    assert sorted(lines(journal)) == ["a 1 0", "flaky 1 0", "side 1 0"]

    flag.touch()
    assert build(run_mode=seq.RUN_RECOVER, run_id=run_id).run() is True
    assert sorted(line for line in lines(journal) if line.endswith(" 1")) == ["b 1 1", "flaky 1 1"]
    again = {key: (t.status, t.skipped) for key, t in task_map(store.store, run_id, recovery=1).items()}
    assert again == {("a", "1"): ("success", True), ("side", "1"): ("success", True),
                     ("flaky", "1"): ("success", False), ("b", "1"): ("success", False)}
    [run] = seq.list_runs(store.store)
    assert (run.run_id, run.outcome, run.recoveries) == (run_id, "success", 1)
    # attempt 0 is kept as it was
    assert task_map(store.store, run_id, recovery=0)[("flaky", "1")].status == "failure"


HOLDER = textwrap.dedent("""
    import os, sys, time
    import sequent as seq

    store, run_id, started, release, logdir = sys.argv[1:6]

    def hold():
        open(started, "w").close()
        deadline = time.monotonic() + 40
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)

    config = {"task_construct": "thread", "LOGGING": {"logdir": logdir, "console": False}}
    flow = seq.Sequent(name="held", store=store, config=config, run_id=run_id)
    h = flow.add_step("hold", func=hold)
    flow.add_step("after", func=None, requires=((h, seq.STEP_SUCCESS),))
    sys.exit(0 if flow.run() else 1)
""")


def test_a_second_coordinator_is_refused_while_the_first_holds_the_run(store, tmp_path, config_of):
    started, release, run_id = tmp_path / "started", tmp_path / "release", "held-run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, store.store, run_id, str(started), str(release),
                               str(tmp_path / "logs")], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder's step never started"
            time.sleep(0.02)
        second = seq.Sequent(name="held", store=store.store, config=config_of(), run_id=run_id,
                             run_mode=seq.RUN_RECOVER)
        h = second.add_step("hold", func=None)
        second.add_step("after", func=None, requires=((h, OK),))
        with pytest.raises(seq.SequentError) as err:
            second.run()
        assert run_id in str(err.value) and str(holder.pid) in str(err.value), err.value
        assert holder.poll() is None  # the holder is not disturbed
        [run] = seq.list_runs(store.store)
        assert (run.run_id, run.outcome, run.recoveries) == (run_id, "running", 0)
        release.touch()
        out, err_text = holder.communicate(timeout=30)
        assert holder.returncode == 0, err_text
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    [run] = seq.list_runs(store.store)
    assert (run.run_id, run.outcome, run.recoveries) == (run_id, "success", 0)  # no attempt was used up
    assert {key: t.status for key, t in task_map(store.store, run_id).items()} == {
        ("hold", "1"): "success", ("after", "1"): "success"}


def test_every_earlier_run_is_kept(store, tmp_path, config_of):
    journal = str(tmp_path / "journal")
    run_ids = []
    for name, fails in (("kept", False), ("kept", True), ("other", False), ("kept", False)):
        flow = seq.Sequent(name=name, store=store.store, config=config_of())
        flow.add_step("a", func=raiser if fails else work,
                      kwargs={"text": "boom"} if fails else {"journal": journal, "name": "a"})
        assert flow.run() is (not fails)
        run_ids.append(flow.run_id)
    assert len(set(run_ids)) == 4
    runs = seq.list_runs(store.store)
    assert [r.run_id for r in runs] == run_ids  # oldest first
    assert [(r.flow, r.outcome) for r in runs] == [("kept", "success"), ("kept", "failure"), ("other", "success"),
                                                   ("kept", "success")]
    assert [r.run_id for r in seq.list_runs(store.store, flow="kept")] == [run_ids[0], run_ids[1], run_ids[3]]
    for run_id, fails in zip(run_ids, (False, True, False, False)):
        [task] = seq.run_tasks(store.store, run_id)
        assert task.status == ("failure" if fails else "success")
    with pytest.raises(seq.SequentError, match="no run"):
        seq.run_tasks(store.store, "no-such-run")


def test_a_databases_entry_with_a_schema_keeps_the_runs_in_that_schema(postgres_database, tmp_path, config_of):
    import sqlalchemy as sa

    url = sa.engine.make_url(postgres_database)
    entry = {"dialect": "postgresql", "drivername": "psycopg", "username": url.username, "password": url.password,
             "host": url.host, "port": url.port, "database": url.database, "schema": "sequent_schema_test"}
    config = {**config_of(), "DATABASES": {"pg": entry}}
    flow = seq.Sequent(name="schema", store="pg", config=config)
    flow.add_step("a", func=work, kwargs={"journal": str(tmp_path / "journal"), "name": "a"})
    assert flow.run() is True
    [run] = seq.list_runs("pg", config={"DATABASES": {"pg": entry}})
    assert (run.run_id, run.outcome) == (flow.run_id, "success")
    engine = sa.create_engine(postgres_database, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            where = conn.execute(sa.text("SELECT table_schema FROM information_schema.tables "
                                         "WHERE table_name = 'sequent_runs'")).scalars().all()
    finally:
        engine.dispose()
    assert where == ["sequent_schema_test"]


# --------------------------------------------------------------------------------------------- texts

TEXTS = {
    "nul": "before\x00after",
    "lone_surrogate": "bad \udcff byte",
    "megabyte": "x" * (1 << 20),
}


@pytest.mark.parametrize("construct", ["thread", "process"])
@pytest.mark.parametrize("text", list(TEXTS))
def test_a_task_error_text_no_database_takes_as_is_is_recorded_and_handled(store, tmp_path, construct, text, config_of):
    journal = str(tmp_path / "journal")
    flow = seq.Sequent(name="texts", store=store.store, config=config_of(construct))
    bad = flow.add_step("bad", func=raiser, kwargs={"text": TEXTS[text]})
    flow.add_step("handler", func=work, kwargs={"journal": journal, "name": "handler"},
                  requires=((bad, seq.STEP_FAILURE),))
    assert flow.run() is True  # the failure is handled: the run succeeds

    assert lines(Path(journal)) == ["handler 1 0"]  # the failure handler ran
    [run] = seq.list_runs(store.store)
    assert (run.run_id, run.outcome) == (flow.run_id, "success")
    tasks = task_map(store.store, flow.run_id)
    assert tasks[("bad", "1")].status == "failure"
    assert "ValueError" in (tasks[("bad", "1")].error or "")
    assert tasks[("handler", "1")].status == "success"
