"""The store's side of items, retries and timeouts, on an SQLite file and a real PostgreSQL.

A task's item, tries and retry_at written by a round and read back; tries and iterations
recorded once (the first write wins); an agent's claim fenced by try number; what a recovery
reads back (the tasks waiting for their next try, the items of the iterations); an older store
brought up to date with its runs kept; and the history API and ``sequent show`` / ``tasks``
showing it all.  The coordinator does not write these yet, so the store API writes them here.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

import sequent as seq
from sequent.cli import main
from sequent.eventor.dburl import resolve_store
from sequent.eventor.schema import SCHEMA_VERSION, iterations, schema_info, tasks, tries
from sequent.eventor.store import Store
from sequent.eventor.text import ITEM_LIMIT, item_text

pytestmark = pytest.mark.timeout_seconds(60)

OK = seq.STEP_SUCCESS


def open_store(where: str) -> Store:
    return Store(resolve_store(where, {}, "")).open()


@pytest.fixture
def opened(store):
    """A store opened to write, holding run 'r1' with attempts 0 and 1 started."""
    opened = open_store(store.store)
    opened.start_attempt(run_id="r1", flow="f", program=None, host="here", mode="restart", recovery=0,
                         based_on=None, fingerprint="x", steps=[])
    opened.start_attempt(run_id="r1", flow="f", program=None, host="here", mode="recover", recovery=1,
                         based_on=0, fingerprint="x", steps=[])
    yield opened
    opened.dispose()


def rows(opened: Store, run_id: str = "r1", recovery: int | None = None) -> dict:
    return {(r.step, r.sequence): r for r in opened.task_rows(run_id, recovery)}


def try_rows(opened: Store) -> list[tuple]:
    return [(r.step, r.sequence, r.recovery, r._mapping["try"], r.host, r.owner, r.error, r.timed_out)
            for r in opened.try_rows("r1")]


# --------------------------------------------------------------------------------------------- the writer

def test_a_round_writes_item_tries_and_retry_at_and_a_later_change_without_them_keeps_them(opened) -> None:
    writer = opened.writer("r1", 0, "here")
    writer.task("each", "1", "active", created=1.0, started=1.0, new=True)
    writer.task("each_t", "1.1", "active", created=1.0, started=1.0, new=True, item=item_text("a.csv"))
    writer.task("each_t", "1.2", "ready", created=1.0, new=True, item=item_text("b.csv"))
    writer.commit()
    found = rows(opened)
    assert list(found) == [("each", "1"), ("each_t", "1.1"), ("each_t", "1.2")]  # created in order
    assert (found[("each", "1")].item, found[("each", "1")].tries, found[("each", "1")].retry_at) == (None, None, None)
    assert (found[("each_t", "1.1")].item, found[("each_t", "1.1")].tries) == ("'a.csv'", None)

    writer.task("each_t", "1.1", "active", created=1.0, started=1.0, new=False, tries=1, retry_at=50.5)
    writer.commit()
    row = rows(opened)[("each_t", "1.1")]
    assert (row.status, row.item, row.tries, row.retry_at) == ("active", "'a.csv'", 1, 50.5)

    writer.task("each_t", "1.1", "active", created=1.0, started=51.0, new=False)  # omitted: unchanged
    writer.commit()
    row = rows(opened)[("each_t", "1.1")]
    assert (row.started, row.item, row.tries, row.retry_at) == (51.0, "'a.csv'", 1, 50.5)

    writer.task("each_t", "1.1", "active", created=1.0, started=51.0, new=False, tries=2, retry_at=None)
    writer.task("each_t", "1.1", "success", created=1.0, started=51.0, ended=52.0, new=False)  # same round
    writer.commit()
    row = rows(opened)[("each_t", "1.1")]
    assert (row.status, row.item, row.tries, row.retry_at) == ("success", "'a.csv'", 2, None)


def test_a_fenced_change_sets_tries_only_while_the_task_is_active(opened) -> None:
    writer = opened.writer("r1", 0, "here")
    writer.task("s", "1", "active", created=1.0, started=1.0, new=True)
    writer.task("t", "1", "active", created=1.0, started=1.0, new=True)
    writer.commit()
    assert opened.finish_task("r1", 0, "s", "1", status="success", ended=2.0, pid=1, host="h1", result=None,
                              error=None) is True
    for step in ("s", "t"):
        writer.task(step, "1", "failure", created=1.0, started=1.0, ended=3.0, new=False, fenced=True, tries=3,
                    retry_at=None)
    writer.commit()
    found = rows(opened)
    assert (found[("s", "1")].status, found[("s", "1")].tries) == ("success", None)  # the agent's end won
    assert (found[("t", "1")].status, found[("t", "1")].tries) == ("failure", 3)


def test_a_round_without_items_or_tries_uses_only_the_usual_statements(opened, monkeypatch) -> None:
    sent: list[str] = []
    real = opened.write_raw
    monkeypatch.setattr(opened, "write_raw", lambda batches: (sent.extend(n for n, _ in batches), real(batches)))
    writer = opened.writer("r1", 0, "here")
    writer.task("s", "1", "active", created=1.0, started=1.0, new=True)
    writer.commit()
    writer.task("s", "1", "success", created=1.0, started=1.0, ended=2.0, new=False)
    writer.commit()
    assert sent == ["insert_task", "update_task"]
    writer.task("s", "1", "success", created=1.0, started=1.0, ended=2.0, new=False, tries=2)
    writer.try_ended("s", "1", 1, started=1.0, ended=1.5, host=None, pid=7, error="boom", timed_out=False)
    writer.commit()
    assert sent[2:] == ["update_task+tries", "insert_try"]


def test_the_first_write_of_a_try_wins_in_a_round_across_rounds_and_from_an_agent(opened) -> None:
    writer = opened.writer("r1", 0, "coord")
    writer.try_ended("s", "1", 1, started=1.0, ended=2.0, host=None, pid=7, error="first", timed_out=False)
    writer.try_ended("s", "1", 1, started=1.0, ended=9.0, host="x", pid=8, error="same round", timed_out=True)
    writer.commit()
    writer.try_ended("s", "1", 1, started=1.0, ended=9.0, host="x", pid=8, error="next round", timed_out=True)
    writer.try_ended("s", "1", 2, started=3.0, ended=4.0, host="h1", pid=9, error="timed out after 1 s",
                     timed_out=True, owner="h1:9:1")
    writer.commit()
    opened.record_try("r1", 0, "s", "1", 2, started=3.0, ended=5.0, host="h1", pid=9, owner="h1:9:1",
                      error="agent's", timed_out=False)
    opened.record_try("r1", 0, "s", "1", 3, started=6.0, ended=7.0, host="h2", pid=10, owner="h2:10:1",
                      error="third", timed_out=False)
    opened.record_try("r1", 1, "s", "1", 1, started=8.0, ended=8.5, host="h2", pid=11, owner=None,
                      error="in the recovery", timed_out=False)
    assert try_rows(opened) == [
        ("s", "1", 0, 1, "coord", None, "first", False), ("s", "1", 0, 2, "h1", "h1:9:1", "timed out after 1 s", True),
        ("s", "1", 0, 3, "h2", "h2:10:1", "third", False), ("s", "1", 1, 1, "h2", None, "in the recovery", False)]


def test_an_iteration_is_recorded_once_with_its_item(opened) -> None:
    writer = opened.writer("r1", 0, "here")
    writer.iteration("each", "1.1", item_text("a.csv"), 1.0)
    writer.iteration("each", "1.1", item_text("other"), 2.0)
    writer.iteration("each", "1.2", item_text("b.csv"), 1.5)
    writer.commit()
    writer.iteration("each", "1.2", item_text("late"), 3.0)
    writer.commit()
    assert [(r.step, r.sequence, r.recovery, r.item, r.started) for r in opened.iteration_rows("r1")] == [
        ("each", "1.1", 0, "'a.csv'", 1.0), ("each", "1.2", 0, "'b.csv'", 1.5)]


@pytest.mark.parametrize("text", ["before\x00after", "bad \udcff byte", "x" * (1 << 20)])
def test_item_and_error_texts_no_database_takes_as_they_are_are_stored(opened, text) -> None:
    writer = opened.writer("r1", 0, "here")
    writer.task("s", "1", "active", created=1.0, new=True, item=text)
    writer.iteration("each", "1.1", text, 1.0)
    writer.try_ended("s", "1", 1, started=1.0, ended=2.0, host=None, pid=1, error=text, timed_out=False)
    writer.commit()
    opened.record_try("r1", 0, "s", "1", 2, started=1.0, ended=2.0, host="h", pid=1, owner=None, error=text,
                      timed_out=False)
    item = rows(opened)[("s", "1")].item
    [iteration] = opened.iteration_rows("r1")
    errors = [r[6] for r in try_rows(opened)]
    assert item == iteration.item and item.startswith(text[:3]) and len(item) < ITEM_LIMIT + 100
    assert "\x00" not in item and len(errors) == 2 and all(e.startswith(text[:3]) and "\x00" not in e for e in errors)


def test_an_item_text_is_recorded_exactly_as_item_text_made_it(opened) -> None:
    long = ["y" * 50] * 100  # a repr longer than ITEM_LIMIT: recorded cut, and cut only once
    writer = opened.writer("r1", 0, "here")
    writer.task("s", "1", "active", created=1.0, new=True, item=item_text(long))
    writer.iteration("each", "1.1", item_text(long), 1.0)
    writer.commit()
    assert rows(opened)[("s", "1")].item == item_text(long) == opened.previous_items("r1", 0)[("each", "1.1")]
    assert "characters cut" in item_text(long)


# --------------------------------------------------------------------------------------------- claims

def test_a_claim_is_fenced_by_its_try_number(opened) -> None:
    writer = opened.writer("r1", 0, "here")
    writer.task("s", "1", "active", created=1.0, started=1.0, new=True)
    writer.commit()
    claim = opened.claim_task
    assert claim("r1", 0, "s", "1", owner="a:1:1", pid=None, logfile="/a") is True
    assert claim("r1", 0, "s", "1", owner="b:1:1", pid=None, logfile="/b") is False  # try 1 is a's
    # try 1 failed; the coordinator records it and waits for try 2
    writer.task("s", "1", "active", created=1.0, started=1.0, new=False, tries=1, retry_at=5.0)
    writer.commit()
    assert claim("r1", 0, "s", "1", owner="b:1:1", pid=None, logfile="/b", try_number=2) is True
    assert claim("r1", 0, "s", "1", owner="c:1:1", pid=None, logfile="/c", try_number=2) is False
    assert claim("r1", 0, "s", "1", owner="c:1:1", pid=None, logfile="/c") is False
    row = rows(opened)[("s", "1")]
    assert (row.owner, row.logfile, row.tries) == ("b:1:1", "/b", 2)
    assert claim("r1", 0, "s", "1", owner="c:1:1", pid=None, logfile="/c", try_number=3) is True
    assert opened.finish_task("r1", 0, "s", "1", status="failure", ended=9.0, pid=1, host="c", result=None,
                              error="boom", owner="c:1:1") is True
    assert claim("r1", 0, "s", "1", owner="d:1:1", pid=None, logfile="/d", try_number=4) is False  # not active
    row = rows(opened)[("s", "1")]
    assert (row.status, row.owner, row.tries) == ("failure", "c:1:1", 3)


def test_a_first_claim_leaves_tries_unrecorded_as_before(opened) -> None:
    writer = opened.writer("r1", 0, "here")
    writer.task("s", "1", "active", created=1.0, started=1.0, new=True)
    writer.commit()
    assert opened.claim_task("r1", 0, "s", "1", owner="a:1:1", pid=3, logfile=None, try_number=1) is True
    row = rows(opened)[("s", "1")]
    assert (row.owner, row.pid, row.tries) == ("a:1:1", 3, None)


# --------------------------------------------------------------------------------------------- what a recovery reads

def test_previous_retries_are_the_tasks_whose_latest_row_waits_for_a_try(opened) -> None:
    first = opened.writer("r1", 0, "here")
    first.task("waits", "1", "active", created=1.0, new=True, tries=2, retry_at=100.0)
    first.task("runs", "1", "active", created=1.0, new=True, tries=2)  # running its try: no retry_at
    first.task("failed", "1", "failure", created=1.0, new=True, tries=3, retry_at=90.0)  # not active
    first.task("redone", "1", "active", created=1.0, new=True, tries=1, retry_at=80.0)
    first.task("first", "1", "active", created=1.0, new=True, retry_at=70.0)  # tries NULL: 1
    first.commit()
    second = opened.writer("r1", 1, "here")
    second.task("redone", "1", "success", created=2.0, new=True)  # attempt 1 ran it again
    second.task("waits", "1.5", "active", created=2.0, new=True, tries=4, retry_at=120.0)
    second.commit()
    assert opened.previous_retries("r1", 0) == {("waits", "1"): (2, 100.0), ("redone", "1"): (1, 80.0),
                                                ("first", "1"): (1, 70.0)}
    assert opened.previous_retries("r1", 1) == {("waits", "1"): (2, 100.0), ("first", "1"): (1, 70.0),
                                                ("waits", "1.5"): (4, 120.0)}
    assert opened.previous_retries("other", 1) == {}


def test_previous_items_are_the_latest_attempts_items_by_iteration(opened) -> None:
    first = opened.writer("r1", 0, "here")
    first.iteration("each", "1.1", "'a'", 1.0)
    first.iteration("each", "1.2", "'b'", 1.0)
    first.commit()
    second = opened.writer("r1", 1, "here")
    second.iteration("each", "1.2", "'B'", 2.0)
    second.iteration("each", "1.3", "'c'", 2.0)
    second.commit()
    assert opened.previous_items("r1", 0) == {("each", "1.1"): "'a'", ("each", "1.2"): "'b'"}
    assert opened.previous_items("r1", 1) == {("each", "1.1"): "'a'", ("each", "1.2"): "'B'",
                                              ("each", "1.3"): "'c'"}


# --------------------------------------------------------------------------------------------- older stores

def succeed() -> str:
    return "ok"


@pytest.mark.parametrize("version", [2, 3])
def test_a_store_without_items_and_tries_reads_without_them_and_gains_them_keeping_its_runs(store, flow_config,
                                                                                            version) -> None:
    """Version 2, and a version 3 store made before the items and tries came (never released)."""
    flow = seq.Sequent(name="old", store=store.store, config=flow_config(task_construct="thread"))
    flow.add_step("s1", succeed)
    assert flow.run() is True
    old_run = flow.run_id
    opened = open_store(store.store)
    with opened._tx() as conn:
        for column in ("item", "tries", "retry_at"):
            conn.execute(sa.text(f"ALTER TABLE sequent_tasks DROP COLUMN {column}"))
        for table in ("sequent_tries", "sequent_iterations"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(schema_info.update().values(value=str(version)))
    opened.dispose()

    [task] = seq.run_tasks(store.store, old_run)  # a reader reads it as it is
    assert (task.step, task.status, task.item, task.tries) == ("s1", "success", None, None)
    detail = seq.run_detail(store.store, old_run)
    assert (detail.tries, detail.iterations, [t.item for t in detail.tasks]) == ([], [], [None])

    again = seq.Sequent(name="old", store=store.store, config=flow_config(task_construct="thread"))
    again.add_step("s1", succeed)
    assert again.run() is True
    assert [r.run_id for r in seq.list_runs(store.store)] == [old_run, again.run_id]
    opened = open_store(store.store)
    try:
        assert opened.conn.execute(sa.select(schema_info.c.value)).scalar() == str(SCHEMA_VERSION)
        inspector = sa.inspect(opened.conn)
        assert {"item", "tries", "retry_at"} <= {c["name"] for c in inspector.get_columns(tasks.name)}
        assert inspector.has_table(tries.name) and inspector.has_table(iterations.name)
        [row] = opened.task_rows(old_run)
        assert (row.step, row.status, row.item, row.tries) == ("s1", "success", None, None)
        opened.record_try(old_run, 0, "s1", "1", 1, started=1.0, ended=2.0, host="h", pid=1, owner=None,
                          error="boom", timed_out=False)
        assert len(opened.try_rows(old_run)) == 1
    finally:
        opened.dispose()


# --------------------------------------------------------------------------------------------- history and show

def work(path: str) -> str:
    return path


def sequent(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def header_and_rows(out: str) -> tuple[list[str], list[list[str]]]:
    """The first table in ``out``: its header's words and its rows, split on runs of 2+ spaces."""
    import re

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("STEP"))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(re.split(r" {2,}", line.strip()))
    return lines[start].split(), rows


@pytest.fixture
def fanned(store, flow_config) -> dict:
    """A real run of extract -> each (over a.csv, b.csv) around transform -> load, then what the
    coordinator is to record of it written with the store API: the items, and transform of b.csv
    taking three tries (the second timed out)."""
    flow = seq.Sequent(name="etl", store=store.store, config=flow_config(task_construct="thread"))
    extract = flow.add_step("extract", work, args=("all",))
    each = flow.add_step("each", repeats=["a.csv", "b.csv"], requires=((extract, OK),))
    each.add_step("transform", work, args=("x",))
    flow.add_step("load", work, args=("y",), requires=((each, OK),))
    assert flow.run() is True
    opened = open_store(store.store)
    try:
        writer = opened.writer(flow.run_id, 0, "here")
        for sequence, item in (("1.1", "a.csv"), ("1.2", "b.csv")):
            writer.iteration("each", sequence, item_text(item), 10.0)
            writer.task("each_transform", sequence, "success", created=10.0, started=10.0, ended=11.0, new=False,
                        item=item_text(item), tries=3 if item == "b.csv" else 1)
        writer.try_ended("each_transform", "1.2", 1, started=10.0, ended=10.5, host="h1", pid=5,
                         error="Traceback (most recent call last):\n  File \"x.py\", line 1\nOSError: disk full",
                         timed_out=False)
        writer.try_ended("each_transform", "1.2", 2, started=10.6, ended=10.9, host="h1", pid=6,
                         error="step each_transform timed out after 0.3 s", timed_out=True)
        writer.commit()
    finally:
        opened.dispose()
    return {"store": store.store, "run_id": flow.run_id}


def test_the_history_api_gives_each_tasks_item_and_tries_and_every_recorded_try_and_iteration(fanned) -> None:
    detail = seq.run_detail(fanned["store"], fanned["run_id"])
    found = {(t.step, t.sequence): (t.item, t.tries) for t in detail.tasks}
    assert found[("each_transform", "1.1")] == ("'a.csv'", 1)
    assert found[("each_transform", "1.2")] == ("'b.csv'", 3)
    assert found[("extract", "1")][0] is None and found[("load", "1")][0] is None
    assert [(t.step, t.sequence, t.recovery, t.try_number, t.host, t.pid, t.timed_out, t.error_line)
            for t in detail.tries] == [
        ("each_transform", "1.2", 0, 1, "h1", 5, False, "OSError: disk full"),
        ("each_transform", "1.2", 0, 2, "h1", 6, True, "step each_transform timed out after 0.3 s")]
    assert detail.tries[0].started.timestamp() == 10.0 and detail.tries[0].duration == pytest.approx(0.5)
    assert [(i.step, i.sequence, i.recovery, i.item) for i in detail.iterations] == [
        ("each", "1.1", 0, "'a.csv'"), ("each", "1.2", 0, "'b.csv'")]
    [transform_b] = [t for t in detail.tasks if (t.step, t.sequence) == ("each_transform", "1.2")]
    assert [t.try_number for t in detail.tries_of(transform_b)] == [1, 2]
    assert {(t.step, t.sequence): t.item for t in seq.run_tasks(fanned["store"], fanned["run_id"])}[
        ("each_transform", "1.1")] == "'a.csv'"


def test_show_adds_item_and_tries_columns_and_its_json_has_them_with_the_tries(fanned, capsys) -> None:
    status, out, err = sequent(capsys, "show", fanned["store"], fanned["run_id"])
    assert status == 0, err
    header, rows = header_and_rows(out)
    assert header == ["STEP", "SEQUENCE", "ITEM", "ATTEMPT", "STATUS", "TRIES", "HOST", "STARTED", "DURATION",
                      "ERROR"]
    assert [r[:6] for r in rows] == [
        ["extract", "1", "-", "0", "success", "1"], ["each", "1", "-", "0", "success", "1"],
        ["each_transform", "1.1", "'a.csv'", "0", "success", "1"],
        ["each_transform", "1.2", "'b.csv'", "0", "success", "3"], ["load", "1", "-", "0", "success", "1"]]

    data = json.loads(sequent(capsys, "show", fanned["store"], fanned["run_id"], "--json")[1])
    by_key = {(t["step"], t["sequence"]): t for t in data["tasks"]}
    b = by_key[("each_transform", "1.2")]
    assert (b["item"], b["tries"]) == ("'b.csv'", 3)
    assert [(t["try"], t["timed_out"], t["error_line"]) for t in b["try_history"]] == [
        (1, False, "OSError: disk full"), (2, True, "step each_transform timed out after 0.3 s")]
    assert (by_key[("extract", "1")]["item"], by_key[("extract", "1")]["tries"],
            by_key[("extract", "1")]["try_history"]) == (None, 1, [])
    assert [(t["step"], t["sequence"], t["try_number"], t["timed_out"]) for t in data["tries"]] == [
        ("each_transform", "1.2", 1, False), ("each_transform", "1.2", 2, True)]
    assert [(i["sequence"], i["item"]) for i in data["iterations"]] == [("1.1", "'a.csv'"), ("1.2", "'b.csv'")]


def test_tasks_adds_item_and_tries_columns_and_its_json_has_them(fanned, capsys) -> None:
    status, out, err = sequent(capsys, "tasks", fanned["store"], fanned["run_id"])
    assert status == 0, err
    header, rows = header_and_rows(out)
    assert header == ["STEP", "SEQUENCE", "ITEM", "RECOVERY", "STATUS", "TRIES", "STARTED", "ENDED", "ERROR"]
    assert ["each_transform", "1.2", "'b.csv'", "0", "success", "3"] in [r[:6] for r in rows]
    data = json.loads(sequent(capsys, "tasks", fanned["store"], fanned["run_id"], "--json")[1])
    b = next(t for t in data if (t["step"], t["sequence"]) == ("each_transform", "1.2"))
    assert (b["item"], b["tries"], [t["try"] for t in b["try_history"]]) == ("'b.csv'", 3, [1, 2])


def test_show_and_tasks_have_no_item_or_tries_column_when_no_task_has_one(store, flow_config, capsys) -> None:
    flow = seq.Sequent(name="plain", store=store.store, config=flow_config(task_construct="thread"))
    first = flow.add_step("first", work, args=("x",))
    flow.add_step("second", work, args=("y",), requires=((first, OK),))
    assert flow.run() is True
    for command in ("show", "tasks"):
        status, out, err = sequent(capsys, command, store.store, flow.run_id)
        assert status == 0, err
        header, rows = header_and_rows(out)
        assert "ITEM" not in header and "TRIES" not in header and len(rows) == 2
    data = json.loads(sequent(capsys, "show", store.store, flow.run_id, "--json")[1])
    assert [(t["item"], t["tries"], t["try_history"]) for t in data["tasks"]] == [(None, 1, [])] * 2
    assert (data["tries"], data["iterations"]) == ([], [])


def test_a_databases_entry_with_a_schema_keeps_tries_and_iterations_in_that_schema(postgres_database) -> None:
    url = sa.engine.make_url(postgres_database)
    entry = {"dialect": "postgresql", "drivername": "psycopg", "username": url.username, "password": url.password,
             "host": url.host, "port": url.port, "database": url.database, "schema": "sequent_tries_test"}
    opened = Store(resolve_store("pg", {"pg": entry}, "")).open()
    try:
        opened.start_attempt(run_id="r1", flow="f", program=None, host="here", mode="restart", recovery=0,
                             based_on=None, fingerprint="x", steps=[])
        writer = opened.writer("r1", 0, "here")
        writer.task("s", "1.1", "active", created=1.0, new=True, item="'a'", tries=2, retry_at=9.0)
        writer.iteration("each", "1.1", "'a'", 1.0)
        writer.try_ended("s", "1.1", 1, started=1.0, ended=2.0, host=None, pid=1, error="boom", timed_out=False)
        writer.commit()
        opened.record_try("r1", 0, "s", "1.1", 1, started=1.0, ended=3.0, host="h", pid=2, owner=None,
                          error="again", timed_out=True)
        assert opened.previous_retries("r1", 0) == {("s", "1.1"): (2, 9.0)}
        assert opened.previous_items("r1", 0) == {("each", "1.1"): "'a'"}
        assert [(r.step, r.error) for r in opened.try_rows("r1")] == [("s", "boom")]
        where = opened.conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sequent_tries_test' "
            "AND table_name IN ('sequent_tries', 'sequent_iterations') ORDER BY table_name")).scalars().all()
        assert where == ["sequent_iterations", "sequent_tries"]
    finally:
        opened.dispose()
