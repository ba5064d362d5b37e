"""Fan-out, retries and timeouts (issue 13): the item of a repeated container passed to its steps,
iterations run in parallel, failed tries run again after a durable delay, and a try that runs past
its timeout stopped with its whole process group.  The defaults keep the original's behaviour
(sequential iterations, no retries, no timeout); the property tests are in test_fanout_properties.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sequent as seq
from sequent.eventor.history import run_detail

TESTS = str(Path(__file__).resolve().parent)
sys.path.insert(0, TESTS)
from elsewhere import gone, wait_for  # noqa: E402

OK, FAIL = seq.STEP_SUCCESS, seq.STEP_FAILURE
_LOCK = threading.Lock()
SEEN: list = []  # what the thread tasks of a test saw


def config(tmp_path: Path, **extra: Any) -> dict:
    return {"task_construct": "thread", "LOGGING": {"logdir": str(tmp_path / "logs"), "console": False}, **extra}


@pytest.fixture(autouse=True)
def fresh() -> None:
    SEEN.clear()


def see(**what: Any) -> None:
    with _LOCK:
        SEEN.append(what)


# -------------------------------------------------------------------------------------------- items

def transform(path: str) -> str:
    see(path=path, env=os.environ.get("SEQUENT_STEP_ITEM"), asked=FLOW.get_step_item(),
        seq=os.environ.get("SEQUENT_STEP_SEQUENCE"))
    return path.upper()


FLOW: Any = None


def test_each_iteration_passes_its_item_as_the_keyword_the_env_and_get_step_item(tmp_path):
    global FLOW
    files = ["a.csv", "b.csv", "c.csv"]
    FLOW = flow = seq.Sequent(name="items", store=str(tmp_path / "s.db"), config=config(tmp_path))
    each = flow.add_step("each", repeats=files)
    each.add_step("transform", func=transform, config={"item_arg_name": "path"})
    assert flow.run()
    assert sorted((s["seq"], s["path"], s["env"], s["asked"]) for s in SEEN) == [
        ("1.1", "a.csv", "a.csv", "a.csv"), ("1.2", "b.csv", "b.csv", "b.csv"), ("1.3", "c.csv", "c.csv", "c.csv")]
    detail = run_detail(str(tmp_path / "s.db"), flow.run_id)
    assert {(t.step, t.sequence, t.item) for t in detail.tasks if t.step == "each_transform"} == {
        ("each_transform", "1.1", "'a.csv'"), ("each_transform", "1.2", "'b.csv'"), ("each_transform", "1.3", "'c.csv'")}
    assert [(i.step, i.sequence, i.item) for i in detail.iterations] == [
        ("each", "1.1", "'a.csv'"), ("each", "1.2", "'b.csv'"), ("each", "1.3", "'c.csv'")]


def record_item(journal: str) -> None:
    with open(journal, "a") as out:
        out.write(f"{os.environ['SEQUENT_STEP_SEQUENCE']} {os.environ.get('SEQUENT_STEP_ITEM')} "
                  f"{os.environ['SEQUENT_STEP_TRY']}\n")


def test_a_process_task_reads_its_item_and_try_from_the_environment(tmp_path):
    journal = str(tmp_path / "journal")
    flow = seq.Sequent(name="penv", store=str(tmp_path / "s.db"), config=config(tmp_path, task_construct="process"))
    each = flow.add_step("each", repeats=[("x", 1), ("y", 2)])
    each.add_step("rec", func=record_item, args=(journal,))
    assert flow.run()
    assert Path(journal).read_text().splitlines() == ["1.1 ('x', 1) 1", "1.2 ('y', 2) 1"]


def test_a_step_outside_repeated_containers_has_no_item(tmp_path):
    global FLOW
    FLOW = flow = seq.Sequent(name="noitem", store=str(tmp_path / "s.db"), config=config(tmp_path))
    flow.add_step("one", func=lambda: see(item=FLOW.get_step_item(), env=os.environ.get("SEQUENT_STEP_ITEM")))
    assert flow.run()
    assert SEEN == [{"item": None, "env": None}]
    with pytest.raises(seq.SequentError, match="only meaningful inside a running step"):
        flow.get_step_item()


# ----------------------------------------------------------------------------------- parallel iterations

def overlap(hold: float = 0.15) -> None:
    with _LOCK:
        SEEN.append(("start", time.monotonic()))
    time.sleep(hold)
    with _LOCK:
        SEEN.append(("end", time.monotonic()))


def most_at_once() -> int:
    now = most = 0
    for kind, _ in sorted(SEEN, key=lambda e: e[1]):
        now += 1 if kind == "start" else -1
        most = max(most, now)
    return most


@pytest.mark.parametrize("parallel, items, expected", [(1, 4, 1), (2, 5, 2), (0, 6, 6)])
def test_parallel_iterations_runs_up_to_n_iterations_at_once(tmp_path, parallel, items, expected):
    flow = seq.Sequent(name="par", store=str(tmp_path / "s.db"), config=config(tmp_path, max_concurrent=8))
    each = flow.add_step("each", repeats=list(range(items)), config={"parallel_iterations": parallel})
    each.add_step("work", func=overlap)
    assert flow.run()
    assert len(SEEN) == 2 * items
    assert most_at_once() == expected  # 1: the original's order; 0: no limit


def test_parallel_iterations_still_keep_the_flows_max_concurrent(tmp_path):
    flow = seq.Sequent(name="capped", store=str(tmp_path / "s.db"), config=config(tmp_path, max_concurrent=2))
    each = flow.add_step("each", repeats=list(range(6)), config={"parallel_iterations": 0})
    each.add_step("work", func=overlap)
    assert flow.run()
    assert most_at_once() == 2  # every iteration open at once, two tasks running at a time


def test_parallel_iterations_is_the_containers_own_not_its_inner_containers(tmp_path):
    flow = seq.Sequent(name="nest", store=str(tmp_path / "s.db"), config=config(tmp_path, max_concurrent=16))
    outer = flow.add_step("outer", repeats=[1, 2], config={"parallel_iterations": 2})
    inner = outer.add_step("inner", repeats=[1, 2, 3])
    inner.add_step("work", func=overlap)
    assert flow.run()
    assert most_at_once() == 2  # the two outer iterations at once, each inner one after another


def fail_at(bad: str) -> None:
    time.sleep(0.05)
    seqn = os.environ["SEQUENT_STEP_SEQUENCE"]
    see(seq=seqn)
    if seqn == bad:
        raise ValueError(f"bad input at {seqn}")


def test_after_an_unhandled_failure_no_new_iteration_starts_and_running_ones_finish(tmp_path):
    flow = seq.Sequent(name="stop", store=str(tmp_path / "s.db"), config=config(tmp_path, max_concurrent=8))
    each = flow.add_step("each", repeats=list(range(10)), config={"parallel_iterations": 3})
    each.add_step("work", func=fail_at, args=("1.2",), config={"stop_on_exception": False})
    assert not flow.run()
    ran = sorted(s["seq"] for s in SEEN)
    # 1.1-1.3 start together; 1.2 fails; at most the iterations that started before it ended ran after
    assert "1.2" in ran and len(ran) <= 5 and "1.10" not in ran, ran
    tasks = {(t.step, t.sequence): t.status for t in seq.run_tasks(str(tmp_path / "s.db"), flow.run_id)}
    assert tasks[("each", "1")] == "failure"
    assert all(status == "success" for (step, s), status in tasks.items() if step == "each_work" and s != "1.2")


def test_a_handled_failure_inside_an_iteration_lets_the_fan_out_go_on(tmp_path):
    flow = seq.Sequent(name="handled", store=str(tmp_path / "s.db"), config=config(tmp_path))
    each = flow.add_step("each", repeats=list(range(4)), config={"parallel_iterations": 2})
    work = each.add_step("work", func=fail_at, args=("1.2",))
    each.add_step("quarantine", func=lambda: see(seq="q"), requires=((work, FAIL),))
    assert flow.run()
    assert sorted(s["seq"] for s in SEEN) == ["1.1", "1.2", "1.3", "1.4", "q"]


# ------------------------------------------------------------------------------------------- retries

def flaky(fails: int) -> None:
    tries = int(os.environ["SEQUENT_STEP_TRY"])
    see(step=os.environ["SEQUENT_STEP_NAME"], seq=os.environ["SEQUENT_STEP_SEQUENCE"], tries=tries, at=time.time())
    if tries <= fails:
        raise ConnectionError(f"try {tries} failed")


def test_a_failed_try_runs_again_and_the_task_succeeds_with_each_try_recorded(tmp_path):
    store = str(tmp_path / "s.db")
    flow = seq.Sequent(name="retry", store=store, config=config(tmp_path))
    flow.add_step("fetch", func=flaky, args=(2,), config={"retries": 3, "retry_delay": 0.2, "retry_backoff": 2})
    assert flow.run()
    assert [s["tries"] for s in SEEN] == [1, 2, 3]
    gaps = [b["at"] - a["at"] for a, b in zip(SEEN, SEEN[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # retry_delay, then times retry_backoff
    detail = run_detail(store, flow.run_id)
    [task] = detail.tasks
    assert (task.status, task.tries) == ("success", 3) and not task.error
    tries = [(t.try_number, bool(t.error), t.timed_out) for t in detail.tries]
    assert tries == [(1, True, False), (2, True, False), (3, False, False)]
    assert "ConnectionError: try 1 failed" in detail.tries[0].error


def test_step_failure_fires_only_after_the_last_try(tmp_path):
    flow = seq.Sequent(name="last", store=str(tmp_path / "s.db"), config=config(tmp_path))
    fetch = flow.add_step("fetch", func=flaky, args=(5,), config={"retries": 2})
    flow.add_step("alert", func=lambda: see(step="alert", tries=None), requires=((fetch, FAIL),))
    assert flow.run()  # the failure is handled
    assert [(s["step"], s["tries"]) for s in SEEN] == [("fetch", 1), ("fetch", 2), ("fetch", 3), ("alert", None)]
    [fetch_row] = [t for t in seq.run_tasks(str(tmp_path / "s.db"), flow.run_id) if t.step == "fetch"]
    assert fetch_row.status == "failure" and fetch_row.tries == 3 and "try 3 failed" in fetch_row.error


def test_a_recovery_reruns_exactly_the_failed_items_and_their_tries_start_afresh(tmp_path):
    store = str(tmp_path / "s.db")

    def build(**kwargs: Any) -> seq.Sequent:
        flow = seq.Sequent(name="etl", store=store, config=config(tmp_path), **kwargs)
        each = flow.add_step("each", repeats=["a", "b", "c", "d"], config={"parallel_iterations": 0})
        each.add_step("load", func=load_item, config={"item_arg_name": "item", "retries": 1})
        return flow

    BROKEN.update({"b", "d"})
    first = build()
    assert not first.run()
    assert sorted((s["item"], s["tries"]) for s in SEEN) == [("a", 1), ("b", 1), ("b", 2), ("c", 1), ("d", 1), ("d", 2)]
    SEEN.clear()
    BROKEN.clear()
    again = build(run_mode=seq.RUN_RECOVER, run_id=first.run_id)
    assert again.run()
    assert sorted((s["item"], s["tries"]) for s in SEEN) == [("b", 1), ("d", 1)]  # only the failed items, from try 1
    skipped = {t.item for t in seq.run_tasks(store, first.run_id, recovery=1) if t.step == "each_load" and t.skipped}
    assert skipped == {"'a'", "'c'"}


BROKEN: set = set()


def load_item(item: str) -> None:
    see(item=item, tries=int(os.environ["SEQUENT_STEP_TRY"]))
    if item in BROKEN:
        raise OSError(f"cannot load {item}")


def test_a_recovery_whose_repeats_give_other_items_warns_listing_them(tmp_path):
    store = str(tmp_path / "s.db")
    items = ["a", "b"]

    def build(**kwargs: Any) -> seq.Sequent:
        flow = seq.Sequent(name="drift", store=store, config=config(tmp_path), **kwargs)
        each = flow.add_step("each", repeats=lambda: iter(list(items)))
        each.add_step("load", func=load_item, config={"item_arg_name": "item"})
        return flow

    BROKEN.update({"b"})
    first = build()
    assert not first.run()
    BROKEN.clear()
    items[:] = ["a", "B"]
    SEEN.clear()
    again = build(run_mode=seq.RUN_RECOVER, run_id=first.run_id)
    assert again.run()
    log = Path(run_detail(store, first.run_id).attempts[-1].logging["run_log"]).read_text()
    assert "WARNING" in log and "Container each: its repeats gave other items than the run recorded" in log
    assert "1.2: 'b' -> 'B'" in log and "1.1:" not in log
    assert [s["item"] for s in SEEN] == ["B"]  # matched by sequence: 1.2 reruns, with its new item


KILLED_DURING_DELAY = '''
import os, sys, time
import sequent as seq

def fetch(journal):
    with open(journal, "a") as out:
        out.write(f"{os.environ['SEQUENT_STEP_TRY']} {time.time()}\\n")
    if int(os.environ["SEQUENT_STEP_TRY"]) < 3:
        raise ConnectionError("not yet")

store, logdir, journal, mode, run_id = sys.argv[1:6]
flow = seq.Sequent(name="durable", store=store, run_id=run_id,
                   run_mode=seq.RUN_RECOVER if mode == "recover" else seq.RUN_RESTART,
                   config={"task_construct": "process", "LOGGING": {"logdir": logdir, "console": False}})
flow.add_step("fetch", func=fetch, args=(journal,), config={"retries": 4, "retry_delay": 3})
sys.exit(0 if flow.run() else 1)
'''


def test_a_coordinator_killed_during_a_retry_delay_is_recovered_without_retrying_early_or_forgetting_the_count(
        tmp_path):
    script = tmp_path / "durable.py"
    script.write_text(KILLED_DURING_DELAY)
    store, journal = str(tmp_path / "s.db"), str(tmp_path / "journal")
    args = [sys.executable, str(script), store, str(tmp_path / "logs"), journal]
    first = subprocess.Popen(args + ["restart", "r1"])
    try:
        wait_for(lambda: os.path.exists(journal) and len(Path(journal).read_text().splitlines()) == 1, 60,
                 "the first try")
        wait_for(lambda: any(t.retry_at for t in seq.run_tasks(store, "r1")), 30, "the first try's failure recorded")
        first.send_signal(signal.SIGKILL)  # during the 3 s before try 2
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    [task] = seq.run_tasks(store, "r1")
    assert (task.status, task.tries) == ("active", 1) and task.retry_at is not None
    retry_at = task.retry_at
    done = subprocess.run(args + ["recover", "r1"], timeout=120)
    assert done.returncode == 0
    tries = [line.split() for line in Path(journal).read_text().splitlines()]
    assert [t[0] for t in tries] == ["1", "2", "3"]  # the count went on: 2 and 3, not 1 again
    assert float(tries[1][1]) >= retry_at.timestamp() - 0.01  # not before the recorded time
    last = [t for t in seq.run_tasks(store, "r1") if t.recovery == 1]
    assert [(t.status, t.tries) for t in last] == [("success", 3)]


# ------------------------------------------------------------------------------------------ timeouts

def stuck(pidfile: str) -> None:
    child = subprocess.Popen(["sleep", "60"])
    Path(pidfile).write_text(str(child.pid))
    time.sleep(60)


def test_a_try_past_its_timeout_is_stopped_with_its_grandchild_and_counted_as_a_failed_try(tmp_path):
    store, pidfile = str(tmp_path / "s.db"), str(tmp_path / "pid")
    flow = seq.Sequent(name="slow", store=store,
                       config=config(tmp_path, task_construct="process", shutdown_grace=1.0))
    flow.add_step("stuck", func=stuck, args=(pidfile,), config={"timeout": 1, "retries": 1})
    started = time.monotonic()
    assert not flow.run()
    assert time.monotonic() - started < 30
    grandchild = int(Path(pidfile).read_text())
    assert gone(grandchild, 10), "the task's own child survived its timeout"
    detail = run_detail(store, flow.run_id)
    assert [(t.try_number, t.timed_out) for t in detail.tries] == [(1, True), (2, True)]
    [task] = detail.tasks
    assert task.status == "failure" and task.error.startswith("timed out after 1 s: stopped")


def test_a_timeout_on_a_thread_or_invoke_task_is_refused_when_the_step_is_added(tmp_path):
    flow = seq.Sequent(name="t", config=config(tmp_path))
    with pytest.raises(seq.SequentError, match=r"step 'a': a timeout \(5 s\) needs task_construct 'process'"):
        flow.add_step("a", func=print, config={"timeout": 5})
    box = flow.add_step("box", config={"timeout": 5, "task_construct": "invoke"})
    with pytest.raises(seq.SequentError, match="a invoke task cannot be stopped"):
        box.add_step("b", func=print)
    box.add_step("c", func=print, config={"task_construct": "process"})  # its own construct can be stopped


def test_the_defaults_keep_the_originals_behaviour(tmp_path):
    """No retries (one try, STEP_TRY 1), sequential iterations, no timeout."""
    flow = seq.Sequent(name="plain", store=str(tmp_path / "s.db"), config=config(tmp_path, max_concurrent=8))
    each = flow.add_step("each", repeats=[1, 2, 3])
    each.add_step("work", func=flaky, args=(0,))
    each.add_step("slow", func=overlap, args=(0.05,))
    assert flow.run()
    assert [s["tries"] for s in SEEN if isinstance(s, dict)] == [1, 1, 1]
    assert [s["seq"] for s in SEEN if isinstance(s, dict)] == ["1.1", "1.2", "1.3"]


def test_an_item_a_process_task_cannot_receive_fails_that_task_not_the_run_and_a_thread_task_gets_it(tmp_path):
    lock = threading.Lock()  # does not pickle
    store = str(tmp_path / "s.db")
    flow = seq.Sequent(name="odd", store=store, config=config(tmp_path, task_construct="process"))
    each = flow.add_step("each", repeats=[lock])
    each.add_step("work", func=print, args=("x",))
    assert flow.run() is False  # recorded as the task's failure; the coordinator goes on to the end
    [work] = [t for t in seq.run_tasks(store, flow.run_id) if t.step == "each_work"]
    assert work.status == "failure" and work.error.startswith("could not be started: TypeError")
    assert "must pickle" in work.error
    threads = seq.Sequent(name="odd_threads", store=store, config=config(tmp_path))
    each = threads.add_step("each", repeats=[lock])
    each.add_step("work", func=lambda item: see(same=item is lock), config={"item_arg_name": "item"})
    assert threads.run() and SEEN == [{"same": True}]
