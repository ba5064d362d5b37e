"""The engine (sequent.eventor) used directly: events, triggers, delays, limits, failures, store.

Most tests run thread tasks (fast, and the functions can record into Python objects); the
store is a SQLite file under ``tmp_path`` so that the recorded tasks can be read back.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequent.eventor import (STEP_ACTIVE, STEP_COMPLETE, STEP_FAILURE, STEP_READY, STEP_SUCCESS, ConfigError,
                             Eventor, EventorError, and_, or_)
from sequent.eventor.dburl import resolve_store
from sequent.eventor.store import SCHEMA_VERSION, Store

# --------------------------------------------------------------------------------------------- helpers

REPO = Path(__file__).resolve().parents[1]
HANG_TIMEOUT = 5  # seconds a child run may take before it counts as hung
WAIT = 5  # seconds a task waits at a rendezvous with another task; only reached on a bug


@pytest.fixture
def make(tmp_path: Path, flow_config):
    """``make(name='t', store=None, **config)``: an Eventor of thread tasks with its store and logs under tmp_path."""
    def make(name: str = 't', store: str | None = None, **config) -> Eventor:
        return Eventor(name=name, store=str(tmp_path / 'store.db') if store is None else store,
                       config=flow_config(**{'task_construct': 'thread', **config}))
    return make


def rows(tmp_path: Path, run_id: str, db: str = 'store.db') -> dict:
    """The run's task rows by (step, sequence)."""
    store = Store(resolve_store(str(tmp_path / db), {}, '')).open()
    try:
        return {(r.step, r.sequence): r for r in store.task_rows(run_id)}
    finally:
        store.close()


def query(path: Path, sql: str, *params) -> list:
    with sqlite3.connect(str(path)) as conn:
        return conn.execute(sql, params).fetchall()


def run_log(tmp_path: Path, ev: Eventor) -> str:
    return (tmp_path / 'logs' / f'{ev.name}-{ev.run_id}.log').read_text()


class Calls:
    """Records the calls of step functions (thread tasks share this process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple] = []

    def record(self, *args, **kwargs):
        with self.lock:
            self.calls.append(args + tuple(sorted(kwargs.items())))
        return args[0] if args else None

    def names(self) -> list:
        return [c[0] for c in self.calls]


def fail(*_args, **_kwargs):
    raise RuntimeError('step failed on purpose')


# --------------------------------------------------------------------------------------------- conditions


def test_and_condition_fires_only_when_all_its_events_fired(tmp_path, make):
    ev = make()
    calls = Calls()
    go, a_ok, b_ok, b_bad = (ev.add_event(n) for n in ('go', 'a_ok', 'b_ok', 'b_bad'))
    both = ev.add_event('both', and_(a_ok, b_ok))
    both_tuple = ev.add_event('both_tuple', (a_ok, 'b_bad'))
    ev.add_step('a', func=calls.record, args=('a',), triggers={STEP_SUCCESS: (a_ok,)})
    ev.add_step('b', func=fail, triggers={STEP_SUCCESS: (b_ok,), STEP_FAILURE: (b_bad,)})
    ev.add_step('needs_a_and_b_ok', func=calls.record, args=('needs_a_and_b_ok',))
    ev.add_step('needs_a_and_b_bad', func=calls.record, args=('needs_a_and_b_bad',))
    ev.add_assoc(go, 'a', 'b')
    ev.add_assoc(both, 'needs_a_and_b_ok')
    ev.add_assoc(both_tuple, 'needs_a_and_b_bad')
    ev.trigger_event(go, 1)
    assert ev.run() is True  # b's failure is handled (it fires b_bad)
    assert sorted(calls.names()) == ['a', 'needs_a_and_b_bad']
    r = rows(tmp_path, ev.run_id)
    assert r[('needs_a_and_b_bad', '1')].started >= max(r[('a', '1')].ended, r[('b', '1')].ended)


@pytest.mark.parametrize('order', ['never_first', 'never_last'])
def test_or_condition_fires_although_an_operand_never_fires(order, make):
    ev = make()
    calls = Calls()
    go, a_ok, never = ev.add_event('go'), ev.add_event('a_ok'), ev.add_event('never')
    either = ev.add_event('either', or_(never, a_ok) if order == 'never_first' else or_(a_ok, 'never'))
    ev.add_step('a', func=calls.record, args=('a',), triggers={STEP_SUCCESS: (a_ok,)})
    ev.add_step('after', func=calls.record, args=('after',))
    ev.add_assoc(go, 'a')
    ev.add_assoc(either, 'after')
    ev.trigger_event(go)
    assert ev.run() is True
    assert calls.names() == ['a', 'after']


def test_event_fires_once_per_sequence_and_again_at_another_sequence(tmp_path, make):
    ev = make()
    calls = Calls()
    go, a_ok, b_ok = ev.add_event('go'), ev.add_event('a_ok'), ev.add_event('b_ok')
    either = ev.add_event('either', or_(a_ok, b_ok))
    ev.add_step('a', func=calls.record, args=('a',), triggers={STEP_SUCCESS: (a_ok,)})
    ev.add_step('b', func=calls.record, args=('b',), triggers={STEP_SUCCESS: (b_ok,)})
    ev.add_step('c', func=calls.record, args=('c',), config={'sequence_arg_name': 'seq'})
    ev.add_step('late', func=None)
    ev.add_assoc(go, 'a', 'b')
    ev.add_assoc(either, 'c')
    ev.add_assoc(either, 'late', delay=0.01)  # a delay row per firing: shows firings, not just tasks
    ev.add_assoc(b_ok, 'either')  # a third way to fire it at the same sequence
    ev.trigger_event(go, 1)
    ev.trigger_event(go, 1)  # the same initial event twice: still once
    ev.trigger_event(go, 2)
    assert ev.run() is True
    c_calls = sorted(c for c in calls.calls if c[0] == 'c')
    assert c_calls == [('c', ('seq', '1')), ('c', ('seq', '2'))]
    assert sorted(k for k in rows(tmp_path, ev.run_id)) == [
        ('a', '1'), ('a', '2'), ('b', '1'), ('b', '2'), ('c', '1'), ('c', '2'), ('late', '1'), ('late', '2')]
    assert sorted(query(tmp_path / 'store.db', 'SELECT step, sequence FROM sequent_delays')) == [
        ('late', '1'), ('late', '2')]


@pytest.mark.parametrize('sequence', ['1.2', (1, 2)], ids=['string', 'tuple'])
def test_trigger_event_at_a_sequence_runs_the_task_at_that_sequence(tmp_path, sequence, make):
    ev = make()
    seen = []
    go = ev.add_event('go')
    ev.add_step('s', func=lambda seq: seen.append((seq, __import__('os').getenv('SEQUENT_STEP_SEQUENCE'))),
                config={'sequence_arg_name': 'seq'})
    ev.add_assoc(go, 's')
    ev.trigger_event(go, sequence)
    assert ev.run() is True
    assert seen == [('1.2', '1.2')]
    assert list(rows(tmp_path, ev.run_id)) == [('s', '1.2')]


# --------------------------------------------------------------------------------------------- triggers

TRIGGER_CASES = {
    # status the trigger is on: (followers that run when the step succeeds, ... when it fails)
    'success': (STEP_SUCCESS, True, False),
    'failure': (STEP_FAILURE, False, True),
    'complete': (STEP_COMPLETE, True, True),
    'active': (STEP_ACTIVE, True, True),
    'ready': (STEP_READY, True, True),
}


@pytest.mark.parametrize('outcome', ['succeeds', 'fails'])
@pytest.mark.parametrize('case', list(TRIGGER_CASES))
def test_status_trigger_fires_its_event_when_the_step_reaches_that_status(tmp_path, case, outcome, make):
    status, on_success, on_failure = TRIGGER_CASES[case]
    ev = make(stop_on_exception=False)
    calls = Calls()
    go, hit = ev.add_event('go'), ev.add_event('hit')
    ev.add_step('s', func=calls.record if outcome == 'succeeds' else fail, args=('s',), triggers={status: (hit,)})
    ev.add_step('follower', func=calls.record, args=('follower',))
    ev.add_assoc(go, 's')
    ev.add_assoc(hit, 'follower')
    ev.trigger_event(go)
    result = ev.run()
    expected = on_success if outcome == 'succeeds' else on_failure
    assert ('follower' in calls.names()) is expected
    r = rows(tmp_path, ev.run_id)
    assert r[('s', '1')].status == ('success' if outcome == 'succeeds' else 'failure')
    if case in ('active', 'ready'):  # fired when s starts: the follower may start before s ends
        assert r[('follower', '1')].started >= r[('s', '1')].created
    elif expected:
        assert r[('follower', '1')].started >= r[('s', '1')].ended
    # a failure is handled only by a failure (or complete) trigger
    handled = outcome == 'succeeds' or case in ('failure', 'complete')
    assert result is handled


def test_assoc_to_an_event_fires_that_event_at_the_same_sequence(make):
    ev = make()
    calls = Calls()
    go, relay, relay2 = ev.add_event('go'), ev.add_event('relay'), ev.add_event('relay2')
    ev.add_step('s', func=calls.record, args=('s',), config={'sequence_arg_name': 'seq'})
    ev.add_assoc(go, relay)
    ev.add_assoc('relay', 'relay2')
    ev.add_assoc(relay2, 's')
    ev.trigger_event(go, '3')
    assert ev.run() is True
    assert calls.calls == [('s', ('seq', '3'))]


# --------------------------------------------------------------------------------------------- delay, latency


def test_delay_starts_the_task_no_sooner_than_delay_after_the_event_and_records_it(tmp_path, make):
    ev = make()
    go, a_ok = ev.add_event('go'), ev.add_event('a_ok')
    ev.add_step('a', func=None, triggers={STEP_SUCCESS: (a_ok,)})
    ev.add_step('b', func=None)
    ev.add_assoc(go, 'a')
    ev.add_assoc(a_ok, 'b', delay=0.4)
    ev.trigger_event(go)
    assert ev.run() is True
    r = rows(tmp_path, ev.run_id)
    waited = r[('b', '1')].started - r[('a', '1')].ended
    assert 0.4 <= waited < 2.0
    delay_rows = query(tmp_path / 'store.db',
                       'SELECT step, sequence, seconds, activated FROM sequent_delays WHERE run_id = ?', ev.run_id)
    assert [row[:3] for row in delay_rows] == [('b', '1', 0.4)]
    assert r[('a', '1')].ended <= delay_rows[0][3] <= r[('b', '1')].started - 0.4


def test_dependent_starts_within_milliseconds_of_its_requirements_end_despite_sleep_between_loops(tmp_path, make):
    ev = make(sleep_between_loops=5)
    go = ev.add_event('go')
    names = [f's{i}' for i in range(6)]
    for i, name in enumerate(names):
        done = ev.add_event(f'{name}_ok')
        ev.add_step(name, func=time.sleep, args=(0.01,), triggers={STEP_SUCCESS: (done,)})
        ev.add_assoc(go if i == 0 else f'{names[i - 1]}_ok', name)
    ev.trigger_event(go)
    start = time.monotonic()
    assert ev.run() is True
    assert time.monotonic() - start < 3
    r = rows(tmp_path, ev.run_id)
    hops = [r[(b, '1')].started - r[(a, '1')].ended for a, b in zip(names, names[1:])]
    assert all(0 <= hop < 0.05 for hop in hops), hops


# --------------------------------------------------------------------------------------------- concurrency


PEAK_SCRIPT = r"""
import json, sys, threading, time
from sequent.eventor import Eventor

TASKS = 12  # 3 steps x 4 sequences
changed = threading.Condition()
now = {'all': 0}
peak = {'all': 0}
done = {}
deadline = []

def work(name):
    with changed:
        for key in ('all', name):
            now[key] = now.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), now[key])
        changed.notify_all()
        # Rendezvous: stay until `expect` tasks run at once, or every task not ended yet is here (the last
        # ones, fewer than `expect`); bounded, so that a run that never gets there still ends, with its peak.
        if not deadline:
            deadline.append(time.monotonic() + RENDEZVOUS)
        changed.wait_for(lambda: now['all'] >= expect or now['all'] + sum(done.values()) == TASKS,
                         timeout=max(0.0, deadline[0] - time.monotonic()))
    time.sleep(0.08)  # then stay a little: a task started beyond the limit would be seen here
    with changed:
        for key in ('all', name):
            now[key] -= 1
        done[name] = done.get(name, 0) + 1
        changed.notify_all()

flow_limit, step_limit, logdir, expect = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
RENDEZVOUS = float(sys.argv[5])
ev = Eventor(name='t', store=':memory:', config={'task_construct': 'thread', 'max_concurrent': flow_limit,
                                                 'LOGGING': {'logdir': logdir, 'console': False}})
go = ev.add_event('go')
for name in ('a', 'b', 'c'):
    ev.add_step(name, func=work, args=(name,), config={'max_concurrent': step_limit if name == 'a' else -1})
    ev.add_assoc(go, name)
for seq in (1, 2, 3, 4):
    ev.trigger_event(go, seq)
ok = ev.run()
print(json.dumps({'ok': ok, 'done': done, 'peak': peak}))
"""


def run_peak(tmp_path, flow_limit: int, step_limit: int, expect: int) -> dict:
    """Run 3 steps x 4 sequences of thread tasks in a child (a hang must fail, not hang); each task waits
    (at most HANG_TIMEOUT / 2 s for them all) until ``expect`` tasks run at once, then runs 80 ms more."""
    try:
        proc = subprocess.run([sys.executable, '-c', PEAK_SCRIPT, str(flow_limit), str(step_limit),
                               str(tmp_path / 'logs'), str(expect), str(HANG_TIMEOUT / 2)],
                              env={**os.environ, 'PYTHONPATH': str(REPO)},
                              capture_output=True, text=True, timeout=HANG_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f'the run did not end within {HANG_TIMEOUT} s (flow limit {flow_limit}, step limit {step_limit})')
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_no_limit_runs_every_task_at_once(tmp_path):
    got = run_peak(tmp_path, -1, -1, expect=12)
    assert got['ok'] is True
    assert got['done'] == {'a': 4, 'b': 4, 'c': 4}
    assert got['peak'] == {'all': 12, 'a': 4, 'b': 4, 'c': 4}


def test_flow_max_concurrent_limits_tasks_running_at_once_across_steps(tmp_path):
    got = run_peak(tmp_path, 2, -1, expect=2)
    assert got['ok'] is True
    assert got['done'] == {'a': 4, 'b': 4, 'c': 4}
    assert got['peak']['all'] == 2


def test_step_max_concurrent_limits_tasks_of_that_step_only(tmp_path):
    got = run_peak(tmp_path, -1, 2, expect=10)
    assert got['ok'] is True
    assert got['done'] == {'a': 4, 'b': 4, 'c': 4}
    assert got['peak'] == {'all': 10, 'a': 2, 'b': 4, 'c': 4}


# --------------------------------------------------------------------------------------------- failures


def _failure_program(make, handled: bool, **config) -> tuple[Eventor, Calls]:
    """bad fails at once while slow runs; after_slow needs slow; after_bad handles bad's failure."""
    ev = make(**config)
    calls = Calls()
    go, slow_ok, bad_failed = ev.add_event('go'), ev.add_event('slow_ok'), ev.add_event('bad_failed')

    def slow():
        time.sleep(0.3)
        calls.record('slow')

    ev.add_step('bad', func=fail, triggers={STEP_FAILURE: (bad_failed,)} if handled else None)
    ev.add_step('slow', func=slow, triggers={STEP_SUCCESS: (slow_ok,)})
    ev.add_step('after_slow', func=calls.record, args=('after_slow',))
    ev.add_step('after_bad', func=calls.record, args=('after_bad',))
    ev.add_assoc(go, 'bad', 'slow')
    ev.add_assoc(slow_ok, 'after_slow')
    ev.add_assoc(bad_failed, 'after_bad')
    ev.trigger_event(go)
    return ev, calls


def test_unhandled_failure_with_stop_on_exception_lets_running_tasks_finish_starts_nothing_and_fails(tmp_path, make):
    ev, calls = _failure_program(make, handled=False, stop_on_exception=True)
    assert ev.run() is False
    assert calls.names() == ['slow']  # slow was running: it finished; after_slow never started
    r = rows(tmp_path, ev.run_id)
    assert r[('bad', '1')].status == 'failure'
    assert r[('slow', '1')].status == 'success'
    assert ('after_slow', '1') not in r or r[('after_slow', '1')].started is None
    assert 'Processing finished with: failure' in run_log(tmp_path, ev)


def test_unhandled_failure_without_stop_on_exception_runs_everything_else_and_still_fails(make):
    ev, calls = _failure_program(make, handled=False, stop_on_exception=False)
    assert ev.run() is False
    assert calls.names() == ['slow', 'after_slow']


def test_step_stop_on_exception_overrides_the_flow_value_for_its_own_failure(make):
    ev = make(stop_on_exception=True)
    calls = Calls()
    go, slow_ok = ev.add_event('go'), ev.add_event('slow_ok')
    ev.add_step('bad', func=fail, config={'stop_on_exception': False})
    ev.add_step('slow', func=lambda: time.sleep(0.2), triggers={STEP_SUCCESS: (slow_ok,)})
    ev.add_step('after_slow', func=calls.record, args=('after_slow',))
    ev.add_assoc(go, 'bad', 'slow')
    ev.add_assoc(slow_ok, 'after_slow')
    ev.trigger_event(go)
    assert ev.run() is False
    assert calls.names() == ['after_slow']


def test_handled_failure_lets_the_run_succeed(tmp_path, make):
    ev, calls = _failure_program(make, handled=True)
    assert ev.run() is True
    assert sorted(calls.names()) == ['after_bad', 'after_slow', 'slow']
    assert rows(tmp_path, ev.run_id)[('bad', '1')].status == 'failure'
    assert 'Processing finished with: success' in run_log(tmp_path, ev)


@pytest.mark.parametrize('max_loops', [0, 1])
def test_max_loops_stops_early_returns_false_and_logs_incomplete(tmp_path, max_loops, make):
    ev = make()
    calls = Calls()
    go = ev.add_event('go')
    names = ['a', 'b', 'c', 'd']
    for i, name in enumerate(names):
        ev.add_event(f'{name}_ok')
        ev.add_step(name, func=calls.record, args=(name,), triggers={STEP_SUCCESS: (f'{name}_ok',)})
        ev.add_assoc(go if i == 0 else f'{names[i - 1]}_ok', name)
    ev.trigger_event(go)
    assert ev.run(max_loops=max_loops) is False
    assert 'd' not in calls.names()
    log = run_log(tmp_path, ev)
    assert 'Processing finished with: incomplete' in log
    assert 'Processing finished with: success' not in log
    status = query(tmp_path / 'store.db', 'SELECT status FROM sequent_runs WHERE run_id = ?', ev.run_id)
    assert status == [('incomplete',)]


# --------------------------------------------------------------------------------------------- calling the step


def test_sequence_arg_name_and_pass_logger_to_task_add_those_kwargs(tmp_path, make):
    ev = make()
    got = {}

    def step(x, seq, logger):
        got.update(x=x, seq=seq, logger=logger.name)
        logger.info('logged through the passed logger')

    go = ev.add_event('go')
    ev.add_step('s', func=step, kwargs={'x': 5}, config={'sequence_arg_name': 'seq', 'pass_logger_to_task': True})
    ev.add_assoc(go, 's')
    ev.trigger_event(go, '2.1')
    assert ev.run() is True
    assert got == {'x': 5, 'seq': '2.1', 'logger': f't-{ev.run_id}.s_2.1'}
    assert 'logged through the passed logger' in run_log(tmp_path, ev)
    assert 'logged through the passed logger' in (tmp_path / 'logs' / f't-{ev.run_id}.s_2.1.log').read_text()


def test_steps_get_no_extra_kwargs_by_default(make):
    ev = make()
    got = []
    go = ev.add_event('go')
    ev.add_step('s', func=lambda *a, **k: got.append((a, k)), args=(1,))
    ev.add_assoc(go, 's')
    ev.trigger_event(go)
    assert ev.run() is True
    assert got == [((1,), {})]


def test_invoke_construct_runs_the_function_in_the_coordinators_thread(tmp_path, make):
    ev = make(task_construct='invoke')
    threads = []
    go = ev.add_event('go')
    ev.add_step('s', func=lambda: threads.append(threading.current_thread()))
    ev.add_assoc(go, 's')
    ev.trigger_event(go)
    assert ev.run() is True
    assert threads == [threading.current_thread()]
    assert rows(tmp_path, ev.run_id)[('s', '1')].status == 'success'


def _env_program(make, construct: str) -> tuple[Eventor, list]:
    ev = make(task_construct=construct)
    got = []
    go = ev.add_event('go')
    ev.add_step('s', func=lambda: got.append((os.getenv('SEQUENT_STEP_NAME'), os.getenv('SEQUENT_STEP_SEQUENCE'),
                                              os.getenv('SEQUENT_LOGGER_NAME'))))
    ev.add_assoc(go, 's')
    ev.trigger_event(go, '1.3')
    return ev, got


def test_thread_task_sees_its_variables_through_os_getenv(make):
    ev, got = _env_program(make, 'thread')
    assert ev.run() is True
    assert got == [('s', '1.3', f't-{ev.run_id}.s_1.3')]


def test_invoke_task_sees_its_variables_through_os_getenv(make):
    ev, got = _env_program(make, 'invoke')
    assert ev.run() is True
    assert got == [('s', '1.3', f't-{ev.run_id}.s_1.3')]


def test_thread_construct_runs_the_function_in_another_thread(make):
    ev = make()
    threads = []
    go = ev.add_event('go')
    ev.add_step('s', func=lambda: threads.append(threading.current_thread()))
    ev.add_assoc(go, 's')
    ev.trigger_event(go)
    assert ev.run() is True
    assert len(threads) == 1 and threads[0] is not threading.current_thread()


def test_return_value_is_stored_as_its_repr(tmp_path, make):
    ev = make()
    go = ev.add_event('go')
    ev.add_step('s', func=lambda: {'answer': 42})
    ev.add_assoc(go, 's')
    ev.trigger_event(go)
    assert ev.run() is True
    assert rows(tmp_path, ev.run_id)[('s', '1')].result == "{'answer': 42}"


# --------------------------------------------------------------------------------------------- validation


def _unknown_in_condition(ev):
    ev.add_event('needs_ghost', or_('go', 'ghost_event'))


def _unknown_assoc_event(ev):
    ev.add_assoc('ghost_event', 's')


def _unknown_assoc_target(ev):
    ev.add_assoc('go', 'ghost_event')


def _unknown_trigger(ev):
    ev.add_step('s2', func=None, triggers={STEP_SUCCESS: ('ghost_event',)})


def _unknown_initial(ev):
    ev.trigger_event('ghost_event', 1)


@pytest.mark.parametrize('mistake', [_unknown_in_condition, _unknown_assoc_event, _unknown_assoc_target,
                                     _unknown_trigger, _unknown_initial],
                         ids=['condition', 'assoc-event', 'assoc-target', 'trigger', 'initial'])
def test_unknown_event_is_refused_at_run_naming_it_and_nothing_runs(tmp_path, mistake, make):
    ev = make()
    calls = Calls()
    go = ev.add_event('go')
    ev.add_step('s', func=calls.record, args=('s',))
    ev.add_assoc(go, 's')
    ev.trigger_event(go)
    mistake(ev)
    with pytest.raises(EventorError, match='ghost_event'):
        ev.run()
    assert calls.calls == []
    assert not (tmp_path / 'store.db').exists() or query(tmp_path / 'store.db',
                                                         'SELECT count(*) FROM sequent_runs') == [(0,)]


@pytest.mark.parametrize('mistake, match', [
    (lambda ev: (ev.add_step('dup'), ev.add_step('dup')), 'dup'),
    (lambda ev: ev.add_step('s', func=3), 'callable'),
    (lambda ev: ev.add_assoc(ev.add_event('go'), ev.add_step('s'), delay=-1), 'delay'),
    (lambda ev: ev.add_step('s', config={'task_construct': 'fiber'}), 'task_construct'),
    (lambda ev: ev.trigger_event(ev.add_event('go'), '1.x'), '1.x'),
    (lambda ev: ev.trigger_event(ev.add_event('go'), 'one'), 'one'),
], ids=['duplicate-step', 'non-callable', 'negative-delay', 'bad-construct', 'bad-sequence', 'bad-sequence-word'])
def test_bad_program_is_refused_while_building(mistake, match, make):
    ev = make()
    with pytest.raises(EventorError, match=match):
        mistake(ev)


def test_unknown_task_construct_in_flow_config_is_refused(make):
    with pytest.raises(ConfigError, match='task_construct'):
        make(task_construct='fiber')


# --------------------------------------------------------------------------------------------- runs and store


@pytest.fixture
def one_step(tmp_path, flow_config):
    """``one_step(calls, **eventor_kwargs)``: an Eventor whose one step records into ``calls``."""
    def one_step(calls, **kwargs) -> Eventor:
        kwargs.setdefault('store', str(tmp_path / 'store.db'))
        ev = Eventor(name='t', config=flow_config(task_construct='thread'), **kwargs)
        go = ev.add_event('go')
        ev.add_step('s', func=calls.record, args=('s',))
        ev.add_assoc(go, 's')
        ev.trigger_event(go)
        return ev
    return one_step


def test_run_id_given_twice_in_restart_is_refused_and_runs_nothing(tmp_path, one_step):
    calls = Calls()
    assert one_step(calls, run_id='r-1').run() is True
    again = one_step(calls, run_id='r-1')
    with pytest.raises(EventorError, match="'r-1' already exists"):
        again.run()
    assert calls.names() == ['s']
    assert query(tmp_path / 'store.db', 'SELECT run_id, status FROM sequent_runs') == [('r-1', 'success')]


def test_every_restart_keeps_earlier_runs_and_their_tasks(tmp_path, one_step):
    calls = Calls()
    first, second = one_step(calls), one_step(calls)
    assert first.run() is True
    assert second.run() is True
    assert first.run_id != second.run_id
    assert sorted(query(tmp_path / 'store.db', 'SELECT run_id FROM sequent_runs')) == sorted(
        [(first.run_id,), (second.run_id,)])
    assert list(rows(tmp_path, first.run_id)) == [('s', '1')]
    assert list(rows(tmp_path, second.run_id)) == [('s', '1')]
    assert calls.names() == ['s', 's']


def test_run_id_generated_is_unique_and_sorts_by_start_time(one_step):
    calls = Calls()
    ids = []
    for _ in range(3):
        ev = one_step(calls)
        ev.run()
        ids.append(ev.run_id)
    assert len(set(ids)) == 3
    assert ids == sorted(ids)


def test_store_records_its_schema_version(tmp_path, one_step):
    calls = Calls()
    one_step(calls).run()
    assert query(tmp_path / 'store.db', "SELECT value FROM sequent_schema WHERE key = 'version'") == [
        (str(SCHEMA_VERSION),)]


def test_store_of_a_newer_schema_version_is_refused_clearly(tmp_path, one_step):
    calls = Calls()
    Store(resolve_store(str(tmp_path / 'store.db'), {}, '')).open().close()
    newer = SCHEMA_VERSION + 1
    with sqlite3.connect(str(tmp_path / 'store.db')) as conn:
        conn.execute("UPDATE sequent_schema SET value = ? WHERE key = 'version'", (str(newer),))
    with pytest.raises(EventorError, match=f'newer.*schema version {newer}'):
        one_step(calls).run()
    assert calls.calls == []
    assert query(tmp_path / 'store.db', 'SELECT count(*) FROM sequent_runs') == [(0,)]


def test_memory_store_runs_a_flow(tmp_path, one_step):
    calls = Calls()
    ev = one_step(calls, store=':memory:')
    assert ev.run() is True
    assert calls.names() == ['s']
    assert not list(tmp_path.glob('*.db'))


def test_file_store_is_in_wal_mode(tmp_path, one_step):
    calls = Calls()
    assert one_step(calls).run() is True
    assert query(tmp_path / 'store.db', 'PRAGMA journal_mode') == [('wal',)]


def test_task_rows_record_status_times_host_and_pid(tmp_path, one_step):
    calls = Calls()
    ev = one_step(calls)
    assert ev.run() is True
    row = rows(tmp_path, ev.run_id)[('s', '1')]
    assert (row.status, row.recovery, row.pid, row.error) == ('success', 0, os.getpid(), None)
    assert row.created <= row.started <= row.ended
    engine = sa.create_engine(f'sqlite:///{tmp_path / "store.db"}')
    with engine.connect() as conn:
        attempt = conn.execute(sa.text('SELECT recovery, mode, outcome FROM sequent_attempts')).all()
    engine.dispose()
    assert attempt == [(0, 'restart', 'success')]


def test_a_dependent_sees_its_requirements_outcome_already_committed_in_the_store(tmp_path, make):
    ev = make()
    seen = []

    def look():
        with sqlite3.connect(str(tmp_path / 'store.db')) as conn:  # another connection: only committed data
            seen.extend(conn.execute('SELECT step, status FROM sequent_tasks ORDER BY step').fetchall())

    go, a_ok = ev.add_event('go'), ev.add_event('a_ok')
    ev.add_step('a', func=None, triggers={STEP_SUCCESS: (a_ok,)})
    ev.add_step('b', func=look)
    ev.add_assoc(go, 'a')
    ev.add_assoc(a_ok, 'b')
    ev.trigger_event(go)
    assert ev.run() is True
    assert seen == [('a', 'success'), ('b', 'active')]


def test_unhandled_failure_cancels_pending_delays_and_ends_without_waiting_for_them(make):
    ev = make()
    calls = Calls()
    go = ev.add_event('go')
    ev.add_step('bad', func=lambda: (time.sleep(0.05), fail()))
    ev.add_step('later', func=calls.record, args=('later',))
    ev.add_assoc(go, 'bad')
    ev.add_assoc(go, 'later', delay=3)
    ev.trigger_event(go)
    started = time.monotonic()
    assert ev.run() is False
    assert time.monotonic() - started < 1.5
    assert calls.calls == []


# --------------------------------------------------------------------------------------------- containers


def _container(ev: Eventor, calls: Calls, name: str, repeats, fail_at: str | None = None, sleep: float = 0.0,
               handle_failure: bool = False, meet=None) -> None:
    """Container ``name`` whose iterations run ``<name>_k`` then ``<name>_k2``; success fires ``<name>_ok``.
    ``meet(seq)``, when given, is called by ``<name>_k`` first (a rendezvous with another task)."""
    start, k_ok = ev.add_event(f'{name}_it', scope=name), ev.add_event(f'{name}_k_ok', scope=name)
    triggers = {STEP_SUCCESS: (ev.add_event(f'{name}_ok'),)}
    if handle_failure:
        triggers[STEP_FAILURE] = (ev.add_event(f'{name}_bad'),)
    ev.add_container(name, repeats=repeats, starts=(start,), triggers=triggers)

    def k(seq):
        if meet is not None:
            meet(seq)
        time.sleep(sleep)
        if seq == fail_at:
            raise RuntimeError(f'{name} fails at {seq}')
        calls.record(f'{name}_k', seq=seq)

    ev.add_step(f'{name}_k', func=k, triggers={STEP_SUCCESS: (k_ok,)}, scope=name,
                config={'sequence_arg_name': 'seq'})
    ev.add_step(f'{name}_k2', func=calls.record, args=(f'{name}_k2',), scope=name, config={'sequence_arg_name': 'seq'})
    ev.add_assoc(start, f'{name}_k')
    ev.add_assoc(k_ok, f'{name}_k2')


def test_container_runs_its_iterations_one_after_another_at_S_k_then_succeeds(tmp_path, make):
    ev = make()
    calls = Calls()
    go = ev.add_event('go')
    _container(ev, calls, 'c', [10, 20, 30])
    ev.add_step('after', func=calls.record, args=('after',), config={'sequence_arg_name': 'seq'})
    ev.add_assoc(go, 'c')
    ev.add_assoc('c_ok', 'after')
    ev.trigger_event(go, 1)
    assert ev.run() is True
    assert [(c[0], c[-1][1]) for c in calls.calls] == [
        ('c_k', '1.1'), ('c_k2', '1.1'), ('c_k', '1.2'), ('c_k2', '1.2'), ('c_k', '1.3'), ('c_k2', '1.3'),
        ('after', '1')]
    r = rows(tmp_path, ev.run_id)
    assert r[('c', '1')].status == 'success'
    assert r[('c_k', '1.2')].started >= r[('c_k2', '1.1')].ended
    assert r[('after', '1')].started >= r[('c', '1')].ended


@pytest.mark.parametrize('repeats, iterations', [([], 0), (None, 0), ([1, None, 2], 1), (lambda: iter(range(2)), 2)],
                         ids=['empty', 'none', 'none-item-ends', 'callable'])
def test_container_repeats_decide_the_number_of_iterations(tmp_path, repeats, iterations, make):
    ev = make()
    calls = Calls()
    go = ev.add_event('go')
    _container(ev, calls, 'c', repeats)
    ev.add_step('after', func=calls.record, args=('after',))
    ev.add_assoc(go, 'c')
    ev.add_assoc('c_ok', 'after')
    ev.trigger_event(go, 1)
    assert ev.run() is True
    assert calls.names().count('c_k2') == iterations
    assert calls.names()[-1] == 'after'
    assert rows(tmp_path, ev.run_id)[('c', '1')].status == 'success'


@pytest.mark.parametrize('handled', [True, False])
def test_unhandled_failure_inside_a_container_ends_it_as_failed_and_fires_its_failure(tmp_path, handled, make):
    ev = make()
    calls = Calls()
    go = ev.add_event('go')
    _container(ev, calls, 'c', [1, 2, 3], fail_at='1.2', handle_failure=handled)
    ev.add_step('on_ok', func=calls.record, args=('on_ok',))
    ev.add_step('on_bad', func=calls.record, args=('on_bad',))
    ev.add_assoc(go, 'c')
    ev.add_assoc('c_ok', 'on_ok')
    if handled:
        ev.add_assoc('c_bad', 'on_bad')
    ev.trigger_event(go, 1)
    assert ev.run() is handled
    assert calls.names() == ['c_k', 'c_k2'] + (['on_bad'] if handled else [])  # no iteration 1.3, no on_ok
    r = rows(tmp_path, ev.run_id)
    assert r[('c', '1')].status == 'failure'
    assert ('c_k', '1.3') not in r


def test_sibling_containers_running_at_once_each_finish_all_their_iterations(tmp_path, make):
    ev = make()
    calls = Calls()
    go = ev.add_event('go')
    both = threading.Barrier(2, timeout=WAIT)  # broken (c1_k or c2_k fails) unless the two run at once

    def meet(seq):
        if seq == '1.1':
            both.wait()

    _container(ev, calls, 'c1', [1, 2, 3], meet=meet)
    _container(ev, calls, 'c2', [1, 2], meet=meet)
    ev.add_event('both_ok', ('c1_ok', 'c2_ok'))
    ev.add_step('after', func=calls.record, args=('after',))
    ev.add_assoc(go, 'c1', 'c2')
    ev.add_assoc('both_ok', 'after')
    ev.trigger_event(go, 1)
    assert ev.run() is True
    done = sorted((c[0], c[-1][1]) for c in calls.calls if c[0] != 'after')
    assert done == sorted([(f'c1_{s}', f'1.{i}') for s in ('k', 'k2') for i in (1, 2, 3)]
                          + [(f'c2_{s}', f'1.{i}') for s in ('k', 'k2') for i in (1, 2)])
    assert calls.names()[-1] == 'after'
    r = rows(tmp_path, ev.run_id)
    assert r[('c1_k', '1.1')].started < r[('c2_k2', '1.2')].ended  # they did overlap
    assert r[('c2_k', '1.1')].started < r[('c1_k2', '1.3')].ended
