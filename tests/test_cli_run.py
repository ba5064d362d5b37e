"""``sequent run`` and ``sequent recover``: flow files (a module-level Sequent or build_flow(argv)),
the recovery plan of ``--dry-run`` against the recovery that follows, and the exit statuses
(0 success, 1 the run failed, 2 a usage or definition error, 3 no such run or nothing to recover)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sequent as seq
from sequent.cli import main

REPO = Path(__file__).resolve().parents[1]

#: A flow file in the style of examples/simple.py: containers s1 (x2) around s11 (x2) around s111 -> s112,
#: s12 after s11, s2 after s1; ``--fail STEP[@SEQ]`` fails a step (at one sequence); s12 is rerun
#: even after a success (its own recovery map); thread tasks, so a test runs it in-process.
FLOW = '''
import argparse, os
import sequent as seq

def work(name, fail):
    seqn = os.environ.get('SEQUENT_STEP_SEQUENCE') or seq_of_thread()
    if name in fail or f'{name}@{seqn}' in fail:
        raise ValueError(f'{name} failed at {seqn}')

def seq_of_thread():
    return FLOW.get_step_sequence()

def build_flow(argv):
    global FLOW
    parser = argparse.ArgumentParser(prog='flow.py')
    parser.add_argument('--fail', action='append', default=[])
    fail = set(parser.parse_args(argv).fail)
    FLOW = flow = seq.Sequent(config={'task_construct': 'thread', 'LOGGING': {'logdir': LOGDIR, 'console': False}})
    s1 = flow.add_step('s1', repeats=[1, 2])
    s11 = s1.add_step('s11', repeats=[1, 2])
    s111 = s11.add_step('s111', func=work, args=('s1_s11_s111', fail))
    s11.add_step('s112', func=work, args=('s1_s11_s112', fail), requires=((s111, seq.STEP_SUCCESS),))
    s1.add_step('s12', func=work, args=('s1_s12', fail), requires=((s11, seq.STEP_SUCCESS),),
                recovery={seq.STEP_SUCCESS: seq.STEP_RERUN})
    flow.add_step('s2', func=work, args=('s2', fail), requires=((s1, seq.STEP_SUCCESS),))
    return flow
'''


def flow_file(tmp_path: Path, body: str = FLOW, name: str = "flow.py") -> str:
    path = tmp_path / name
    path.write_text(f"LOGDIR = {str(tmp_path / 'logs')!r}\n" + textwrap.dedent(body))
    return str(path)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path (the flow's default store is made in the working folder), and forget the
    flow modules the test imported."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name in ("flow", "other", "broken", "twoflows", "noflow", "plain"):
            del sys.modules[name]


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def tasks_of(store: str, recovery: int) -> dict[tuple[str, str], tuple[str, bool]]:
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT step, sequence, status, skipped FROM sequent_tasks WHERE recovery = ?",
                          (recovery,)).fetchall()
    return {(step, seqn): (status, bool(skipped)) for step, seqn, status, skipped in rows}


def store_rows(store: str) -> list:
    with sqlite3.connect(store) as db:
        return [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("sequent_runs", "sequent_attempts", "sequent_tasks", "sequent_locks")]


# ------------------------------------------------------------------------------------------- sequent run

def test_run_of_a_flow_file_with_build_flow_passes_the_arguments_after_the_double_dash(in_tmp, capsys):
    path = flow_file(in_tmp)
    code, _, err = cli(capsys, "run", path, "--", "--fail", "s2")
    assert code == 1 and "Unhandled failure: step s2" in err  # s2 was told to fail: the summary says so
    store = str(in_tmp / "flow.run.db")  # the flow's default store, named after the file, as a script gets
    assert tasks_of(store, 0)[("s2", "1")] == ("failure", False)
    assert cli(capsys, "run", path)[0] == 0


def test_run_of_a_flow_file_with_a_module_level_flow(in_tmp, capsys):
    path = flow_file(in_tmp, FLOW + "\nflow = build_flow([])\ndel build_flow\n", name="plain.py")
    code, _, err = cli(capsys, "run", path, "--store", str(in_tmp / "elsewhere.db"))
    assert (code, err) == (0, "")
    assert [r.flow for r in seq.list_runs(str(in_tmp / "elsewhere.db"))] == ["plain.py"]
    assert not (in_tmp / "plain.run.db").exists()


def test_run_takes_a_configuration_file_over_the_flows_own(in_tmp, capsys):
    path = flow_file(in_tmp)
    config = in_tmp / "c.yaml"
    config.write_text(f"LOGGING:\n  logdir: {in_tmp / 'other-logs'}\n")
    assert cli(capsys, "run", path, "--config", str(config))[0] == 0
    assert (in_tmp / "other-logs").is_dir() and not (in_tmp / "logs").exists()


@pytest.mark.parametrize("body, name, message", [
    ("raise ValueError('bad setting')\n", "broken.py", "flow file .*broken.py failed to load: ValueError: bad setting "
                                                       r"\(broken.py, line 2\)"),
    ("x = 1\n", "noflow.py", "defines no flow: give it a module-level sequent.Sequent object, or a build_flow"),
    ("import sequent as seq\na = seq.Sequent()\nb = seq.Sequent()\n", "twoflows.py", r"several flows \(a, b\)"),
])
def test_a_flow_file_that_cannot_give_a_flow_is_a_one_line_error_with_status_2(in_tmp, capsys, body, name, message):
    import re

    code, out, err = cli(capsys, "run", flow_file(in_tmp, body, name))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("sequent: ") and re.search(message, err), err
    assert "Traceback" not in err


def test_a_missing_flow_file_or_arguments_build_flow_refuses_are_status_2(in_tmp, capsys):
    code, _, err = cli(capsys, "run", str(in_tmp / "nope.py"))
    assert code == 2 and "no flow file" in err
    code, _, err = cli(capsys, "run", flow_file(in_tmp), "--", "--bogus")
    assert code == 2 and "build_flow(argv) refused its arguments" in err


def test_a_flow_defined_wrongly_is_refused_naming_the_step_with_status_2(in_tmp, capsys):
    body = "import sequent as seq\nflow = seq.Sequent()\nflow.add_step('a', func=print, requires=(('nope', seq.STEP_SUCCESS),))\n"
    code, _, err = cli(capsys, "run", flow_file(in_tmp, body, "broken.py"))
    assert code == 2 and "'a'" in err


# --------------------------------------------------------------------------------------- sequent recover

@pytest.mark.parametrize("fail", [["s2"], ["s1_s11_s112@1.1.2"], ["s1_s11_s111@1.2.1", "s1_s12"], ["s1_s12@1.2"]])
def test_the_dry_run_plan_is_what_the_recovery_then_does(in_tmp, capsys, fail):
    path = flow_file(in_tmp)
    store = str(in_tmp / "flow.run.db")
    args = [x for f in fail for x in ("--fail", f)]
    assert cli(capsys, "run", path, "--", *args)[0] == 1
    before = store_rows(store)
    code, out, err = cli(capsys, "recover", path, "--dry-run", "--json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert store_rows(store) == before  # a dry run changes nothing
    assert plan["outcome"] == "failure" and plan["recovery"] == 1 and plan["based_on"] == 0

    assert cli(capsys, "recover", path)[0] == 0  # the failures were not asked for again: it succeeds
    done = tasks_of(store, 1)
    for task in plan["tasks"]:
        key = (task["step"], task["sequence"])
        assert task["sequence"] is not None  # every repeat here is a list: every iteration is known
        status, skipped = done[key]
        if task["action"] == "skip":
            assert (status, skipped) == ("success", True), task
        else:  # rerun, replay (a container) or new: it ran in the recovery
            assert not skipped, task
    assert {(t["step"], t["sequence"]) for t in plan["tasks"]} == set(done)
    reruns = {(t["step"], t["sequence"]) for t in plan["tasks"] if t["action"] == "rerun"}
    first = tasks_of(store, 0)
    assert all(first[key][0] == "failure" or key[0] == "s1_s12" for key in reruns)  # s12 reruns even a success
    assert all("(the step's own)" in t["why"] for t in plan["tasks"] if t["step"] == "s1_s12" and t["recorded"] == "success")


def test_the_dry_run_prints_each_task_with_its_recorded_status_plan_and_why(in_tmp, capsys):
    path = flow_file(in_tmp)
    assert cli(capsys, "run", path, "--", "--fail", "s1_s11_s112@1.1.1")[0] == 1
    code, out, _ = cli(capsys, "recover", path, "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Recovering run ") and "would be attempt 1, compared with attempt 0" in lines[0]
    row = next(line for line in lines if line.startswith("s1_s11_s111  1.1.1"))
    assert row.split()[2:4] == ["success", "SKIP"] and "recovery map: success -> skip" in row
    row = next(line for line in lines if line.startswith("s1_s11_s112  1.1.1"))
    assert row.split()[2:4] == ["failure", "RERUN"]
    row = next(line for line in lines if line.startswith("s2 "))
    assert "not started" in row and " new " in row
    assert lines[-1].startswith("In all: ") and lines[-1].endswith("Nothing was changed (dry run).")


def test_recover_names_a_run_or_takes_the_latest_and_says_when_there_is_nothing_to_recover(in_tmp, capsys):
    path = flow_file(in_tmp)
    store = str(in_tmp / "flow.run.db")
    assert cli(capsys, "run", path, "--", "--fail", "s2")[0] == 1
    first = seq.list_runs(store)[0].run_id
    assert cli(capsys, "run", path, "--", "--fail", "s2")[0] == 1
    code, _, _ = cli(capsys, "recover", path, first)
    assert code == 0 and tasks_of(store, 1)  # the named run, not the latest, got attempt 1
    assert [r.recoveries for r in seq.list_runs(store)] == [1, 0]
    code, _, err = cli(capsys, "recover", path, first)
    assert code == 3 and "succeeded: nothing to recover" in err
    assert cli(capsys, "recover", path, "--latest")[0] == 0
    assert [r.recoveries for r in seq.list_runs(store)] == [1, 1]
    code, _, err = cli(capsys, "recover", path, "no-such-run")
    assert code == 3 and "no run 'no-such-run' to recover" in err
    assert cli(capsys, "recover", path, first, "--latest")[0] == 2


def test_recover_with_no_store_is_status_3_and_creates_nothing(in_tmp, capsys):
    path = flow_file(in_tmp)
    before = sorted(os.listdir(in_tmp))
    code, out, err = cli(capsys, "recover", path)
    assert code == 3 and out == "" and "no store at" in err
    code, _, err = cli(capsys, "recover", path, "--dry-run")
    assert code == 3
    assert sorted(os.listdir(in_tmp)) == before


def test_the_command_runs_a_failing_example_then_recovers_it_as_a_new_user_would(tmp_path):
    """The README's recovery recipe, with the installed command's module (python -m sequent)."""
    def sequent(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sequent", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    example = str(REPO / "examples" / "simple.py")
    failed = sequent("run", example, "--", "--fail", "s1_s11_s112")
    assert failed.returncode == 1, failed.stderr
    plan = sequent("recover", example, "--dry-run")
    assert plan.returncode == 0 and "RERUN" in plan.stdout and "SKIP" in plan.stdout
    done = sequent("recover", example)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    again = sequent("recover", example)
    assert again.returncode == 3 and again.stderr.startswith("sequent: ") and "nothing to recover" in again.stderr


def test_every_example_still_runs_as_a_plain_script_and_as_a_flow_file(tmp_path):
    for name in ("simple.py", "handle_failure.py"):
        script = subprocess.run([sys.executable, str(REPO / "examples" / name)], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120)
        flowfile = subprocess.run([sys.executable, "-m", "sequent", "run", str(REPO / "examples" / name)],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert script.returncode == flowfile.returncode == 0, (name, script.stderr, flowfile.stderr)
    runs: list[Any] = seq.list_runs(str(tmp_path / "simple.run.db"))
    assert [r.flow for r in runs] == ["simple.py", "simple.py"]  # the same flow name either way


def test_the_cron_recipe_recovers_a_failed_run_then_starts_new_ones_and_never_two_at_once(tmp_path):
    """examples/cron_nightly.sh as cron would call it: recover the latest run if it did not succeed,
    else run anew; a second call while one runs starts nothing."""
    import fcntl

    flow = tmp_path / "nightly.py"
    flow.write_text(textwrap.dedent(f'''
        import os
        import sequent as seq

        def step():
            if os.path.exists({str(tmp_path / "broken")!r}):
                raise RuntimeError("the input is broken")

        flow = seq.Sequent(config={{"LOGGING": {{"logdir": {str(tmp_path / "logs")!r}}}}})
        flow.add_step("load", func=step)
    '''))
    store = str(tmp_path / "nightly.run.db")
    command = Path(sys.executable).with_name("sequent")  # the installed command, as cron would run it
    assert command.exists(), "the sequent command is installed beside the interpreter"
    env = {**os.environ, "SEQUENT": str(command)}

    def nightly() -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(REPO / "examples" / "cron_nightly.sh"), str(flow), store], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)

    (tmp_path / "broken").write_text("")
    first = nightly()
    assert first.returncode == 1, first.stderr  # no run to recover: a new run, which fails
    (tmp_path / "broken").unlink()
    second = nightly()
    assert second.returncode == 0 and second.stderr == "", second.stderr  # the failed run is recovered
    third = nightly()
    assert third.returncode == 0 and third.stderr == "", third.stderr  # nothing to recover: a new run
    assert [(r.recoveries, r.outcome) for r in seq.list_runs(store)] == [(1, "success"), (0, "success")]
    with open(store + ".cron.lock", "a") as held:  # as if an earlier call still ran
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = nightly()
    assert busy.returncode == 0 and "still running from an earlier call" in busy.stderr
    assert len(seq.list_runs(store)) == 2


def test_the_etl_example_recovers_exactly_the_file_that_failed(tmp_path):
    """README's first fan-out: extract, transform each file in parallel (the file as the argument,
    retried once), load; a recovery transforms only the file that failed."""
    def sequent(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sequent", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    example = str(REPO / "examples" / "etl.py")
    failed = sequent("run", example, "--", "--fail", "c.csv")
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr
    assert "try 1 of 2 failed: ValueError: c.csv: malformed row 2" in failed.stdout
    done = sequent("recover", example)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    store = str(tmp_path / "etl.run.db")
    [run] = seq.list_runs(store)
    rows = [t for t in seq.run_tasks(store, run.run_id, recovery=1) if t.step == "transform_file"]
    ran = sorted(os.path.basename(t.item.strip("'")) for t in rows if not t.skipped)
    assert ran == ["c.csv"] and len(rows) == 6
    assert sorted(os.listdir(tmp_path / "etl-work" / "out")) == ["a.csv", "b.csv", "c.csv", "d.csv", "e.csv", "f.csv"]
    plain = subprocess.run([sys.executable, example, "--workdir", str(tmp_path / "w2")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr  # and it still runs as a plain script
