"""Recovery (SPEC A6, B1.3, B4.5): which tasks a recovery skips and reruns, per-step recovery maps,
resumption inside containers, recovery_run, delays, the one-coordinator rule, changed flows, the
errors of a recovery that cannot be done, ``run(run_mode=RUN_RECOVER)`` on the same object, and the
history API and command line that show it all."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sequent as seq
from sequent.eventor.logs import HOST

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
OK = seq.STEP_SUCCESS


# --------------------------------------------------------------------------------------------- helpers

_LOCK = threading.Lock()


class Recorder:
    """What the steps executed, one line each: in a list (thread tasks) or a file (process tasks)."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if self.path is None:
            with _LOCK:
                self.lines.append(line)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + '\n').encode())
        finally:
            os.close(fd)

    def take(self) -> list[str]:
        """The lines recorded since the last take()."""
        if self.path is None:
            with _LOCK:
                lines, self.lines = self.lines, []
            return lines
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            lines = f.read().splitlines()
        os.remove(self.path)
        return lines


def recorder(tmp_path: Path, construct: str = 'thread') -> Recorder:
    return Recorder(str(tmp_path / 'trace.txt') if construct == 'process' else None)


def work(rec: Recorder, fail=(), sleep: float = 0.0) -> None:
    """Record ``step/sequence attempt``; raise when ``step/sequence`` or ``step/sequence@attempt`` is in fail."""
    name, sequence = os.environ['SEQUENT_STEP_NAME'], os.environ['SEQUENT_STEP_SEQUENCE']
    attempt = os.environ['SEQUENT_STEP_RECOVERY']
    rec.add(f'{name}/{sequence} {attempt}')
    if sleep:
        time.sleep(sleep)
    if f'{name}/{sequence}' in fail or f'{name}/{sequence}@{attempt}' in fail:
        raise RuntimeError(f'{name} failed ({name}/{sequence}, attempt {attempt})')


def store_of(tmp_path: Path) -> str:
    return str(tmp_path / 'r.run.db')


@pytest.fixture
def new_flow(tmp_path: Path, flow_config):
    """``new_flow(name='flow', construct='thread', recover=False, **sequent_kwargs)``: a flow whose store is
    ``store_of(tmp_path)``, a fresh run or (``recover``) a recovery."""
    def new_flow(name: str = 'flow', construct: str = 'thread', recover: bool = False, **kwargs) -> seq.Sequent:
        mode = seq.RUN_RECOVER if recover else seq.RUN_RESTART
        return seq.Sequent(name=name, store=store_of(tmp_path), config=flow_config(task_construct=construct),
                           run_mode=mode, **kwargs)
    return new_flow


def chain(flow, rec, names, fail=(), recovery=None):
    """Root steps a -> b -> c ... each requiring the previous one's success."""
    steps, prev = {}, None
    for name in names:
        steps[name] = flow.add_step(name, func=work, kwargs={'rec': rec, 'fail': fail},
                                    recovery=(recovery or {}).get(name),
                                    requires=((prev, OK),) if prev is not None else ())
        prev = steps[name]
    return steps


def sql(tmp_path: Path, query: str, *params):
    conn = sqlite3.connect(store_of(tmp_path), timeout=10)
    try:
        rows = conn.execute(query, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def tasks_of(tmp_path: Path, run_id: str, recovery=None) -> dict:
    return {(t.step, t.sequence): t for t in seq.run_tasks(store_of(tmp_path), run_id, recovery=recovery)}


# --------------------------------------------------------------------------------------------- 1. the seed's example

def prog(flow, rec, progname, step_to_fail=None, iteration_to_fail=''):
    step_name = flow.get_step_name()
    step_sequence = flow.get_step_sequence()
    rec.add('{} {}/{} {}'.format(progname, step_name, step_sequence, os.getenv('SEQUENT_STEP_RECOVERY')))
    if step_to_fail == step_name and step_sequence == iteration_to_fail:
        raise Exception('{} failed ({}/{})'.format(progname, step_name, step_sequence))
    return progname


@pytest.fixture
def seed_flow(tmp_path, flow_config):
    """``seed_flow(construct, rec, run_mode=RUN_RESTART, run_id=None, step_to_fail=None, iteration_to_fail='')``:
    the seed's example flow, its store ``store_of(tmp_path)``."""
    def seed_flow(construct, rec, run_mode=seq.RUN_RESTART, run_id=None, step_to_fail=None, iteration_to_fail=''):
        myflow = seq.Sequent(name='seed_recovery.py', store=store_of(tmp_path), run_mode=run_mode, run_id=run_id,
                             config=flow_config(task_construct=construct, sleep_between_loops=0.05))
        common = {'flow': myflow, 'rec': rec, 'step_to_fail': step_to_fail, 'iteration_to_fail': iteration_to_fail}
        s1 = myflow.add_step('s1', repeats=[1, 2])
        s11 = s1.add_step('s11', repeats=[1, 2, ])
        s111 = s11.add_step('s111', func=prog, kwargs=dict(common, progname='prog1'))
        s11.add_step('s112', func=prog, kwargs=dict(common, progname='prog2'), requires=((s111, seq.STEP_SUCCESS),))
        s1.add_step('s12', func=prog, kwargs=dict(common, progname='prog3'), requires=((s11, seq.STEP_SUCCESS),))
        myflow.add_step('s2', func=prog, kwargs=dict(common, progname='prog4'), requires=((s1, seq.STEP_SUCCESS),))
        return myflow
    return seed_flow


SEED_FIRST = [
    'prog1 s1_s11_s111/1.1.1 0', 'prog2 s1_s11_s112/1.1.1 0',
    'prog1 s1_s11_s111/1.1.2 0', 'prog2 s1_s11_s112/1.1.2 0',
    'prog3 s1_s12/1.1 0',
    'prog1 s1_s11_s111/1.2.1 0', 'prog2 s1_s11_s112/1.2.1 0',
    'prog1 s1_s11_s111/1.2.2 0',
]
SEED_SECOND = [
    'prog1 s1_s11_s111/1.2.2 1', 'prog2 s1_s11_s112/1.2.2 1',
    'prog3 s1_s12/1.2 1', 'prog4 s2/1 1',
]
SEED_CONTAINERS = {'s1', 's1_s11'}


@pytest.mark.parametrize('construct', ['thread', 'process'])
def test_seed_example_recovery_runs_only_what_had_not_succeeded_and_a_third_run_skips_everything(
        tmp_path, construct, seed_flow):
    rec = recorder(tmp_path, construct)
    first = seed_flow(construct, rec, step_to_fail='s1_s11_s111', iteration_to_fail='1.2.2')
    assert first.run() is False
    assert rec.take() == SEED_FIRST
    run_id = first.run_id

    second = seed_flow(construct, rec, run_mode=seq.RUN_RECOVER, run_id=run_id)
    assert second.run() is True
    assert rec.take() == SEED_SECOND
    assert second.run_id == run_id

    third = seed_flow(construct, rec, run_mode=seq.RUN_RECOVER, run_id=run_id)
    assert third.run() is True
    assert rec.take() == []
    attempt2 = seq.run_tasks(store_of(tmp_path), run_id, recovery=2)
    processing = [t for t in attempt2 if t.step not in SEED_CONTAINERS]
    assert sorted((t.step, t.sequence) for t in processing) == sorted(
        (line.split()[1].split('/')[0], line.split()[1].split('/')[1]) for line in SEED_FIRST[:-1] + SEED_SECOND)
    assert all(t.status == 'success' and t.skipped and t.recovery == 2 for t in processing)
    # containers replay (they are not skipped) and succeed
    assert {(t.step, t.status, t.skipped) for t in attempt2 if t.step in SEED_CONTAINERS} == {
        ('s1', 'success', False), ('s1_s11', 'success', False)}


# --------------------------------------------------------------------------------------------- 2. recovery maps

def test_success_rerun_map_reruns_a_succeeded_step_while_its_default_sibling_is_skipped(tmp_path, new_flow):
    rec = Recorder()

    def build(recover=False, run_id=None, fail=()):
        flow = new_flow(recover=recover, run_id=run_id)
        a = flow.add_step('a', func=work, kwargs={'rec': rec}, recovery={seq.STEP_SUCCESS: seq.STEP_RERUN})
        b = flow.add_step('b', func=work, kwargs={'rec': rec})
        flow.add_step('z', func=work, kwargs={'rec': rec, 'fail': fail}, requires=((a, OK), (b, OK)))
        return flow

    first = build(fail=('z/1',))
    assert first.run() is False
    assert sorted(rec.take()) == ['a/1 0', 'b/1 0', 'z/1 0']
    assert build(recover=True, run_id=first.run_id).run() is True
    assert sorted(rec.take()) == ['a/1 1', 'z/1 1']
    tasks = tasks_of(tmp_path, first.run_id, recovery=1)
    assert (tasks[('a', '1')].skipped, tasks[('b', '1')].skipped) == (False, True)


def test_failure_skip_map_records_a_failed_step_as_skipped_success_and_its_success_dependents_run(tmp_path, new_flow):
    rec = Recorder()

    def build(recover=False, run_id=None):
        flow = new_flow(recover=recover, run_id=run_id)
        # 'a' fails whenever it runs: the recovery passes only if it is not run again
        a = flow.add_step('a', func=work, kwargs={'rec': rec, 'fail': ('a/1',)},
                          recovery={seq.STEP_FAILURE: seq.STEP_SKIP})
        flow.add_step('b', func=work, kwargs={'rec': rec}, requires=((a, OK),))
        return flow

    first = build()
    assert first.run() is False
    assert rec.take() == ['a/1 0']
    assert build(recover=True, run_id=first.run_id).run() is True
    assert rec.take() == ['b/1 1']
    a = tasks_of(tmp_path, first.run_id, recovery=1)[('a', '1')]
    assert (a.status, a.skipped) == ('success', True)


def test_complete_rerun_map_reruns_a_step_whether_it_succeeded_or_failed(new_flow):
    rec = Recorder()

    def build(recover=False, run_id=None):
        flow = new_flow(recover=recover, run_id=run_id)
        rerun = {seq.STEP_COMPLETE: seq.STEP_RERUN}
        a = flow.add_step('a', func=work, kwargs={'rec': rec}, recovery=rerun)
        b = flow.add_step('b', func=work, kwargs={'rec': rec, 'fail': ('b/1@0',)}, recovery=rerun)
        flow.add_step('plain', func=work, kwargs={'rec': rec})
        flow.add_step('z', func=work, kwargs={'rec': rec}, requires=((a, OK), (b, OK)))
        return flow

    first = build()
    assert first.run() is False
    assert sorted(rec.take()) == ['a/1 0', 'b/1 0', 'plain/1 0']
    assert build(recover=True, run_id=first.run_id).run() is True
    assert sorted(rec.take()) == ['a/1 1', 'b/1 1', 'z/1 1']


def test_complete_skip_map_skips_success_and_failure_unless_failure_is_given_explicitly(new_flow):
    rec = Recorder()

    def build(recover=False, run_id=None):
        flow = new_flow(recover=recover, run_id=run_id)
        skip_all = {seq.STEP_COMPLETE: seq.STEP_SKIP}
        but_failure = {seq.STEP_COMPLETE: seq.STEP_SKIP, seq.STEP_FAILURE: seq.STEP_RERUN}
        flow.add_step('skips_failure', func=work, kwargs={'rec': rec, 'fail': ('skips_failure/1',)},
                      recovery=skip_all)
        flow.add_step('reruns_failure', func=work, kwargs={'rec': rec, 'fail': ('reruns_failure/1@0',)},
                      recovery=but_failure)
        flow.add_step('skips_success', func=work, kwargs={'rec': rec}, recovery=but_failure)
        return flow

    first = build()
    assert first.run() is False
    assert sorted(rec.take()) == ['reruns_failure/1 0', 'skips_failure/1 0', 'skips_success/1 0']
    assert build(recover=True, run_id=first.run_id).run() is True
    assert rec.take() == ['reruns_failure/1 1']


def test_default_map_reruns_a_failed_step_and_skips_succeeded_ones(tmp_path, new_flow):
    rec = Recorder()

    def build(recover=False, run_id=None):
        flow = new_flow(recover=recover, run_id=run_id)
        chain(flow, rec, ['a', 'b', 'c'], fail=('b/1@0',))
        return flow

    first = build()
    assert first.run() is False
    assert rec.take() == ['a/1 0', 'b/1 0']
    assert build(recover=True, run_id=first.run_id).run() is True
    assert rec.take() == ['b/1 1', 'c/1 1']
    tasks = tasks_of(tmp_path, first.run_id, recovery=1)
    assert [(k, t.status, t.skipped) for k, t in sorted(tasks.items())] == [
        (('a', '1'), 'success', True), (('b', '1'), 'success', False), (('c', '1'), 'success', False)]


def test_the_status_last_recorded_by_any_attempt_decides_not_an_earlier_success(new_flow):
    """a succeeded in attempt 0, was rerun and failed in attempt 1: attempt 2 (default map) reruns it."""
    rec = Recorder()

    def build(recover=False, run_id=None, a_recovery=None):
        flow = new_flow(recover=recover, run_id=run_id)
        chain(flow, rec, ['a', 'b'], fail=('a/1@1', 'b/1@0'), recovery={'a': a_recovery})
        return flow

    first = build()
    assert first.run() is False
    assert rec.take() == ['a/1 0', 'b/1 0']
    assert build(recover=True, run_id=first.run_id, a_recovery={OK: seq.STEP_RERUN}).run() is False
    assert rec.take() == ['a/1 1']
    assert build(recover=True, run_id=first.run_id).run() is True
    assert rec.take() == ['a/1 2', 'b/1 2']


# --------------------------------------------------------------------------------------------- 3. nested containers

def nested_order() -> list[str]:
    """Every execution of the 3-level nested flow, in order."""
    order = []
    for i in (1, 2):
        for j in (1, 2):
            for k in (1, 2):
                order += [f'o_m_i_{s}/1.{i}.{j}.{k}' for s in ('p', 'q', 'r')]
            order.append(f'o_m_after/1.{i}.{j}')
        order.append(f'o_tail/1.{i}')
    order.append('end/1')
    return order


def nested_flow(new_flow, construct, rec, recover=False, run_id=None, fail=()):
    flow = new_flow(construct=construct, recover=recover, run_id=run_id)
    kw = {'rec': rec, 'fail': fail}
    o = flow.add_step('o', repeats=[1, 2])
    m = o.add_step('m', repeats=[1, 2])
    i = m.add_step('i', repeats=[1, 2])
    p = i.add_step('p', func=work, kwargs=kw)
    q = i.add_step('q', func=work, kwargs=kw, requires=((p, OK),))
    i.add_step('r', func=work, kwargs=kw, requires=((q, OK),))
    m.add_step('after', func=work, kwargs=kw, requires=((i, OK),))
    o.add_step('tail', func=work, kwargs=kw, requires=((m, OK),))
    flow.add_step('end', func=work, kwargs=kw, requires=((o, OK),))
    return flow


@pytest.mark.parametrize('construct', ['thread', 'process'])
def test_recovery_inside_nested_containers_resumes_at_the_failed_task_of_the_inner_iteration(
        tmp_path, construct, new_flow):
    rec = recorder(tmp_path, construct)
    order = nested_order()
    failed = order.index('o_m_i_q/1.2.1.2')  # outer iteration 2, middle 1, inner 2: after p, before r
    first = nested_flow(new_flow, construct, rec, fail=('o_m_i_q/1.2.1.2@0',))
    assert first.run() is False
    assert rec.take() == [f'{x} 0' for x in order[:failed + 1]]
    again = nested_flow(new_flow, construct, rec, recover=True, run_id=first.run_id)
    assert again.run() is True
    assert rec.take() == [f'{x} 1' for x in order[failed:]]
    # p of the failed iteration and everything of earlier iterations is recorded as skipped
    tasks = tasks_of(tmp_path, first.run_id, recovery=1)
    skipped = {f'{s}/{q}' for (s, q), t in tasks.items() if t.skipped}
    assert skipped == set(order[:failed])


# --------------------------------------------------------------------------------------------- 4. recovery_run

@pytest.mark.parametrize('recovery_run, expected', [
    (0, ['b/1 2', 'c/1 2']),  # compared with attempt 0 only: b (failed there) reruns though attempt 1 passed it
    (1, ['c/1 2']),
    (None, ['c/1 2']),  # the latest attempt (1)
])
def test_recovery_run_chooses_the_attempts_compared_with_and_the_new_attempt_is_latest_plus_one(
        tmp_path, recovery_run, expected, new_flow):
    rec = Recorder()

    def build(recover=False, run_id=None, recovery_run=None):
        flow = new_flow(recover=recover, run_id=run_id, recovery_run=recovery_run)
        chain(flow, rec, ['a', 'b', 'c'], fail=('b/1@0', 'c/1@1'))
        return flow

    first = build()
    assert first.run() is False  # attempt 0 fails at b
    assert build(recover=True, run_id=first.run_id).run() is False  # attempt 1 passes b, fails at c
    assert rec.take() == ['a/1 0', 'b/1 0', 'b/1 1', 'c/1 1']
    assert build(recover=True, run_id=first.run_id, recovery_run=recovery_run).run() is True
    assert rec.take() == expected
    assert {t.recovery for t in seq.run_tasks(store_of(tmp_path), first.run_id)} == {0, 1, 2}
    [run] = seq.list_runs(store_of(tmp_path))
    assert (run.recoveries, run.outcome) == (2, 'success')
    based_on = sql(tmp_path, 'SELECT based_on FROM sequent_attempts WHERE run_id=? AND recovery=2', first.run_id)
    assert based_on == [(1 if recovery_run is None else recovery_run,)]


# --------------------------------------------------------------------------------------------- subprocess coordinators

def coordinator(kind: str, store: str, logdir: str, journal: str, run_id: str) -> None:
    """The body of a coordinator process started by the tests below (and rebuilt by them to recover)."""
    ok = build_kind(kind, store, logdir, journal, seq.RUN_RESTART, run_id).run()
    sys.exit(0 if ok else 1)


DELAY = 3.0


def build_kind(kind, store, logdir, journal, mode, run_id):
    rec = Recorder(journal)
    flow = seq.Sequent(name=f'{kind}flow', store=store, run_mode=mode, run_id=run_id,
                       config={'task_construct': 'thread', 'LOGGING': {'logdir': logdir, 'console': False}})
    if kind == 'slow':  # one step that sleeps 3 s in the first attempt only
        slow = flow.add_step('slow', func=slow_step, kwargs={'rec': rec})
        flow.add_step('after', func=work, kwargs={'rec': rec}, requires=((slow, OK),))
    elif kind == 'delay':
        a = flow.add_step('a', func=work, kwargs={'rec': rec})
        flow.add_step('b', func=work, kwargs={'rec': rec}, delay=DELAY, requires=((a, OK),))
    return flow


def slow_step(rec):
    work(rec)
    if os.environ['SEQUENT_STEP_RECOVERY'] == '0':
        time.sleep(3)


def start_coordinator(tmp_path: Path, kind: str, run_id: str) -> subprocess.Popen:
    code = (f'import sys; sys.path.insert(0, {str(TESTS)!r}); import test_recovery as t; '
            f't.coordinator({kind!r}, {store_of(tmp_path)!r}, {str(tmp_path / "logs")!r}, '
            f'{str(tmp_path / "journal.txt")!r}, {run_id!r})')
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.Popen([sys.executable, '-c', code], env=env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_row(tmp_path: Path, proc: subprocess.Popen, query: str, *params, timeout: float = 15) -> tuple:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f'coordinator ended early ({proc.returncode}): {proc.stderr.read().decode()}')
        try:
            rows = sql(tmp_path, query, *params)
        except sqlite3.OperationalError:  # the tables are not created yet
            rows = []
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f'no row for {query!r} within {timeout} s')


def wait_for_journal(journal: str, proc: subprocess.Popen, line: str, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(journal) and line in Path(journal).read_text().splitlines():
            return
        if proc.poll() is not None:
            raise AssertionError(f'coordinator ended early ({proc.returncode}): {proc.stderr.read().decode()}')
        time.sleep(0.05)
    raise AssertionError(f'{line!r} not journaled within {timeout} s')


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()


# --------------------------------------------------------------------------------------------- 5. delays

def test_recovery_of_a_delay_started_before_the_crash_waits_only_what_remains(tmp_path):
    journal = str(tmp_path / 'journal.txt')
    proc = start_coordinator(tmp_path, 'delay', 'delayed-run')
    try:
        (activated,) = wait_for_row(tmp_path, proc, "SELECT activated FROM sequent_delays WHERE run_id=? AND "
                                                    "step='b' AND recovery=0", 'delayed-run')
        time.sleep(1.5)
    finally:
        kill(proc)  # SIGKILL in the middle of b's delay
    assert Recorder(journal).take() == ['a/1 0']
    flow = build_kind('delay', store_of(tmp_path), str(tmp_path / 'logs'), journal, seq.RUN_RECOVER, 'delayed-run')
    started = time.time()
    assert flow.run() is True
    assert Recorder(journal).take() == ['b/1 1']
    b = tasks_of(tmp_path, 'delayed-run', recovery=1)[('b', '1')]
    assert b.started.timestamp() - started < DELAY - 0.6, 'the recovery waited a full delay again'
    assert activated + DELAY - 0.05 <= b.started.timestamp() <= activated + DELAY + 1.0


def test_recovery_does_not_wait_the_delay_of_a_step_it_will_skip(new_flow):
    """b succeeded without a delay; the recovering flow gives it a 3 s delay: b is skipped, so no wait."""
    rec = Recorder()

    def build(recover=False, run_id=None, delay=0.0):
        flow = new_flow(recover=recover, run_id=run_id)
        a = flow.add_step('a', func=work, kwargs={'rec': rec})
        b = flow.add_step('b', func=work, kwargs={'rec': rec}, delay=delay, requires=((a, OK),))
        flow.add_step('c', func=work, kwargs={'rec': rec, 'fail': ('c/1@0',)}, requires=((b, OK),))
        return flow

    first = build()
    assert first.run() is False
    assert rec.take() == ['a/1 0', 'b/1 0', 'c/1 0']
    started = time.time()
    assert build(recover=True, run_id=first.run_id, delay=3.0).run() is True
    assert time.time() - started < 2.0
    assert rec.take() == ['c/1 1']


# --------------------------------------------------------------------------------------------- 6. one coordinator

def test_a_second_coordinator_of_a_running_run_is_refused_naming_the_run_and_the_holder(tmp_path):
    journal = str(tmp_path / 'journal.txt')
    proc = start_coordinator(tmp_path, 'slow', 'held-run')
    try:
        wait_for_row(tmp_path, proc, 'SELECT pid FROM sequent_locks WHERE run_id=?', 'held-run')
        wait_for_journal(journal, proc, 'slow/1 0')  # the holder is inside its 3 s step
        flow = build_kind('slow', store_of(tmp_path), str(tmp_path / 'logs'), journal, seq.RUN_RECOVER, 'held-run')
        with pytest.raises(seq.SequentError) as err:
            flow.run()
        message = str(err.value)
        assert 'held-run' in message
        assert str(proc.pid) in message
        assert HOST in message
        assert proc.poll() is None  # the holder is not disturbed
    finally:
        kill(proc)
    assert Recorder(journal).take() == ['slow/1 0']
    # the holder is gone (same host): its lock row does not block the recovery
    assert sql(tmp_path, 'SELECT pid FROM sequent_locks WHERE run_id=?', 'held-run') == [(proc.pid,)]
    flow = build_kind('slow', store_of(tmp_path), str(tmp_path / 'logs'), journal, seq.RUN_RECOVER, 'held-run')
    assert flow.run() is True
    # the refused coordinator did not use up an attempt number
    assert Recorder(journal).take() == ['slow/1 1', 'after/1 1']
    assert sql(tmp_path, 'SELECT * FROM sequent_locks') == []


# --------------------------------------------------------------------------------------------- 7. changed flow

def test_recovering_with_an_added_step_warns_naming_it_and_runs_it(new_flow):
    rec = Recorder()
    first = new_flow()
    chain(first, rec, ['a', 'b'], fail=('b/1@0',))
    assert first.run() is False
    rec.take()
    again = new_flow(recover=True, run_id=first.run_id)
    chain(again, rec, ['a', 'b', 'added_step'])
    with pytest.warns(seq.FlowChangedWarning) as warned:
        assert again.run() is True
    [message] = [str(w.message) for w in warned if issubclass(w.category, seq.FlowChangedWarning)]
    assert re.search(r'[Aa]dded.*\badded_step\b', message)
    assert rec.take() == ['b/1 1', 'added_step/1 1']


def test_recovering_with_a_removed_step_warns_naming_it(new_flow):
    rec = Recorder()
    first = new_flow()
    chain(first, rec, ['a', 'b'], fail=('b/1@0',))
    first.add_step('gone_step', func=work, kwargs={'rec': rec})
    assert first.run() is False
    rec.take()
    again = new_flow(recover=True, run_id=first.run_id)
    chain(again, rec, ['a', 'b'])
    with pytest.warns(seq.FlowChangedWarning, match=r'[Rr]emoved.*\bgone_step\b'):
        assert again.run() is True
    assert rec.take() == ['b/1 1']


def test_recovering_with_a_step_moved_into_a_container_raises_naming_it(tmp_path, new_flow):
    """Tasks match by flattened name: root step 'box_b' and step 'b' of container 'box' are both 'box_b'."""
    rec = Recorder()
    first = new_flow()
    first.add_step('box_b', func=work, kwargs={'rec': rec})
    first.add_step('a', func=work, kwargs={'rec': rec, 'fail': ('a/1@0',)})
    assert first.run() is False
    again = new_flow(recover=True, run_id=first.run_id)
    again.add_step('box').add_step('b', func=work, kwargs={'rec': rec})
    again.add_step('a', func=work, kwargs={'rec': rec})
    rec.take()
    with pytest.raises(seq.SequentError) as err:
        again.run()
    message = str(err.value)
    assert re.search(r'\bbox_b\b', message)
    assert first.run_id in message and store_of(tmp_path) in message
    assert rec.take() == []
    assert [r.recoveries for r in seq.list_runs(store_of(tmp_path))] == [0]  # no attempt was started


def test_recovering_with_a_step_turned_into_a_container_raises_naming_it(new_flow):
    rec = Recorder()
    first = new_flow()
    chain(first, rec, ['a', 'b'], fail=('b/1@0',))
    assert first.run() is False
    again = new_flow(recover=True, run_id=first.run_id)
    a = again.add_step('a', func=work, kwargs={'rec': rec})
    again.add_step('b', requires=((a, OK),)).add_step('x', func=work, kwargs={'rec': rec})
    rec.take()
    with pytest.raises(seq.SequentError, match=r'\bb\b.*container'):
        again.run()
    assert rec.take() == []


def test_recovering_with_a_step_moved_by_its_own_name_into_a_container_is_an_added_and_a_removed_step(new_flow):
    """'b' moved into 'box' becomes 'box_b': nothing can match it wrongly, so it only warns and runs anew."""
    rec = Recorder()
    first = new_flow()
    chain(first, rec, ['a', 'b', 'c'], fail=('c/1@0',))
    assert first.run() is False
    rec.take()
    again = new_flow(recover=True, run_id=first.run_id)
    a = again.add_step('a', func=work, kwargs={'rec': rec})
    box = again.add_step('box', requires=((a, OK),))
    box.add_step('b', func=work, kwargs={'rec': rec})
    again.add_step('c', func=work, kwargs={'rec': rec}, requires=((box, OK),))
    with pytest.warns(seq.FlowChangedWarning) as warned:
        assert again.run() is True
    [message] = [str(w.message) for w in warned if issubclass(w.category, seq.FlowChangedWarning)]
    assert re.search(r'[Aa]dded.*\bbox_b\b', message) and re.search(r'[Rr]emoved.*\bb\b', message)
    assert rec.take() == ['box_b/1.1 1', 'c/1 1']


# --------------------------------------------------------------------------------------------- 8. errors

def one_failed_run(new_flow, name='flow') -> str:
    rec = Recorder()
    flow = new_flow(name=name)
    flow.add_step('a', func=work, kwargs={'rec': rec, 'fail': ('a/1@0',)})
    assert flow.run() is False
    return flow.run_id


@pytest.fixture
def recovering(tmp_path, flow_config):
    """``recovering(name='flow', store=store_of(tmp_path), **sequent_kwargs)``: a recovery of a one-step flow."""
    def recovering(name='flow', store=None, **kwargs) -> seq.Sequent:
        flow = seq.Sequent(name=name, store=store or store_of(tmp_path), config=flow_config(task_construct='thread'),
                           run_mode=seq.RUN_RECOVER, **kwargs)
        flow.add_step('a', func=work, kwargs={'rec': Recorder()})
        return flow
    return recovering


def test_recovering_a_run_that_does_not_exist_raises_naming_the_run_id_and_the_store(tmp_path, new_flow, recovering):
    one_failed_run(new_flow)
    with pytest.raises(seq.SequentError) as err:
        recovering(run_id='no-such-run').run()
    assert 'no-such-run' in str(err.value) and store_of(tmp_path) in str(err.value)
    assert [r.run_id for r in seq.list_runs(store_of(tmp_path))] != ['no-such-run']
    assert len(seq.list_runs(store_of(tmp_path))) == 1


def test_recovering_a_flow_without_runs_in_the_store_raises_naming_the_flow_and_the_store(
        tmp_path, new_flow, recovering):
    one_failed_run(new_flow, name='other_flow')
    with pytest.raises(seq.SequentError) as err:
        recovering(name='lonely_flow').run()
    assert 'lonely_flow' in str(err.value) and store_of(tmp_path) in str(err.value)


def test_recovering_from_an_empty_store_raises_naming_the_flow_and_the_store(tmp_path, recovering):
    with pytest.raises(seq.SequentError) as err:
        recovering(name='lonely_flow').run()
    assert 'lonely_flow' in str(err.value) and store_of(tmp_path) in str(err.value)


@pytest.mark.parametrize('run_id', [None, 'some-run'])
def test_recovering_from_a_memory_store_raises_saying_so(run_id, recovering):
    with pytest.raises(seq.SequentError, match=re.escape("':memory:'")):
        recovering(store=':memory:', run_id=run_id).run()


@pytest.mark.parametrize('run_id', [None, 'some-run'])
def test_recovering_from_a_memory_store_raises_naming_the_run_or_flow_looked_for(run_id, recovering):
    with pytest.raises(seq.SequentError) as err:
        recovering(name='mem_flow', store=':memory:', run_id=run_id).run()
    assert (run_id or 'mem_flow') in str(err.value)


@pytest.mark.parametrize('recovery_run', [5, 1, -1, '0'])
def test_recovering_with_a_recovery_run_the_run_does_not_have_raises_naming_run_store_and_attempt(
        tmp_path, recovery_run, new_flow, recovering):
    run_id = one_failed_run(new_flow)
    with pytest.raises(seq.SequentError) as err:
        recovering(run_id=run_id, recovery_run=recovery_run).run()
    message = str(err.value)
    assert run_id in message and store_of(tmp_path) in message and repr(recovery_run) in message


def test_a_store_with_a_newer_schema_version_is_refused_naming_the_store(tmp_path, new_flow, recovering):
    run_id = one_failed_run(new_flow)
    sql(tmp_path, "UPDATE sequent_schema SET value='999' WHERE key='version'")
    with pytest.raises(seq.SequentError) as err:
        recovering(run_id=run_id).run()
    assert store_of(tmp_path) in str(err.value) and '999' in str(err.value)
    with pytest.raises(seq.SequentError, match='999'):
        seq.list_runs(store_of(tmp_path))
    assert sql(tmp_path, 'SELECT COUNT(*) FROM sequent_attempts') == [(1,)]


# --------------------------------------------------------------------------------------------- 9. the same object

def test_run_with_run_mode_recover_on_the_same_object_recovers_its_run(tmp_path, new_flow):
    rec = Recorder()
    flow = new_flow()
    chain(flow, rec, ['a', 'b'], fail=('b/1@0',))
    assert flow.run() is False
    run_id = flow.run_id
    assert flow.run(run_mode=seq.RUN_RECOVER) is True
    assert flow.run_id == run_id
    assert rec.take() == ['a/1 0', 'b/1 0', 'b/1 1']
    # the mode stays: running again recovers again, and skips everything
    assert flow.run() is True
    assert rec.take() == []
    assert [(r.run_id, r.recoveries) for r in seq.list_runs(store_of(tmp_path))] == [(run_id, 2)]


def test_run_with_run_mode_recover_on_the_same_object_recovers_its_own_run_not_a_later_one_of_the_flow(
        tmp_path, new_flow):
    rec = Recorder()
    mine = new_flow()
    chain(mine, rec, ['a', 'b'], fail=('b/1@0',))
    assert mine.run() is False
    later = new_flow()  # the same flow, run again (by cron, say) before mine is recovered
    chain(later, rec, ['a', 'b'], fail=('b/1@0',))
    assert later.run() is False
    rec.take()
    assert mine.run(run_mode=seq.RUN_RECOVER) is True
    assert rec.take() == ['b/1 1']
    assert {r.run_id: r.recoveries for r in seq.list_runs(store_of(tmp_path))} == {mine.run_id: 1, later.run_id: 0}


def test_recover_without_run_id_continues_the_latest_run_of_the_flow(new_flow):
    rec = Recorder()
    ids = []
    for _ in range(2):
        flow = new_flow()
        chain(flow, rec, ['a', 'b'], fail=('b/1@0',))
        assert flow.run() is False
        ids.append(flow.run_id)
    rec.take()
    again = new_flow(recover=True)
    chain(again, rec, ['a', 'b'])
    assert again.run() is True
    assert again.run_id == ids[1]
    assert rec.take() == ['b/1 1']


# --------------------------------------------------------------------------------------------- 10. history API and CLI

@pytest.fixture
def history(tmp_path, new_flow):
    """Run X of 'hist' failed then recovered, then run Y of 'other' succeeded."""
    rec = Recorder()
    x = new_flow(name='hist')
    chain(x, rec, ['a', 'b'], fail=('b/1@0',))
    assert x.run() is False
    before = seq.list_runs(store_of(tmp_path))
    y = new_flow(name='other')
    chain(y, rec, ['solo'])
    assert y.run() is True
    assert x.run(run_mode=seq.RUN_RECOVER, run_id=x.run_id) is True
    return tmp_path, x.run_id, y.run_id, before


def test_list_runs_shows_a_failed_run_as_failure_with_no_recoveries(tmp_path, new_flow):
    rec = Recorder()
    x = new_flow(name='hist')
    chain(x, rec, ['a', 'b'], fail=('b/1@0',))
    assert x.run() is False
    [run] = seq.list_runs(store_of(tmp_path))
    assert isinstance(run, seq.RunInfo)
    assert (run.run_id, run.flow, run.recoveries, run.outcome) == (x.run_id, 'hist', 0, 'failure')
    assert run.started is not None and run.ended is not None and run.started <= run.ended


def test_list_runs_lists_runs_oldest_first_with_recoveries_and_the_outcome_of_the_last_attempt(history):
    tmp_path, x, y, before = history
    runs = seq.list_runs(store_of(tmp_path))
    assert [(r.run_id, r.flow, r.recoveries, r.outcome) for r in runs] == [
        (x, 'hist', 1, 'success'), (y, 'other', 0, 'success')]
    assert runs[0].started == before[0].started  # the first attempt's start
    assert runs[0].ended > before[0].ended  # the last attempt's end
    assert [r.run_id for r in seq.list_runs(store_of(tmp_path), flow='other')] == [y]


def test_run_tasks_lists_the_tasks_of_every_attempt_or_of_one(history):
    tmp_path, x, _, _ = history
    every = seq.run_tasks(store_of(tmp_path), x)
    assert all(isinstance(t, seq.TaskInfo) for t in every)
    assert [(t.step, t.sequence, t.recovery, t.status, t.skipped) for t in every] == [
        ('a', '1', 0, 'success', False), ('b', '1', 0, 'failure', False),
        ('a', '1', 1, 'success', True), ('b', '1', 1, 'success', False)]
    assert 'RuntimeError' in every[1].error and 'b failed' in every[1].error
    only = seq.run_tasks(store_of(tmp_path), x, recovery=1)
    assert [(t.step, t.recovery, t.skipped) for t in only] == [('a', 1, True), ('b', 1, False)]
    assert seq.run_tasks(store_of(tmp_path), x, recovery=0) == every[:2]


def test_run_tasks_of_an_unknown_run_raises_naming_the_run_and_the_store(history):
    tmp_path = history[0]
    with pytest.raises(seq.SequentError) as err:
        seq.run_tasks(store_of(tmp_path), 'no-such-run')
    assert 'no-such-run' in str(err.value) and store_of(tmp_path) in str(err.value)


def test_list_runs_of_a_missing_store_file_raises_naming_it_and_creates_nothing(tmp_path):
    missing = str(tmp_path / 'missing.run.db')
    with pytest.raises(seq.SequentError, match=re.escape(missing)):
        seq.list_runs(missing)
    assert not os.path.exists(missing)


def cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-m', 'sequent', *args], env=env, capture_output=True, text=True,
                          timeout=20)


def test_cli_runs_prints_each_run_newest_first_with_its_flow_recoveries_and_outcome(history):
    tmp_path, x, y, _ = history
    done = cli('runs', store_of(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 'RUN_ID' in lines[0] and 'OUTCOME' in lines[0]
    assert lines[1].split()[:3] == [y, 'other', '0'] and lines[1].split()[-1] == 'success'
    assert lines[2].split()[:3] == [x, 'hist', '1'] and lines[2].split()[-1] == 'success'


def test_cli_tasks_prints_the_tasks_of_a_run_with_their_statuses(history):
    tmp_path, x, _, _ = history
    done = cli('tasks', store_of(tmp_path), x)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [r[:4] for r in rows] == [['a', '1', '0', 'success'], ['b', '1', '0', 'failure'],
                                     ['a', '1', '1', 'success'], ['b', '1', '1', 'success']]
    assert '(skipped)' in done.stdout.splitlines()[3] and 'RuntimeError' in done.stdout.splitlines()[2]
    one = cli('tasks', store_of(tmp_path), x, '--recovery', '1')
    assert one.returncode == 0, one.stderr
    assert [line.split()[:4] for line in one.stdout.splitlines()[1:]] == [
        ['a', '1', '1', 'success'], ['b', '1', '1', 'success']]


def test_cli_no_store_or_no_run_exits_3_with_a_message_on_stderr(history):
    tmp_path, x, _, _ = history
    missing = str(tmp_path / 'missing.run.db')
    for args, named in [(('runs', missing), missing), (('tasks', missing, x), missing),
                        (('tasks', store_of(tmp_path), 'no-such-run'), 'no-such-run')]:
        done = cli(*args)
        assert done.returncode == 3, args
        assert named in done.stderr and done.stdout == ''
        assert 'Traceback' not in done.stderr
