"""Behaviour of the Sequent facade through real runs (SPEC A2-A6, B1.3, B1.4, B2).

Thread tasks unless a test says otherwise: they are fast and can share Python objects with
the test.  Process tasks report through the store: a task's return value is kept as its repr.
"""
import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

import sequent as seq
from sequent.eventor.dburl import resolve_store
from sequent.eventor.store import Store

S, F, C = seq.STEP_SUCCESS, seq.STEP_FAILURE, seq.STEP_COMPLETE
WAIT = 5  # seconds a test waits for something that should happen at once; only reached on a bug


# ---------------------------------------------------------------------------- helpers

@pytest.fixture
def make_flow(flow_config):
    """``make_flow(construct='thread', store=':memory:', **config)``: a flow named t logging under tmp_path."""
    def make_flow(construct='thread', store=':memory:', **config):
        return seq.Sequent(name='t', config=flow_config(**{'task_construct': construct, **config}), store=store)
    return make_flow


def store_path(tmp_path):
    return str(tmp_path / 'runs.db')


def rows(path, run_id):
    """The stored tasks of a run, in creation order."""
    store = Store(resolve_store(path, {}, '')).open()
    try:
        return store.task_rows(run_id)
    finally:
        store.close()


def stored(path, run_id, processing_only=False):
    return [(r.step, r.sequence) for r in rows(path, run_id)
            if not processing_only or r.result is not None or r.error is not None]


class Log:
    """Thread-safe record of what tasks did: ``log.add(label)`` from a step, ``log.items`` after."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, label):
        with self.lock:
            self.items.append(label)

    def step(self, label, fail=False, sleep=0.0):
        """A step function that records ``label`` (with its sequence) and optionally fails."""
        def func(*args, **kwargs):
            if sleep:
                time.sleep(sleep)
            self.add((label, seq_of_task()))
            if fail:
                raise RuntimeError(f'{label} failed on purpose')
            return label
        return func

    def labels(self):
        return [label for label, _ in self.items]


def seq_of_task():
    return os.environ.get('SEQUENT_STEP_SEQUENCE')


def fail():
    raise RuntimeError('failed on purpose')


def seed_flow(flow, func):
    """The seed's simple flow (SPEC B2.7); ``func(progname)`` is every step's function."""
    s1 = flow.add_step('s1', repeats=[1, 2])
    s11 = s1.add_step('s11', repeats=[1, 2])
    s111 = s11.add_step('s111', func=func, kwargs={'progname': 'prog1'})
    s11.add_step('s112', func=func, kwargs={'progname': 'prog2'}, requires=((s111, S),))
    s1.add_step('s12', func=func, kwargs={'progname': 'prog3'}, requires=((s11, S),))
    flow.add_step('s2', func=func, kwargs={'progname': 'prog4'}, requires=((s1, S),))
    return flow


SEED_ORDER = [
    ('prog1', 's1_s11_s111', '1.1.1'), ('prog2', 's1_s11_s112', '1.1.1'),
    ('prog1', 's1_s11_s111', '1.1.2'), ('prog2', 's1_s11_s112', '1.1.2'),
    ('prog3', 's1_s12', '1.1'),
    ('prog1', 's1_s11_s111', '1.2.1'), ('prog2', 's1_s11_s112', '1.2.1'),
    ('prog1', 's1_s11_s111', '1.2.2'), ('prog2', 's1_s11_s112', '1.2.2'),
    ('prog3', 's1_s12', '1.2'),
    ('prog4', 's2', '1'),
]


# ---------------------------------------------------------------------------- the seed flow

def test_seed_flow_runs_in_the_seed_order_and_returns_true(make_flow):
    log = Log()
    flow = make_flow()

    def prog(progname):
        log.add((progname, os.environ['SEQUENT_STEP_NAME'], os.environ['SEQUENT_STEP_SEQUENCE']))

    seed_flow(flow, prog)
    assert flow.run() is True
    assert log.items == SEED_ORDER


def test_seed_flow_store_records_every_task_including_containers_in_order(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = seed_flow(make_flow(store=path), lambda progname: progname)
    assert flow.run() is True
    recorded = rows(path, flow.run_id)
    assert [(r.step, r.sequence) for r in recorded] == [
        ('s1', '1'), ('s1_s11', '1.1'),
        ('s1_s11_s111', '1.1.1'), ('s1_s11_s112', '1.1.1'), ('s1_s11_s111', '1.1.2'), ('s1_s11_s112', '1.1.2'),
        ('s1_s12', '1.1'), ('s1_s11', '1.2'),
        ('s1_s11_s111', '1.2.1'), ('s1_s11_s112', '1.2.1'), ('s1_s11_s111', '1.2.2'), ('s1_s11_s112', '1.2.2'),
        ('s1_s12', '1.2'), ('s2', '1')]
    assert {r.status for r in recorded} == {'success'}
    assert [r.result for r in recorded if r.step == 's2'] == ["'prog4'"]


def test_seed_flow_in_process_mode_runs_tasks_one_after_the_other_in_seed_order(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = seed_flow(make_flow(construct='process', store=path), lambda progname: progname)
    assert flow.run() is True
    tasks = [r for r in rows(path, flow.run_id) if r.result is not None]
    tasks.sort(key=lambda r: r.started)
    assert [(r.result.strip("'"), r.step, r.sequence) for r in tasks] == SEED_ORDER
    assert all(a.ended <= b.started for a, b in zip(tasks, tasks[1:]))
    assert os.getpid() not in {r.pid for r in tasks}  # they ran in processes of their own


# ---------------------------------------------------------------------------- requires

def test_or_runs_when_its_left_operand_never_fires(make_flow):
    log = Log()
    flow = make_flow()
    a = flow.add_step('a', func=log.step('a'))
    b = flow.add_step('b', func=log.step('b'))
    flow.add_step('c', func=log.step('c'), requires=seq.or_((a, F), (b, S)))
    assert flow.run() is True
    assert log.labels()[-1] == 'c' and sorted(log.labels()) == ['a', 'b', 'c']


def test_requiring_failure_of_a_step_that_succeeds_never_runs_and_the_run_succeeds(make_flow):
    log = Log()
    flow = make_flow()
    a = flow.add_step('a', func=log.step('a'))
    flow.add_step('b', func=log.step('b'), requires=((a, F),))
    assert flow.run() is True
    assert log.labels() == ['a']


def test_complete_after_a_failure_runs_the_dependent_and_the_run_succeeds(make_flow):
    log = Log()
    flow = make_flow()
    a = flow.add_step('a', func=log.step('a', fail=True))
    flow.add_step('b', func=log.step('b'), requires=((a, C),))
    assert flow.run() is True
    assert log.labels() == ['a', 'b']


def test_complete_after_a_success_runs_the_dependent(make_flow):
    log = Log()
    flow = make_flow()
    a = flow.add_step('a', func=log.step('a'))
    flow.add_step('b', func=log.step('b'), requires=((a, C),))
    assert flow.run() is True
    assert log.labels() == ['a', 'b']


def test_failure_handled_by_a_failure_requirement_gives_true(make_flow):
    log = Log()
    flow = make_flow()
    a = flow.add_step('a', func=log.step('a', fail=True))
    flow.add_step('on_fail', func=log.step('on_fail'), requires=((a, F),))
    flow.add_step('on_ok', func=log.step('on_ok'), requires=((a, S),))
    assert flow.run() is True
    assert log.labels() == ['a', 'on_fail']


def test_add_event_group_starts_the_step_when_all_its_requires_hold(make_flow):
    log = Log()
    flow = make_flow()
    s1 = flow.add_step('s1', func=log.step('s1', fail=True))
    s2 = flow.add_step('s2', func=log.step('s2'))
    e1 = flow.add_event(((s1, C), (s2, C)))
    flow.add_step('s3', func=log.step('s3'), requires=(e1,))
    assert flow.run() is True
    assert log.labels()[-1] == 's3' and sorted(log.labels()) == ['s1', 's2', 's3']


def test_active_requirement_starts_the_dependent_while_the_step_runs(make_flow):
    b_started = threading.Event()
    flow = make_flow()
    a = flow.add_step('a', func=lambda: b_started.wait(WAIT) or fail())
    flow.add_step('b', func=b_started.set, requires=((a, seq.STEP_ACTIVE),))
    assert flow.run() is True
    assert b_started.is_set()


# ---------------------------------------------------------------------------- failures at the root

def _root_failure_flow(make_flow, log, **config):
    """a fails while b runs; c waits for b.  Returns the flow."""
    b_running = threading.Event()
    flow = make_flow(**config)

    def a():
        b_running.wait(WAIT)
        log.add(('a', None))
        raise RuntimeError('a failed on purpose')

    def b():
        b_running.set()
        time.sleep(0.3)
        log.add(('b', None))

    return flow, flow.add_step('a', func=a), flow.add_step('b', func=b)


def test_unhandled_root_failure_returns_false_lets_running_finish_and_starts_nothing_new(make_flow):
    log = Log()
    flow, _, b = _root_failure_flow(make_flow, log)
    flow.add_step('c', func=log.step('c'), requires=((b, S),))
    assert flow.run() is False
    assert log.labels() == ['a', 'b']


def test_unhandled_root_failure_without_stop_on_exception_still_runs_dependents_and_returns_false(make_flow):
    log = Log()
    flow, _, b = _root_failure_flow(make_flow, log, stop_on_exception=False)
    flow.add_step('c', func=log.step('c'), requires=((b, S),))
    assert flow.run() is False
    assert log.labels() == ['a', 'b', 'c']


def test_step_stop_on_exception_false_overrides_the_flow_default(make_flow):
    log = Log()
    b_running = threading.Event()
    flow = make_flow()  # stop_on_exception defaults to True
    flow.add_step('a', func=lambda: b_running.wait(WAIT) and fail(), config={'stop_on_exception': False})
    b = flow.add_step('b', func=lambda: b_running.set() or time.sleep(0.3) or log.add(('b', None)))
    flow.add_step('c', func=log.step('c'), requires=((b, S),))
    assert flow.run() is False
    assert log.labels() == ['b', 'c']


def test_step_stop_on_exception_true_overrides_a_flow_false(make_flow):
    log = Log()
    b_running = threading.Event()
    flow = make_flow(stop_on_exception=False)
    flow.add_step('a', func=lambda: b_running.wait(WAIT) and fail(), config={'stop_on_exception': True})
    b = flow.add_step('b', func=lambda: b_running.set() or time.sleep(0.3) or log.add(('b', None)))
    flow.add_step('c', func=log.step('c'), requires=((b, S),))
    assert flow.run() is False
    assert log.labels() == ['b']


def test_unhandled_failure_in_process_mode_returns_false(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = make_flow(construct='process', store=path)
    a = flow.add_step('a', func=fail)
    flow.add_step('b', requires=((a, S),))
    assert flow.run() is False
    assert [(r.step, r.status) for r in rows(path, flow.run_id)] == [('a', 'failure')]
    assert 'failed on purpose' in rows(path, flow.run_id)[0].error


def test_complete_after_a_failure_in_process_mode_returns_true(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = make_flow(construct='process', store=path)
    a = flow.add_step('a', func=fail)
    flow.add_step('b', func=lambda: 'b ran', requires=((a, C),))
    assert flow.run() is True
    assert [(r.step, r.status, r.result) for r in rows(path, flow.run_id)] == [
        ('a', 'failure', None), ('b', 'success', "'b ran'")]


def test_root_failure_stops_a_container_after_its_current_iteration(make_flow):
    log = Log()
    box_running = threading.Event()
    flow = make_flow()
    box = flow.add_step('box', repeats=[1, 2, 3])
    box.add_step('x', func=lambda: box_running.set() or time.sleep(0.3) or log.add(('x', seq_of_task())))
    flow.add_step('a', func=lambda: box_running.wait(WAIT) and fail())
    assert flow.run() is False
    assert log.items == [('x', '1.1')]


def test_root_failure_cancels_a_pending_delay(make_flow):
    log = Log()
    flow = make_flow()
    flow.add_step('a', func=fail)
    flow.add_step('b', func=log.step('b'), delay=0.3)
    assert flow.run() is False
    assert log.items == []


def test_pending_delay_still_runs_after_a_failure_without_stop_on_exception(make_flow):
    log = Log()
    flow = make_flow(stop_on_exception=False)
    flow.add_step('a', func=fail)
    flow.add_step('b', func=log.step('b'), delay=0.3)
    assert flow.run() is False
    assert log.labels() == ['b']


def test_requiring_active_does_not_handle_a_failure(make_flow):
    log = Log()
    flow = make_flow()
    a = flow.add_step('a', func=lambda: time.sleep(0.05) or fail())
    flow.add_step('b', func=log.step('b'), requires=((a, seq.STEP_ACTIVE),))
    assert flow.run() is False
    assert log.labels() == ['b']


def test_or_with_both_operands_firing_runs_the_dependent_once(make_flow):
    log = Log()
    flow = make_flow()
    a, b = flow.add_step('a'), flow.add_step('b')
    flow.add_step('c', func=log.step('c'), requires=seq.or_((a, S), (b, S)))
    assert flow.run() is True
    assert log.items == [('c', '1')]


def test_run_id_is_set_after_a_failed_run(make_flow):
    flow = make_flow()
    flow.add_step('a', func=fail)
    assert flow.run() is False
    assert flow.run_id


# ---------------------------------------------------------------------------- failures in containers

def _failing_container(flow, log, **box_kwargs):
    """Container ``box`` (3 iterations): x fails while y runs; z waits for y."""
    y_running = threading.Event()
    box = flow.add_step('box', repeats=[1, 2, 3], **box_kwargs)

    def x():
        y_running.wait(WAIT)
        log.add(('x', seq_of_task()))
        raise RuntimeError('x failed on purpose')

    def y():
        y_running.set()
        time.sleep(0.3)
        log.add(('y', seq_of_task()))

    box.add_step('x', func=x)
    y_step = box.add_step('y', func=y)
    box.add_step('z', func=log.step('z'), requires=((y_step, S),))
    return box


def test_unhandled_failure_in_a_container_ends_it_after_the_iteration_and_a_sibling_handles_it(make_flow):
    log = Log()
    flow = make_flow()
    box = _failing_container(flow, log)
    flow.add_step('handler', func=log.step('handler'), requires=((box, F),))
    flow.add_step('on_ok', func=log.step('on_ok'), requires=((box, S),))
    assert flow.run() is True
    assert log.items == [('x', '1.1'), ('y', '1.1'), ('handler', '1')]


def test_container_failure_without_stop_on_exception_finishes_the_iteration_but_starts_no_next(make_flow):
    log = Log()
    flow = make_flow(stop_on_exception=False)
    box = _failing_container(flow, log)
    flow.add_step('handler', func=log.step('handler'), requires=((box, F),))
    assert flow.run() is True
    assert log.items == [('x', '1.1'), ('y', '1.1'), ('z', '1.1'), ('handler', '1')]


def test_unhandled_container_failure_is_recorded_as_the_container_failing(tmp_path, make_flow):
    log = Log()
    path = store_path(tmp_path)
    flow = make_flow(store=path)
    _failing_container(flow, log)
    assert flow.run() is False
    status = {(r.step, r.sequence): r.status for r in rows(path, flow.run_id)}
    assert status == {('box', '1'): 'failure', ('box_x', '1.1'): 'failure', ('box_y', '1.1'): 'success'}


def test_step_stop_on_exception_false_inside_a_container_finishes_the_iteration_only(make_flow):
    log = Log()
    flow = make_flow()
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x', func=fail, config={'stop_on_exception': False})
    y = box.add_step('y', func=lambda: time.sleep(0.2))
    box.add_step('z', func=log.step('z'), requires=((y, S),))
    assert flow.run() is False
    assert log.items == [('z', '1.1')]


def test_complete_on_a_failing_container_runs_the_dependent(make_flow):
    log = Log()
    flow = make_flow()
    box = flow.add_step('box')
    box.add_step('x', func=fail)
    flow.add_step('h', func=log.step('h'), requires=((box, C),))
    assert flow.run() is True
    assert log.items == [('h', '1')]


def test_repeats_callable_raising_fails_the_container(make_flow):
    log = Log()
    flow = make_flow()
    box = flow.add_step('box', repeats=lambda: 1 / 0)
    box.add_step('x', func=log.step('x'))
    flow.add_step('h', func=log.step('h'), requires=((box, F),))
    assert flow.run() is True
    assert log.items == [('h', '1')]


def test_failure_handled_inside_a_container_lets_it_run_all_iterations(make_flow):
    log = Log()
    flow = make_flow()
    box = flow.add_step('box', repeats=[1, 2])
    x = box.add_step('x', func=log.step('x', fail=True))
    box.add_step('h', func=log.step('h'), requires=((x, F),))
    flow.add_step('after', func=log.step('after'), requires=((box, S),))
    assert flow.run() is True
    assert log.items == [('x', '1.1'), ('h', '1.1'), ('x', '1.2'), ('h', '1.2'), ('after', '1')]


def test_nested_failure_propagates_two_levels_to_the_root_and_returns_false(make_flow):
    log = Log()
    flow = make_flow()
    outer = flow.add_step('outer', repeats=[1, 2])
    inner = outer.add_step('inner', repeats=[1, 2])
    inner.add_step('x', func=log.step('x', fail=True))
    outer.add_step('after_inner', func=log.step('after_inner'), requires=((inner, S),))
    flow.add_step('after_outer', func=log.step('after_outer'), requires=((outer, S),))
    assert flow.run() is False
    assert log.items == [('x', '1.1.1')]


def test_inner_container_failure_handled_by_its_sibling_keeps_the_outer_container_going(make_flow):
    log = Log()
    flow = make_flow()
    outer = flow.add_step('outer', repeats=[1, 2])
    inner = outer.add_step('inner', repeats=[1, 2])
    inner.add_step('x', func=log.step('x', fail=True))
    outer.add_step('h', func=log.step('h'), requires=((inner, F),))
    flow.add_step('after', func=log.step('after'), requires=((outer, S),))
    assert flow.run() is True
    assert log.items == [('x', '1.1.1'), ('h', '1.1'), ('x', '1.2.1'), ('h', '1.2'), ('after', '1')]


# ---------------------------------------------------------------------------- iterations

def test_sibling_containers_running_concurrently_each_complete_all_their_iterations(tmp_path, make_flow):
    log = Log()
    path = store_path(tmp_path)
    flow = make_flow(store=path)
    both = threading.Barrier(2, timeout=WAIT)  # broken (a step fails) unless a_first and b_first run at once

    def first_of(name):
        record = log.step(name)

        def first():
            if seq_of_task() == '1.1':
                both.wait()
            return record()
        return first

    for name in ('a', 'b'):
        box = flow.add_step(name, repeats=range(3))
        first = box.add_step('first', func=first_of(name))
        box.add_step('second', func=log.step(name), requires=((first, S),))
    assert flow.run() is True
    recorded = rows(path, flow.run_id)
    for name in ('a', 'b'):
        assert sorted(r.sequence for r in recorded if r.step == f'{name}_second') == ['1.1', '1.2', '1.3']
    a_tasks = [r for r in recorded if r.step.startswith('a_')]
    b_tasks = [r for r in recorded if r.step.startswith('b_')]
    assert min(r.started for r in b_tasks) < max(r.ended for r in a_tasks)  # they did overlap
    assert min(r.started for r in a_tasks) < max(r.ended for r in b_tasks)


@pytest.mark.parametrize('repeats', [[], None, range(0)], ids=['empty-list', 'None', 'range0'])
def test_container_with_zero_iterations_succeeds_at_once(repeats, make_flow):
    log = Log()
    flow = make_flow()
    box = flow.add_step('box', repeats=repeats)
    box.add_step('x', func=log.step('x'))
    flow.add_step('after', func=log.step('after'), requires=((box, S),))
    assert flow.run() is True
    assert log.items == [('after', '1')]


@pytest.mark.parametrize('repeats, expected', [
    ([1, 2, None, 4], ['1.1', '1.2']),
    ([None, 1], []),
    (range(3), ['1.1', '1.2', '1.3']),
    ('ab', ['1.1', '1.2']),
], ids=['None-third', 'None-first', 'range', 'string'])
def test_repeats_items_set_the_iterations_and_a_none_item_ends_them(repeats, expected, make_flow):
    log = Log()
    flow = make_flow()
    box = flow.add_step('box', repeats=repeats)
    box.add_step('x', func=log.step('x'))
    assert flow.run() is True
    assert [s for _, s in log.items] == expected


def test_callable_repeats_is_called_again_on_each_run(make_flow):
    log = Log()
    calls = []

    def repeats():
        calls.append(1)
        return iter(range(2))

    flow = make_flow()
    box = flow.add_step('box', repeats=repeats)
    box.add_step('x', func=log.step('x'))
    assert flow.run() is True
    assert flow.run() is True
    assert len(calls) == 2
    assert [s for _, s in log.items] == ['1.1', '1.2', '1.1', '1.2']


def test_list_repeats_gives_the_same_iterations_on_a_second_run(make_flow):
    log = Log()
    flow = make_flow()
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x', func=log.step('x'))
    assert flow.run() is True and flow.run() is True
    assert [s for _, s in log.items] == ['1.1', '1.2', '1.1', '1.2']


# ---------------------------------------------------------------------------- concurrency limits

def test_independent_steps_run_in_parallel_without_a_limit(make_flow):
    barrier = threading.Barrier(4, timeout=WAIT)
    flow = make_flow()
    for i in range(4):
        flow.add_step(f's{i}', func=barrier.wait)
    assert flow.run() is True  # a broken barrier fails a step, and so the run


# A flow whose run never ends would hang the whole test session (and leave a stuck coordinator
# behind), so the flow-level limit is checked in a child interpreter with a timeout.
# Each task waits until ``expect`` (argv[4]) tasks run at once, or every task not ended yet is here (the
# last ones); the wait is bounded (argv[5] s for them all), so a run that never gets there still ends.
_PEAK_SCRIPT = """
import sys, threading, time
import sequent as seq
TASKS, expect, rendezvous = 6, int(sys.argv[4]), float(sys.argv[5])
changed, state, deadline = threading.Condition(), {'now': 0, 'peak': 0, 'done': 0}, []
def task():
    with changed:
        state['now'] += 1
        state['peak'] = max(state['peak'], state['now'])
        changed.notify_all()
        if not deadline:
            deadline.append(time.monotonic() + rendezvous)
        changed.wait_for(lambda: state['now'] >= expect or state['now'] + state['done'] == TASKS,
                         timeout=max(0.0, deadline[0] - time.monotonic()))
    time.sleep(0.2)  # then stay a while: a task started beyond the limit would be seen here
    with changed:
        state['now'] -= 1
        state['done'] += 1
        changed.notify_all()
flow = seq.Sequent(name='t', store=':memory:', config={
    'task_construct': 'thread', 'max_concurrent': int(sys.argv[2]),
    'LOGGING': {'logdir': sys.argv[1], 'console': False}})
box = flow.add_step('box')
for i in range(3):
    flow.add_step(f'r{i}', func=task, config={'max_concurrent': int(sys.argv[3])})
    box.add_step(f'c{i}', func=task, config={'max_concurrent': int(sys.argv[3])})
print(flow.run(), state['peak'])
"""


def _peak_in_child(tmp_path, flow_limit, step_limit, expect):
    """Run six tasks (three at the root, three in a container) under the limits, each waiting until
    ``expect`` of them run at once; returns stdout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(seq.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    try:
        done = subprocess.run([sys.executable, '-c', _PEAK_SCRIPT, str(tmp_path / 'logs'), str(flow_limit),
                               str(step_limit), str(expect), '2'], env=env, capture_output=True, text=True,
                              timeout=4)
    except subprocess.TimeoutExpired:
        pytest.fail(f'the run with flow max_concurrent={flow_limit} never ended')
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_flow_max_concurrent_limits_tasks_running_at_once(tmp_path):
    assert _peak_in_child(tmp_path, 2, -1, expect=2) == ['True', '2']


def test_flow_max_concurrent_holds_even_when_a_step_config_allows_more(tmp_path):
    assert _peak_in_child(tmp_path, 1, 5, expect=1) == ['True', '1']


def test_flow_max_concurrent_not_reached_runs_all_at_once(tmp_path):
    assert _peak_in_child(tmp_path, 6, -1, expect=6) == ['True', '6']


def test_step_max_concurrent_does_not_limit_other_steps(make_flow):
    barrier = threading.Barrier(3, timeout=WAIT)
    flow = make_flow()
    for i in range(3):
        flow.add_step(f's{i}', func=barrier.wait, config={'max_concurrent': 1})
    assert flow.run() is True


# ---------------------------------------------------------------------------- delay

def test_delay_starts_the_dependent_at_least_that_long_after_its_requirement(make_flow):
    times = {}
    flow = make_flow()
    a = flow.add_step('a', func=lambda: times.setdefault('a_end', time.time()))
    flow.add_step('b', func=lambda: times.setdefault('b_start', time.time()), requires=((a, S),), delay=0.3)
    assert flow.run() is True
    assert 0.29 <= times['b_start'] - times['a_end'] < 3


def test_delay_of_a_starter_inside_a_container_applies_in_every_iteration(make_flow):
    starts = []
    flow = make_flow()
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x', func=lambda: starts.append(time.time()), delay=0.2)
    t0 = time.time()
    assert flow.run() is True
    assert len(starts) == 2
    assert starts[0] - t0 >= 0.19 and starts[1] - starts[0] >= 0.19


def test_delay_of_a_container_delays_its_first_iteration(make_flow):
    starts = []
    flow = make_flow()
    box = flow.add_step('box', delay=0.2)
    box.add_step('x', func=lambda: starts.append(time.time()))
    t0 = time.time()
    assert flow.run() is True
    assert len(starts) == 1 and starts[0] - t0 >= 0.19


def test_flow_sequence_arg_name_passes_the_sequence_to_every_step(make_flow):
    got = []
    flow = make_flow(sequence_arg_name='sq')
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x', func=lambda sq: got.append(sq))
    flow.add_step('y', func=lambda sq: got.append(sq), requires=((box, S),))
    assert flow.run() is True
    assert got == ['1.1', '1.2', '1']


# ---------------------------------------------------------------------------- who am I

def _identity(flow):
    return flow.get_step_name(), flow.get_step_sequence()


def test_get_step_name_and_sequence_in_thread_tasks_with_the_flow_in_kwargs(make_flow):
    seen = []
    flow = make_flow()
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x', func=lambda flow: seen.append(_identity(flow)), kwargs={'flow': flow})
    assert flow.run() is True
    assert seen == [('box_x', '1.1'), ('box_x', '1.2')]


def test_get_step_name_and_sequence_in_process_tasks_with_the_flow_in_kwargs(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = make_flow(construct='process', store=path)
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x', func=_identity, kwargs={'flow': flow})
    assert flow.run() is True
    assert [r.result for r in rows(path, flow.run_id) if r.step == 'box_x'] == [
        "('box_x', '1.1')", "('box_x', '1.2')"]


def test_get_step_name_outside_a_step_raises(monkeypatch, make_flow):
    monkeypatch.delenv('SEQUENT_STEP_NAME', raising=False)
    monkeypatch.delenv('SEQUENT_STEP_SEQUENCE', raising=False)
    flow = make_flow()
    flow.add_step('a')
    with pytest.raises(seq.SequentError):
        flow.get_step_name()
    with pytest.raises(seq.SequentError):
        flow.get_step_sequence()


ENV_NAMES = ('SEQUENT_STEP_NAME', 'SEQUENT_STEP_SEQUENCE', 'SEQUENT_STEP_RECOVERY', 'SEQUENT_LOGGER_NAME')


def _env():
    return {name: os.environ.get(name) for name in ENV_NAMES} | {'getenv': os.getenv('SEQUENT_STEP_NAME')}


def test_env_vars_are_per_thread_for_concurrent_thread_tasks(monkeypatch, make_flow):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    barrier = threading.Barrier(2, timeout=WAIT)
    seen = {}

    def look(me):
        barrier.wait()  # both tasks are running now
        seen[me] = _env()
        barrier.wait()  # and both have looked before either ends

    flow = make_flow()
    box = flow.add_step('box')
    box.add_step('x', func=look, args=('x',))
    flow.add_step('y', func=look, args=('y',))
    assert flow.run() is True
    for me, step, sequence in (('x', 'box_x', '1.1'), ('y', 'y', '1')):
        env = seen[me]
        assert (env['SEQUENT_STEP_NAME'], env['getenv'], env['SEQUENT_STEP_SEQUENCE'],
                env['SEQUENT_STEP_RECOVERY']) == (step, step, sequence, '0')
        assert env['SEQUENT_LOGGER_NAME'].endswith(f'.{step}_{sequence}')
        assert flow.run_id in env['SEQUENT_LOGGER_NAME']


def test_env_vars_of_thread_tasks_do_not_leak_into_the_caller(monkeypatch, make_flow):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    flow = make_flow()
    flow.add_step('a', func=_env)
    assert flow.run() is True
    assert not [name for name in ENV_NAMES if name in os.environ]
    assert type(os.environ) is os._Environ


def test_env_vars_are_set_in_process_tasks(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = make_flow(construct='process', store=path)
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x', func=lambda: tuple(os.environ.get(n) for n in ENV_NAMES))
    assert flow.run() is True
    results = [eval(r.result) for r in rows(path, flow.run_id) if r.step == 'box_x']
    assert [r[:3] for r in results] == [('box_x', '1.1', '0'), ('box_x', '1.2', '0')]
    assert results[0][3].endswith('.box_x_1.1') and flow.run_id in results[0][3]


# ---------------------------------------------------------------------------- arguments, run, run_id

def test_args_and_kwargs_are_passed_to_the_step_function(make_flow):
    got = []
    flow = make_flow()
    flow.add_step('a', func=lambda *a, **k: got.append((a, k)), args=(1, 'two'), kwargs={'k': [3]})
    assert flow.run() is True
    assert got == [((1, 'two'), {'k': [3]})]


def test_args_and_kwargs_are_passed_in_process_mode(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = make_flow(construct='process', store=path)
    flow.add_step('a', func=lambda *a, **k: (a, k), args=[1, 'two'], kwargs={'k': [3]})
    assert flow.run() is True
    assert rows(path, flow.run_id)[0].result == "((1, 'two'), {'k': [3]})"


def test_step_without_func_succeeds(make_flow):
    log = Log()
    flow = make_flow()
    a = flow.add_step('a')
    flow.add_step('b', func=log.step('b'), requires=((a, S),))
    assert flow.run() is True
    assert log.labels() == ['b']


def test_calling_the_flow_runs_it_like_run(make_flow):
    log = Log()
    flow = make_flow()
    flow.add_step('a', func=log.step('a'))
    assert flow() is True
    assert log.labels() == ['a']
    assert flow.run_id


def test_calling_a_failing_flow_returns_false(make_flow):
    flow = make_flow()
    flow.add_step('a', func=fail)
    assert flow() is False


def test_run_id_is_set_after_run(make_flow):
    flow = make_flow()
    flow.add_step('a')
    assert not flow.run_id
    flow.run()
    assert isinstance(flow.run_id, str) and flow.run_id


def test_two_runs_get_two_run_ids_and_both_runs_stay_in_the_store(tmp_path, make_flow):
    path = store_path(tmp_path)
    flow = make_flow(store=path)
    box = flow.add_step('box', repeats=[1, 2])
    box.add_step('x')
    assert flow.run() is True
    first = flow.run_id
    assert flow.run() is True
    second = flow.run_id
    assert first != second and first < second
    expected = [('box', '1'), ('box_x', '1.1'), ('box_x', '1.2')]
    assert stored(path, first) == expected
    assert stored(path, second) == expected
    engine = sa.create_engine(f'sqlite:///{path}')
    try:
        with engine.connect() as conn:
            ids = {row[0] for row in conn.execute(sa.text('SELECT DISTINCT run_id FROM sequent_tasks'))}
    finally:
        engine.dispose()
    assert ids == {first, second}


def test_run_without_steps_raises(make_flow):
    with pytest.raises(seq.SequentError):
        make_flow().run()


# ---------------------------------------------------------------------------- bad input

def _other_flow():
    other = seq.Sequent(name='other', store=':memory:')
    return other.add_step('o')


class _Pool:
    pass


BAD_STEPS = {
    # id: (what to pass to box.add_step('y', ...) given (flow, box, sibling x, nested step box2_z))
    'non-callable func': lambda f, b, x, z: dict(func='print'),
    'negative delay': lambda f, b, x, z: dict(delay=-1),
    'delay not a number': lambda f, b, x, z: dict(delay='1'),
    'repeats not iterable': lambda f, b, x, z: dict(repeats=3),
    'repeats an iterator': lambda f, b, x, z: dict(repeats=iter([1, 2])),
    'repeats a generator': lambda f, b, x, z: dict(repeats=(i for i in range(2))),
    'unknown task_construct': lambda f, b, x, z: dict(config={'task_construct': 'fork'}),
    'config not a mapping': lambda f, b, x, z: dict(config=['thread']),
    'recovery status a string': lambda f, b, x, z: dict(recovery={'success': seq.STEP_SKIP}),
    'recovery replay a string': lambda f, b, x, z: dict(recovery={S: 'skip'}),
    'recovery replay a status': lambda f, b, x, z: dict(recovery={S: S}),
    'recovery not a mapping': lambda f, b, x, z: dict(recovery=[S]),
    'duplicate hosts': lambda f, b, x, z: dict(hosts=['build-server.example.com', 'build-server.example.com']),
    'host not a str': lambda f, b, x, z: dict(hosts=[5]),
    'empty host': lambda f, b, x, z: dict(hosts=['']),
    'host with a control character': lambda f, b, x, z: dict(hosts=['h\n1']),
    'import_file without import_module': lambda f, b, x, z: dict(import_file='tasks.py'),
    'acquires': lambda f, b, x, z: dict(acquires=[_Pool()]),
    'releases': lambda f, b, x, z: dict(releases=[_Pool()]),
    'requires a bare step': lambda f, b, x, z: dict(requires=(x,)),
    'requires a bare step alone': lambda f, b, x, z: dict(requires=x),
    'requires an int status': lambda f, b, x, z: dict(requires=((x, 5),)),
    'requires a StepReplay status': lambda f, b, x, z: dict(requires=((x, seq.STEP_RERUN),)),
    'requires the allocate status': lambda f, b, x, z: dict(requires=((x, seq.StepStatus.allocate),)),
    'requires a status string': lambda f, b, x, z: dict(requires=((x, 'success'),)),
    'requires a step of another container': lambda f, b, x, z: dict(requires=((z, S),)),
    'requires the container itself': lambda f, b, x, z: dict(requires=((b, S),)),
    'requires a step of another flow': lambda f, b, x, z: dict(requires=((_other_flow(), S),)),
    'requires an event of another container': lambda f, b, x, z: dict(
        requires=(f.add_event(((f.children[0], S),)),)),
    'requires a non-step item': lambda f, b, x, z: dict(requires=(('x', S),)),
    'or_ with a bare step': lambda f, b, x, z: dict(requires=seq.or_((x, S), x)),
}


@pytest.mark.parametrize('bad', list(BAD_STEPS), ids=list(BAD_STEPS))
def test_bad_step_input_raises_sequent_error_naming_the_step(bad, make_flow):
    flow = make_flow()
    box = flow.add_step('box')
    x = box.add_step('x')
    z = flow.add_step('box2').add_step('z')
    with pytest.raises(seq.SequentError) as info:
        box.add_step('y', **BAD_STEPS[bad](flow, box, x, z))
    assert 'box_y' in str(info.value)


@pytest.mark.parametrize('bad', list(BAD_STEPS), ids=list(BAD_STEPS))
def test_rejected_step_leaves_the_tree_unchanged(bad, make_flow):
    flow = make_flow()
    box = flow.add_step('box')
    x = box.add_step('x')
    z = flow.add_step('box2').add_step('z')
    with pytest.raises(seq.SequentError):
        box.add_step('y', **BAD_STEPS[bad](flow, box, x, z))
    assert [c.name for c in box.children] == ['x']
    box.add_step('y', func=lambda: None, requires=((x, S),))  # the name is still free
    assert flow.run() is True


@pytest.mark.parametrize('name', ['a.b', 'a-b', 'a b', 'a$', 'x\n'])
def test_bad_step_name_raises_sequent_error_naming_it(name, make_flow):
    flow = make_flow()
    box = flow.add_step('box')
    with pytest.raises(seq.SequentError) as info:
        box.add_step(name)
    assert repr(name) in str(info.value) and 'box' in str(info.value)


@pytest.mark.parametrize('name', ['', None, 3])
def test_empty_or_non_string_step_name_raises_sequent_error(name, make_flow):
    with pytest.raises(seq.SequentError):
        make_flow().add_step(name)


def test_duplicate_root_step_name_raises_naming_it(make_flow):
    flow = make_flow()
    flow.add_step('a')
    with pytest.raises(seq.SequentError, match="'a'"):
        flow.add_step('a')


def test_duplicate_sibling_name_in_a_container_raises_naming_it_and_the_container(make_flow):
    flow = make_flow()
    box = flow.add_step('box')
    box.add_step('a')
    with pytest.raises(seq.SequentError) as info:
        box.add_step('a')
    assert "'a'" in str(info.value) and "'box'" in str(info.value)


def test_same_name_in_different_containers_is_fine(make_flow):
    flow = make_flow()
    flow.add_step('a')
    flow.add_step('b').add_step('a')
    flow.add_step('c').add_step('a')
    assert flow.run() is True


def test_flattened_path_collision_raises_when_the_inner_step_comes_second(make_flow):
    flow = make_flow()
    flow.add_step('a_b')
    a = flow.add_step('a')
    with pytest.raises(seq.SequentError, match='a_b'):
        a.add_step('b')


def test_flattened_path_collision_raises_when_the_root_step_comes_second(make_flow):
    flow = make_flow()
    flow.add_step('a').add_step('b')
    with pytest.raises(seq.SequentError, match='a_b'):
        flow.add_step('a_b')


def test_flattened_path_collision_two_levels_deep_raises(make_flow):
    flow = make_flow()
    outer = flow.add_step('outer')
    outer.add_step('a').add_step('b_c')
    a_b = outer.children[0].add_step('b')
    with pytest.raises(seq.SequentError, match='outer_a_b_c'):
        a_b.add_step('c')


def test_root_step_requiring_a_nested_step_raises_naming_both(make_flow):
    flow = make_flow()
    inner = flow.add_step('box').add_step('inner')
    with pytest.raises(seq.SequentError) as info:
        flow.add_step('late', requires=((inner, S),))
    assert 'late' in str(info.value) and 'box_inner' in str(info.value)


def test_nested_step_requiring_a_root_step_raises_naming_both(make_flow):
    flow = make_flow()
    a = flow.add_step('a')
    box = flow.add_step('box')
    with pytest.raises(seq.SequentError) as info:
        box.add_step('y', requires=((a, S),))
    assert 'box_y' in str(info.value) and "'a'" in str(info.value)


def test_event_requiring_a_step_of_another_container_raises(make_flow):
    flow = make_flow()
    inner = flow.add_step('box').add_step('inner')
    with pytest.raises(seq.SequentError, match='box_inner'):
        flow.add_event(((inner, S),))


def test_event_of_another_flow_in_requires_raises(make_flow):
    other = seq.Sequent(name='other', store=':memory:')
    event = other.add_event(((other.add_step('o'), S),))
    flow = make_flow()
    with pytest.raises(seq.SequentError, match="'y'"):
        flow.add_step('y', requires=(event,))


def test_unknown_task_construct_in_flow_config_raises(tmp_path):
    with pytest.raises(seq.SequentError, match='task_construct'):
        seq.Sequent(name='t', store=':memory:', config={'task_construct': 'fork'})
