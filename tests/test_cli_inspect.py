"""The reading commands (``sequent runs``, ``show``, ``logs``, ``tasks``) and the history API under them
(``run_detail``, ``RunDetail``, ``AttemptInfo``), against stores written by real runs.

The store of this module holds three runs, oldest first:

* ``failed`` of flow ``etl.py``: container ``loop`` repeated twice around ``part``, then ``load``
  that fails, then ``publish`` that never starts because it requires ``load``'s success; then a
  recovery in which ``load`` fails again, so the run has two attempts and is still a failure;
* ``fine`` of flow ``etl.py``: the same flow, succeeding;
* ``other`` of flow ``other``: one step, succeeding.

Its path has a space in it, so that the recover command ``show`` prints must quote it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import sequent as seq
from sequent.cli import main
from sequent.runs import AttemptInfo, RunDetail, run_detail

REPO = Path(__file__).resolve().parents[1]
OK = seq.STEP_SUCCESS
THIS_FILE = str(Path(__file__).resolve())


# --------------------------------------------------------------------------------------------- flows

def work(name: str, fail: bool = False) -> str:
    """A step: logs a line to its task's logger, then fails when told to."""
    logging.getLogger(os.environ["SEQUENT_LOGGER_NAME"]).info("working on %s", name)
    if fail:
        raise RuntimeError(f"{name} could not reach the warehouse\nretry later")
    return name


def etl(store: str, logdir: str, *, fail: bool, name: str = "etl.py", **kwargs) -> seq.Sequent:
    """loop (repeats 1, 2) around part -> load (fails when ``fail``) -> publish (needs load's success)."""
    flow = seq.Sequent(name=name, store=store, config={"LOGGING": {"logdir": logdir, "console": False}}, **kwargs)
    loop = flow.add_step("loop", repeats=[1, 2])
    loop.add_step("part", func=work, kwargs={"name": "part"})
    load = flow.add_step("load", func=work, kwargs={"name": "load", "fail": fail}, requires=((loop, OK),))
    flow.add_step("publish", func=work, kwargs={"name": "publish"}, requires=((load, OK),))
    return flow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The module's store (see the module's text): {'store', 'logdir', 'failed', 'fine', 'other'}."""
    base = tmp_path_factory.mktemp("inspect") / "with space"
    base.mkdir()
    store, logdir = str(base / "runs.db"), str(base / "logs")
    failed = etl(store, logdir, fail=True)
    assert failed.run() is False
    assert failed.run(run_mode=seq.RUN_RECOVER, run_id=failed.run_id) is False
    fine = etl(store, logdir, fail=False)
    assert fine.run() is True
    other = seq.Sequent(name="other", store=store, config={"LOGGING": {"logdir": logdir, "console": False}})
    other.add_step("solo", func=work, kwargs={"name": "solo"})
    assert other.run() is True
    return {"store": store, "logdir": logdir, "failed": failed.run_id, "fine": fine.run_id, "other": other.run_id}


def sequent(capsys, *args: str) -> tuple[int, str, str]:
    """``sequent ARGS`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def table_rows(out: str) -> list[list[str]]:
    """The rows of the first table in ``out`` (after its header line), split on runs of 2+ spaces."""
    import re

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("RUN_ID", "STEP")))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(re.split(r" {2,}", line.strip()))
    return rows


# --------------------------------------------------------------------------------------------- the history API

def test_run_detail_has_the_runs_attempts_oldest_first_with_their_modes_and_logging(runs):
    detail = run_detail(runs["store"], runs["failed"])
    assert isinstance(detail, RunDetail) and all(isinstance(a, AttemptInfo) for a in detail.attempts)
    assert [(a.recovery, a.mode, a.based_on, a.outcome) for a in detail.attempts] == [
        (0, "restart", None, "failure"), (1, "recover", 0, "failure")]
    assert all(a.duration is not None and a.duration >= 0 for a in detail.attempts)
    assert all(a.logging["run_log"].startswith(runs["logdir"]) for a in detail.attempts)
    assert detail.run.run_id == runs["failed"] and detail.run.recoveries == 1 and detail.run.outcome == "failure"


def test_run_detail_shape_is_every_step_of_the_flow_with_its_container(runs):
    detail = run_detail(runs["store"], runs["failed"])
    assert detail.shape == [("loop", None, "container"), ("loop_part", "loop", "step"), ("load", None, "step"),
                            ("publish", None, "step")]


def test_latest_gives_each_task_the_row_of_the_newest_attempt_that_has_it_in_the_flows_order(runs):
    detail = run_detail(runs["store"], runs["failed"])
    assert [(t.step, t.sequence, t.recovery, t.status, t.skipped) for t in detail.latest()] == [
        ("loop", "1", 1, "success", False), ("loop_part", "1.1", 1, "success", True),
        ("loop_part", "1.2", 1, "success", True), ("load", "1", 1, "failure", False)]
    assert len(detail.tasks) == 8  # both attempts' rows are kept


def test_not_started_names_the_steps_no_attempt_created_a_task_for(runs):
    assert run_detail(runs["store"], runs["failed"]).not_started() == ["publish"]
    assert run_detail(runs["store"], runs["fine"]).not_started() == []


def test_counts_count_skipped_apart_from_success_and_steps_never_started(runs):
    assert run_detail(runs["store"], runs["failed"]).counts() == {
        "success": 1, "skipped": 2, "failure": 1, "active": 0, "ready": 0, "not started": 1}
    assert run_detail(runs["store"], runs["fine"]).counts() == {
        "success": 5, "skipped": 0, "failure": 0, "active": 0, "ready": 0, "not started": 0}


def test_a_runs_duration_adds_up_its_attempts_and_list_runs_gives_the_same(runs):
    detail = run_detail(runs["store"], runs["failed"])
    assert detail.duration == pytest.approx(sum(a.duration for a in detail.attempts), abs=1e-5)
    [listed] = [r for r in seq.list_runs(runs["store"]) if r.run_id == runs["failed"]]
    assert listed.duration == pytest.approx(detail.duration, abs=1e-5) and detail.run.duration == detail.duration


def test_a_failed_tasks_error_line_is_the_exception_line_not_the_messages_last_line(runs):
    [load] = [t for t in run_detail(runs["store"], runs["failed"]).latest() if t.step == "load"]
    assert load.error.splitlines()[-1] == "retry later"  # the message has two lines
    assert load.error_line == "RuntimeError: load could not reach the warehouse"


def test_run_detail_latest_is_the_newest_run_of_the_flow_named_with_or_without_py(runs):
    assert run_detail(runs["store"], latest=True).run.run_id == runs["other"]
    assert run_detail(runs["store"], latest=True, flow="etl").run.run_id == runs["fine"]
    assert run_detail(runs["store"], latest=True, flow="etl.py").run.run_id == runs["fine"]


def test_run_detail_of_no_run_raises_no_run_error_naming_it(runs, tmp_path):
    with pytest.raises(seq.SequentError) as unknown:
        run_detail(runs["store"], "no-such-run")
    assert type(unknown.value).__name__ == "NoRunError" and "no-such-run" in str(unknown.value)
    with pytest.raises(seq.SequentError, match="no run of flow 'nothing'"):
        run_detail(runs["store"], latest=True, flow="nothing")
    missing = str(tmp_path / "missing.db")
    with pytest.raises(seq.SequentError, match="no store at"):
        run_detail(missing, latest=True)
    assert not os.path.exists(missing)


def test_list_runs_finds_a_flow_with_or_without_py(runs):
    assert [r.run_id for r in seq.list_runs(runs["store"], flow="etl")] == [runs["failed"], runs["fine"]]
    assert [r.run_id for r in seq.list_runs(runs["store"], flow="etl.py")] == [runs["failed"], runs["fine"]]
    assert [r.run_id for r in seq.list_runs(runs["store"], flow="other.py")] == [runs["other"]]


# --------------------------------------------------------------------------------------------- sequent runs

def test_runs_lists_newest_first_with_flow_recoveries_duration_and_outcome(runs, capsys):
    status, out, err = sequent(capsys, "runs", runs["store"])
    assert status == 0, err
    assert out.splitlines()[0].split() == ["RUN_ID", "FLOW", "RECOVERIES", "STARTED", "DURATION", "OUTCOME"]
    rows = table_rows(out)
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        (runs["other"], "other", "0", "success"), (runs["fine"], "etl.py", "0", "success"),
        (runs["failed"], "etl.py", "1", "failure")]
    assert all(r[4].endswith(" s") for r in rows)  # durations, e.g. "0.05 s"


def test_runs_filters_by_flow_with_or_without_py_by_outcome_and_limits(runs, capsys):
    def ids(*args: str) -> list[str]:
        status, out, err = sequent(capsys, "runs", runs["store"], *args)
        assert status == 0, err
        return [r[0] for r in table_rows(out)]

    assert ids("--flow", "etl") == ids("--flow", "etl.py") == [runs["fine"], runs["failed"]]
    assert ids("--outcome", "failure") == [runs["failed"]]
    assert ids("--limit", "2") == [runs["other"], runs["fine"]]
    assert ids("--flow", "etl", "--outcome", "success", "--limit", "5") == [runs["fine"]]


def test_runs_without_a_match_says_so(runs, capsys):
    status, out, _ = sequent(capsys, "runs", runs["store"], "--flow", "nothing")
    assert status == 0 and out.strip() == f"No runs of flow 'nothing' in store {runs['store']}."


def test_runs_json_is_a_list_of_runs_newest_first_with_their_fields(runs, capsys):
    status, out, err = sequent(capsys, "runs", runs["store"], "--json")
    assert status == 0, err
    data = json.loads(out)
    assert [r["run_id"] for r in data] == [runs["other"], runs["fine"], runs["failed"]]
    failed = data[2]
    assert {k: failed[k] for k in ("flow", "recoveries", "outcome", "program")} == {
        "flow": "etl.py", "recoveries": 1, "outcome": "failure", "program": THIS_FILE}
    assert failed["duration"] > 0 and failed["started"] < failed["ended"]
    assert json.loads(sequent(capsys, "runs", runs["store"], "--outcome", "interrupted", "--json")[1]) == []


# --------------------------------------------------------------------------------------------- sequent show

def test_show_summarises_the_run_then_lists_every_step_including_those_never_started(runs, capsys):
    status, out, err = sequent(capsys, "show", runs["store"], runs["failed"])
    assert status == 0, err
    head = out.splitlines()
    assert head[0] == f"Run {runs['failed']} of flow etl.py: failure"
    summary = {line.split()[0]: line.split(None, 1)[1] for line in head[1:6]}
    assert summary["attempts"].startswith("2: #0 restart, failure") and "#1 recover (based on #0), failure" in \
        summary["attempts"]
    assert summary["tasks"] == "1 success, 2 skipped, 1 failure, 1 not started"
    assert summary["program"] == THIS_FILE
    rows = table_rows(out)
    # the steps inside the repeated container show their iteration's item (an ITEM column appears)
    assert [r[:5] for r in rows] == [["loop", "1", "-", "1", "success"], ["loop_part", "1.1", "1", "1", "skipped"],
                                     ["loop_part", "1.2", "2", "1", "skipped"], ["load", "1", "-", "1", "failure"],
                                     ["publish", "-", "-", "-", "not started"]]
    assert rows[3][-1] == "RuntimeError: load could not reach the warehouse"


def test_show_ends_a_failed_run_with_the_exact_recover_command_quoting_the_store(runs, capsys):
    _, out, _ = sequent(capsys, "show", runs["store"], runs["failed"])
    expected = f"sequent recover {shlex.quote(THIS_FILE)} {runs['failed']} --store {shlex.quote(runs['store'])}"
    assert "'" in shlex.quote(runs["store"])  # the store's path has a space: it must be quoted
    assert out.rstrip().splitlines()[-2:] == ["To recover it, run:", "  " + expected]
    assert shlex.split(expected)[-1] == runs["store"]


def test_show_of_a_successful_run_gives_no_recover_command(runs, capsys):
    status, out, _ = sequent(capsys, "show", runs["store"], runs["fine"])
    assert status == 0 and "recover" not in out and [r[4] for r in table_rows(out)] == ["success"] * 5  # after ITEM


def test_show_failed_lists_the_failures_only(runs, capsys):
    status, out, _ = sequent(capsys, "show", runs["store"], runs["failed"], "--failed")
    assert status == 0
    assert [r[:4] for r in table_rows(out)] == [["load", "1", "1", "failure"]]
    assert "sequent recover" in out
    _, fine, _ = sequent(capsys, "show", runs["store"], runs["fine"], "--failed")
    assert "No failed tasks." in fine


def test_show_latest_shows_the_newest_run_of_the_flow(runs, capsys):
    _, out, _ = sequent(capsys, "show", runs["store"], "--latest")
    assert out.startswith(f"Run {runs['other']} of flow other: success")
    _, out, _ = sequent(capsys, "show", runs["store"], "--latest", "--flow", "etl")
    assert out.startswith(f"Run {runs['fine']} of flow etl.py: success")


def test_show_json_has_the_run_attempts_counts_every_task_and_the_recover_command(runs, capsys):
    status, out, err = sequent(capsys, "show", runs["store"], runs["failed"], "--json")
    assert status == 0, err
    data = json.loads(out)
    assert data["run"]["run_id"] == runs["failed"] and data["run"]["outcome"] == "failure"
    assert [(a["recovery"], a["mode"], a["outcome"]) for a in data["attempts"]] == [
        (0, "restart", "failure"), (1, "recover", "failure")]
    assert data["counts"] == {"success": 1, "skipped": 2, "failure": 1, "active": 0, "ready": 0, "not started": 1}
    assert [(t["step"], t["sequence"], t["state"]) for t in data["tasks"]] == [
        ("loop", "1", "success"), ("loop_part", "1.1", "skipped"), ("loop_part", "1.2", "skipped"),
        ("load", "1", "failure"), ("publish", None, "not started")]
    load = data["tasks"][3]
    assert load["error_line"] == "RuntimeError: load could not reach the warehouse"
    assert "RuntimeError: load could not reach the warehouse" in load["error"].splitlines()
    assert load["container"] is None and data["tasks"][1]["container"] == "loop"
    assert data["recover"]["command"] == (f"sequent recover {shlex.quote(THIS_FILE)} {runs['failed']} "
                                          f"--store {shlex.quote(runs['store'])}")
    assert data["duration"] > 0
    failed_only = json.loads(sequent(capsys, "show", runs["store"], runs["failed"], "--failed", "--json")[1])
    assert [t["step"] for t in failed_only["tasks"]] == ["load"]
    assert json.loads(sequent(capsys, "show", runs["store"], runs["fine"], "--json")[1])["recover"] is None


def test_show_of_a_run_whose_program_is_not_recorded_gives_the_python_to_recover_it(runs, tmp_path, capsys):
    store = str(tmp_path / "copy.db")
    for suffix in ("", "-wal", "-shm"):  # a WAL store's last writes may still be in its -wal file
        if os.path.exists(runs["store"] + suffix):
            shutil.copy(runs["store"] + suffix, store + suffix)
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE sequent_runs SET program = NULL WHERE run_id = ?", (runs["failed"],))
    conn.close()
    status, out, _ = sequent(capsys, "show", store, runs["failed"])
    assert status == 0 and "sequent recover" not in out
    assert "The program that ran it is not recorded" in out
    assert f"flow.run(run_mode=seq.RUN_RECOVER, run_id='{runs['failed']}')" in out


def test_show_via_python_m_sequent_prints_the_recover_command(runs):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "sequent", "show", runs["store"], runs["failed"]], env=env,
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().splitlines()[-1].strip() == (
        f"sequent recover {shlex.quote(THIS_FILE)} {runs['failed']} --store {shlex.quote(runs['store'])}")
    missing = subprocess.run([sys.executable, "-m", "sequent", "show", runs["store"], "no-such-run"], env=env,
                             capture_output=True, text=True, timeout=20)
    assert missing.returncode == 3 and missing.stdout == ""
    assert missing.stderr.strip() == f"sequent: no run 'no-such-run' in store {runs['store']}"


# --------------------------------------------------------------------------------------------- sequent logs

def test_logs_prints_the_run_log_of_every_attempt(runs, capsys):
    status, out, err = sequent(capsys, "logs", runs["store"], runs["failed"])
    assert status == 0, err
    first = out.splitlines()[0]
    assert first.startswith("--- run log of attempts 0, 1: ") and first.endswith(f"{runs['failed']}.log ---")
    assert "working on load" in out and "Recovering run" in out


def test_logs_of_a_failed_step_prints_its_log_file_then_its_recorded_traceback(runs, capsys):
    status, out, err = sequent(capsys, "logs", runs["store"], runs["failed"], "load")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "=== load/1 ==="
    assert lines[1].startswith("--- log file of attempts 0, 1: ") and lines[1].endswith("load_1.log ---")
    assert sum("working on load" in line for line in lines) == 2  # one line per attempt
    errors = [i for i, line in enumerate(lines) if line.startswith("--- error recorded by attempt")]
    assert [lines[i] for i in errors] == ["--- error recorded by attempt 0 (failure) ---",
                                          "--- error recorded by attempt 1 (failure) ---"]
    traceback = lines[errors[0] + 1:errors[1]]
    assert any(line.startswith("  File ") and line.endswith(", in work") for line in traceback)
    assert "RuntimeError: load could not reach the warehouse" in traceback


def test_logs_of_a_step_run_at_several_sequences_prints_each_headed_or_the_one_asked_for(runs, capsys):
    _, out, _ = sequent(capsys, "logs", runs["store"], runs["failed"], "loop_part")
    heads = [line for line in out.splitlines() if line.startswith("===")]
    assert heads == ["=== loop_part/1.1 ===", "=== loop_part/1.2 ==="]
    assert out.count("working on part") == 2
    _, one, _ = sequent(capsys, "logs", runs["store"], runs["failed"], "loop_part/1.2")
    assert [line for line in one.splitlines() if line.startswith("===")] == ["=== loop_part/1.2 ==="]
    assert "--- log file of attempt 0: " in one  # attempt 1 skipped it: it did not run there


def test_logs_of_a_step_that_never_started_says_so(runs, capsys):
    status, out, _ = sequent(capsys, "logs", runs["store"], runs["failed"], "publish")
    assert status == 0 and out.strip() == f"Step publish never started in run {runs['failed']}: it has no log."


def test_logs_notes_a_missing_log_file_in_one_line(runs, tmp_path, capsys):
    logdir, store = tmp_path / "logs", str(tmp_path / "r.db")
    flow = etl(store, str(logdir), fail=True)
    assert flow.run() is False
    [task_file] = [p for p in logdir.iterdir() if p.name.endswith(".load_1.log")]
    task_file.unlink()
    status, out, _ = sequent(capsys, "logs", store, flow.run_id, "load/1")
    assert status == 0
    assert f"--- no log file of attempt 0 at {task_file}: nothing was logged there, or the file was removed ---" \
        in out.splitlines()
    assert "RuntimeError: load could not reach the warehouse" in out  # the store's record still follows
    [run_file] = [p for p in logdir.iterdir() if p.name == f"etl.py-{flow.run_id}.log"]
    run_file.unlink()
    status, out, _ = sequent(capsys, "logs", store, flow.run_id)
    assert status == 0 and out.strip().startswith("--- no run log of attempt 0 at ")


def test_logs_of_a_task_whose_log_file_is_on_another_host_names_the_host(runs, tmp_path, capsys):
    """What a remote host records (its host name and log file) is said, not read, when not on this machine."""
    store = str(tmp_path / "remote.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(runs["store"] + suffix):
            shutil.copy(runs["store"] + suffix, store + suffix)
    elsewhere = str(tmp_path / "on-faraway" / "load_1.log")
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE sequent_tasks SET host = 'faraway', logfile = ? WHERE step = 'load' AND run_id = ?",
                     (elsewhere, runs["failed"]))
    conn.close()
    status, out, _ = sequent(capsys, "logs", store, runs["failed"], "load")
    assert status == 0
    assert out.splitlines()[1] == (f"--- log file of attempts 0, 1 is on host faraway, not on this machine: "
                                   f"{elsewhere} ---")
    assert "RuntimeError: load could not reach the warehouse" in out


def test_a_store_of_schema_version_2_is_shown_and_its_logs_said_to_be_unrecorded(runs, tmp_path, capsys):
    """Version 2 stores have no graph or logging with their attempts: show works, logs says why it has none."""
    store = str(tmp_path / "old.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(runs["store"] + suffix):
            shutil.copy(runs["store"] + suffix, store + suffix)
    with sqlite3.connect(store) as conn:
        conn.execute("ALTER TABLE sequent_attempts DROP COLUMN graph")
        conn.execute("ALTER TABLE sequent_attempts DROP COLUMN logging")
        conn.execute("UPDATE sequent_schema SET value = '2' WHERE key = 'version'")
    conn.close()
    detail = run_detail(store, runs["failed"])
    assert detail.graph is None and [a.logging for a in detail.attempts] == [None, None]
    status, out, _ = sequent(capsys, "show", store, runs["failed"])
    assert status == 0 and "1 success, 2 skipped, 1 failure, 1 not started" in out
    status, out, _ = sequent(capsys, "logs", store, runs["failed"])
    assert status == 0 and out.strip() == ("(attempts 0, 1 did not record where its logs went: "
                                           "a store written by an older sequent)")
    status, out, _ = sequent(capsys, "logs", store, runs["failed"], "load")
    assert status == 0 and "did not record where its logs went" in out
    assert "RuntimeError: load could not reach the warehouse" in out


def test_logs_json_says_where_the_logs_are_and_the_recorded_errors(runs, capsys):
    data = json.loads(sequent(capsys, "logs", runs["store"], runs["failed"], "--json")[1])
    [run_log] = data["run_logs"]
    assert run_log["attempts"] == [0, 1] and run_log["exists"] is True
    data = json.loads(sequent(capsys, "logs", runs["store"], runs["failed"], "load/1", "--json")[1])
    assert [(t["attempt"], t["state"], t["log_exists"], t["error_line"]) for t in data["tasks"]] == [
        (0, "failure", True, "RuntimeError: load could not reach the warehouse"),
        (1, "failure", True, "RuntimeError: load could not reach the warehouse")]


def test_logs_of_an_unknown_step_exits_2_naming_the_known_ones(runs, capsys):
    status, out, err = sequent(capsys, "logs", runs["store"], runs["failed"], "lod")
    assert status == 2 and out == ""
    assert err.strip() == (f"sequent: run {runs['failed']} has no step 'lod' "
                           "(its steps: loop, loop_part, load, publish)")
    status, _, err = sequent(capsys, "logs", runs["store"], runs["failed"], "load/7")
    assert status == 2 and "has no sequence '7' (its sequences: 1)" in err


# --------------------------------------------------------------------------------------------- sequent tasks

def test_tasks_lists_every_attempts_rows_then_the_steps_never_started(runs, capsys):
    status, out, err = sequent(capsys, "tasks", runs["store"], runs["failed"])
    assert status == 0, err
    assert [r[:5] for r in table_rows(out)] == [  # STEP SEQUENCE ITEM RECOVERY STATUS
        ["loop", "1", "-", "0", "success"], ["loop_part", "1.1", "1", "0", "success"],
        ["loop_part", "1.2", "2", "0", "success"], ["load", "1", "-", "0", "failure"], ["loop", "1", "-", "1", "success"],
        ["loop_part", "1.1", "1", "1", "success (skipped)"], ["loop_part", "1.2", "2", "1", "success (skipped)"],
        ["load", "1", "-", "1", "failure"], ["publish", "-", "-", "-", "not started"]]
    data = json.loads(sequent(capsys, "tasks", runs["store"], runs["failed"], "--recovery", "0", "--json")[1])
    assert [(t["step"], t["attempt"], t["status"]) for t in data] == [
        ("loop", 0, "success"), ("loop_part", 0, "success"), ("loop_part", 0, "success"), ("load", 0, "failure")]


# --------------------------------------------------------------------------------------------- exit statuses

@pytest.mark.parametrize("command", [["runs"], ["show", "RUN"], ["logs", "RUN"], ["tasks", "RUN"]])
def test_a_missing_store_exits_3_naming_it_and_creates_nothing(runs, tmp_path, capsys, command):
    missing = str(tmp_path / "missing.db")
    args = [command[0], missing] + [runs["failed"] for _ in command[1:]]
    status, out, err = sequent(capsys, *args)
    assert status == 3 and out == ""
    assert err.strip() == f"sequent: no store at {missing}"
    assert not os.path.exists(missing)


@pytest.mark.parametrize("command", ["show", "logs", "tasks"])
def test_an_unknown_run_exits_3_naming_it_and_the_store(runs, capsys, command):
    status, out, err = sequent(capsys, command, runs["store"], "no-such-run")
    assert status == 3 and out == ""
    assert err.strip() == f"sequent: no run 'no-such-run' in store {runs['store']}"


def test_show_latest_of_a_flow_without_runs_exits_3(runs, capsys):
    status, _, err = sequent(capsys, "show", runs["store"], "--latest", "--flow", "nothing")
    assert status == 3 and "no run of flow 'nothing'" in err


@pytest.mark.parametrize("args", [
    ["show", "STORE"],  # neither RUN_ID nor --latest
    ["show", "STORE", "RUN", "--latest"],
    ["show", "STORE", "RUN", "--flow", "etl"],
    ["runs", "STORE", "--limit", "0"],
    ["runs", "STORE", "--outcome", "exploded"],
    ["runs", "STORE", "--limit", "many"],
    ["logs"],
])
def test_bad_usage_exits_2(runs, capsys, args):
    args = [runs["store"] if a == "STORE" else runs["failed"] if a == "RUN" else a for a in args]
    status, out, err = sequent(capsys, *args)
    assert status == 2 and out == "" and err.strip()


# --------------------------------------------------------------------------------------------- PostgreSQL

def test_runs_and_show_json_read_a_postgresql_store(postgres_database, tmp_path, capsys):
    flow = etl(postgres_database, str(tmp_path / "logs"), fail=True, name="pg")
    assert flow.run() is False
    assert flow.run(run_mode=seq.RUN_RECOVER, run_id=flow.run_id) is False
    status, out, err = sequent(capsys, "runs", postgres_database, "--json")
    assert status == 0, err
    assert [(r["run_id"], r["flow"], r["recoveries"], r["outcome"]) for r in json.loads(out)] == [
        (flow.run_id, "pg", 1, "failure")]
    status, out, err = sequent(capsys, "show", postgres_database, "--latest", "--json")
    assert status == 0, err
    data = json.loads(out)
    assert data["counts"] == {"success": 1, "skipped": 2, "failure": 1, "active": 0, "ready": 0, "not started": 1}
    assert [(t["step"], t["state"]) for t in data["tasks"]][-2:] == [("load", "failure"), ("publish", "not started")]
    assert data["recover"]["command"].endswith(f"{flow.run_id} --store {shlex.quote(postgres_database)}")
    status, _, err = sequent(capsys, "show", postgres_database, "no-such-run")
    assert status == 3 and "no run 'no-such-run'" in err
