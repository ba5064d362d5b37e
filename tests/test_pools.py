"""Resource pools (SPEC A8, B5): acquires/releases on steps and containers, through real runs.

Thread tasks unless a test says otherwise.  Step functions record their own start and end
(``time.time()`` to compare with the store, ``time.monotonic()`` to compare with each other);
what the coordinator granted is read back from the store table ``sequent_holdings``.

Every test runs under the SIGALRM guard of tests/conftest.py (``no_hang``), so a run that spins
instead of ending fails the test instead of hanging the suite; ``within`` bounds one run tighter.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import defaultdict

import pytest
from guard import alarm, restart
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sequent as seq
from sequent.eventor import Eventor
from sequent.eventor.dburl import resolve_store
from sequent.eventor.store import Store, holdings

S, F = seq.STEP_SUCCESS, seq.STEP_FAILURE
DEADLOCK_WITHIN = 8  # seconds a deadlocked run may take to end with its error
WAIT = 5  # seconds a task waits for another one (a rendezvous); only reached on a bug


# ---------------------------------------------------------------------------- helpers

class Hung(Exception):
    pass


def within(seconds):
    """Fail with Hung (instead of hanging) when the body takes longer than ``seconds``."""
    return alarm(seconds, "the run", Hung)


@pytest.fixture
def make_flow(tmp_path, flow_config):
    """``make_flow(construct='thread', name='t', store=db(tmp_path), config={}, **sequent_kwargs)``: a flow
    with a SQLite file store (so holdings can be read afterwards), logging errors only under tmp_path."""
    def make_flow(construct='thread', name='t', store=None, config=None, **kw):
        config = dict(config or {})
        logging = {'logging_level': 40, **config.pop('LOGGING', {})}
        cfg = flow_config(task_construct=construct, LOGGING=logging, **config)
        return seq.Sequent(name=name, store=db(tmp_path) if store is None else store, config=cfg, **kw)
    return make_flow


def db(tmp):
    return os.path.join(str(tmp), 'runs.db')


def pool(name='P', limit=1, cls=seq.Resource):
    return seq.ResourcePool(name, resource_cls=cls, policy={'resource_limit': limit})


def read_holdings(path, run_id, recovery=None):
    store = Store(resolve_store(path, {}, '')).open()
    try:
        q = sa.select(holdings).where(holdings.c.run_id == run_id)
        if recovery is not None:
            q = q.where(holdings.c.recovery == recovery)
        return [dict(r._mapping) for r in store.conn.execute(q)]
    finally:
        store.close()


def read_tasks(path, run_id, recovery=None):
    store = Store(resolve_store(path, {}, '')).open()
    try:
        return {(r.step, r.sequence): r for r in store.task_rows(run_id, recovery)}
    finally:
        store.close()


class Rec:
    """Thread-safe record of task executions: one dict per call of a step function."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def step(self, label, sleep=0.0, fail=False, hook=None):
        def func(*args, **kwargs):
            t0, m0 = time.time(), time.monotonic()
            if hook is not None:
                hook()
            if sleep:
                time.sleep(sleep)
            t1, m1 = time.time(), time.monotonic()
            with self.lock:
                self.items.append({'step': label, 'seq': os.environ.get('SEQUENT_STEP_SEQUENCE'),
                                   'start': t0, 'end': t1, 'mstart': m0, 'mend': m1})
            if fail:
                raise RuntimeError(f'{label} failed on purpose')
            return label
        return func

    def of(self, label):
        found = [i for i in self.items if i['step'] == label]
        assert found, f'{label} never ran'
        return found

    def one(self, label):
        found = self.of(label)
        assert len(found) == 1, found
        return found[0]


def peak(intervals):
    """Largest number of [start, end) intervals (start, end, weight) open at one instant."""
    events = []
    for start, end, weight in intervals:
        events.append((start, 1, weight))
        if end is not None:
            events.append((end, 0, -weight))
    events.sort()  # at equal instants an end comes before a start
    level = top = 0
    for _, _, delta in events:
        level += delta
        assert level >= 0
        top = max(top, level)
    return top


def pool_levels(rows):
    """Per pool: the most ever held at once according to sequent_holdings (partial releases count)."""
    by_pool = defaultdict(list)
    for r in rows:
        released = r['released_count'] or 0
        if r['released'] is None:
            by_pool[r['pool']].append((r['acquired'], None, r['count']))
        else:
            by_pool[r['pool']].append((r['acquired'], r['released'], released))
            if r['count'] > released:  # the rest stays taken for the rest of the run
                by_pool[r['pool']].append((r['acquired'], None, r['count'] - released))
    return {name: peak(intervals) for name, intervals in by_pool.items()}


def setting(event, func):
    """``func``, then ``event`` set: a task that another one waits for (``hook=lambda: event.wait(WAIT)``)."""
    def run(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            event.set()
    return run


def until_failed(path, step):
    """A hook: wait (at most WAIT s) until the store at ``path`` shows ``step`` failed in this task's run, that is
    until the coordinator has handled that failure."""
    def wait():
        run_id, deadline = os.environ['SEQUENT_RUN_ID'], time.monotonic() + WAIT
        while time.monotonic() < deadline:
            row = read_tasks(path, run_id).get((step, '1'))
            if row is not None and row.status == 'failure':
                return
            time.sleep(0.01)
    return wait


def disjoint(a, b):
    return a['mend'] <= b['mstart'] or b['mend'] <= a['mstart']


def run_expect_deadlock(flow):
    """run() must end (not spin) with a SequentError; returns its message."""
    t0 = time.monotonic()
    with within(DEADLOCK_WITHIN):
        with pytest.raises(seq.SequentError) as err:
            flow.run()
    assert time.monotonic() - t0 < DEADLOCK_WITHIN
    return str(err.value)


# ---------------------------------------------------------------------------- the pool object

def test_seed_spelling_builds_a_counting_pool():
    class R(seq.Resource):
        pass

    rp = seq.ResourcePool('RP1', resource_cls=R, policy={'resource_limit': 2})
    assert rp.load() is rp  # load() is accepted and changes nothing
    assert (rp.name, rp.limit, rp.resource_cls) == ('RP1', 2, R)
    assert seq.ResourcePool('RP2').limit == -1  # missing: unlimited
    assert seq.ResourcePool('RP3', policy={'resource_limit': -1}).limit == -1


@pytest.mark.parametrize('kwargs', [
    dict(name=''),
    dict(name='X', resource_cls=int),
    dict(name='X', resource_cls=seq.Resource()),
    dict(name='X', policy={'resource_limit': '2'}),
    dict(name='X', policy={'resource_limit': 2.0}),
    dict(name='X', policy={'resource_limit': True}),
    dict(name='X', policy={'resource_limt': 2}),
])
def test_bad_pool_definitions_raise(kwargs):
    with pytest.raises(seq.SequentError):
        seq.ResourcePool(**kwargs)


# ---------------------------------------------------------------------------- explicit behaviour

def test_two_steps_on_a_limit_one_pool_run_one_after_the_other(tmp_path, make_flow):
    rec = Rec()
    p = pool('P', 1)
    flow = make_flow()
    flow.add_step('a', func=rec.step('a', 0.1), acquires=[(p, 1)])
    flow.add_step('b', func=rec.step('b', 0.1), acquires=[(p, 1)])
    assert flow.run() is True
    assert disjoint(rec.one('a'), rec.one('b'))
    rows = read_holdings(db(tmp_path), flow.run_id)
    assert sorted((r['step'], r['pool'], r['count'], r['released_count']) for r in rows) == [
        ('a', 'P', 1, 1), ('b', 'P', 1, 1)]
    assert pool_levels(rows) == {'P': 1}


def test_seed_load_and_container_acquiring_two_works(tmp_path, make_flow):
    """The seed's case: .load() plus acquires=[(rp1, 2)] on a repeated container (upstream hung)."""
    class Resources1(seq.Resource):
        pass

    class Resources2(seq.Resource):
        pass

    rp1 = seq.ResourcePool('RP1', resource_cls=Resources1, policy={'resource_limit': 2, }).load()
    rp2 = seq.ResourcePool('RP2', resource_cls=Resources2, policy={'resource_limit': 2, }).load()
    rec = Rec()
    flow = make_flow(config={'sleep_between_loops': 0.05})
    s1 = flow.add_step('s1', repeats=[1, 2], acquires=[(rp1, 2), ])
    s11 = s1.add_step('s11', func=rec.step('s11', 0.01), acquires=[(rp2, 1)])
    s1.add_step('s12', func=rec.step('s12', 0.01), requires=((s11, S),), acquires=[(rp2, 2)])
    flow.add_step('s2', func=rec.step('s2', 0.01), requires=((s1, S),), acquires=[(rp1, 1), (rp2, 1)])
    assert flow.run() is True
    assert sorted((i['step'], i['seq']) for i in rec.items) == [
        ('s11', '1.1'), ('s11', '1.2'), ('s12', '1.1'), ('s12', '1.2'), ('s2', '1')]
    rows = read_holdings(db(tmp_path), flow.run_id)
    assert sorted((r['step'], r['sequence'], r['pool'], r['count']) for r in rows) == [
        ('s1', '1', 'RP1', 2), ('s1_s11', '1.1', 'RP2', 1), ('s1_s11', '1.2', 'RP2', 1),
        ('s1_s12', '1.1', 'RP2', 2), ('s1_s12', '1.2', 'RP2', 2), ('s2', '1', 'RP1', 1), ('s2', '1', 'RP2', 1)]
    assert all(r['released_count'] == r['count'] for r in rows)
    assert pool_levels(rows) == {'RP1': 2, 'RP2': 2}


def test_container_holds_its_pool_from_start_to_end(tmp_path, make_flow):
    """A sibling needing the pool waits until the container's last child ended."""
    rec = Rec()
    p = pool('P', 1)
    flow = make_flow()
    c = flow.add_step('c', repeats=[1, 2], acquires=[(p, 1)])
    x = c.add_step('x', func=rec.step('x', 0.05))
    c.add_step('y', func=rec.step('y', 0.05), requires=((x, S),))
    flow.add_step('z', delay=0.02, func=rec.step('z', 0.01), acquires=[(p, 1)])
    assert flow.run() is True
    children = rec.of('x') + rec.of('y')
    assert len(children) == 4
    z = rec.one('z')
    assert z['mstart'] >= max(i['mend'] for i in children)
    rows = {r['step']: r for r in read_holdings(db(tmp_path), flow.run_id)}
    assert rows['c']['acquired'] <= min(i['start'] for i in children)
    assert rows['c']['released'] >= max(i['end'] for i in children)
    assert rows['z']['acquired'] >= rows['c']['released']


def test_container_holding_part_lets_its_children_use_the_rest(tmp_path, make_flow):
    rec = Rec()
    p = pool('P', 3)
    flow = make_flow()
    c = flow.add_step('c', acquires=[(p, 1)])
    c.add_step('x', func=rec.step('x', 0.01), acquires=[(p, 2)])
    assert flow.run() is True
    assert pool_levels(read_holdings(db(tmp_path), flow.run_id)) == {'P': 3}


def test_waiting_tasks_are_recorded_as_allocate(tmp_path, make_flow):
    path = db(tmp_path)
    seen = {}

    def look():  # runs while holding the pool: the other task waits for it
        store = Store(resolve_store(path, {}, '')).open()
        try:
            seen.update({(r.step, r.sequence): r.status for r in store.task_rows(os.environ['SEQUENT_RUN_ID'])})
        finally:
            store.close()

    rec = Rec()
    p = pool('P', 1)
    flow = make_flow()
    flow.add_step('a', func=rec.step('a', 0.02, hook=look), acquires=[(p, 1)])
    flow.add_step('b', func=rec.step('b'), acquires=[(p, 1)])
    assert flow.run() is True
    assert seen == {('a', '1'): 'active', ('b', '1'): 'allocate'}
    assert {k: r.status for k, r in read_tasks(path, flow.run_id).items()} == {('a', '1'): 'success',
                                                                               ('b', '1'): 'success'}


def test_a_task_takes_all_its_pools_at_once_or_none(tmp_path, make_flow):
    """x needs A and B; it takes B only together with A, once a gave A back (no hold and wait)."""
    rec = Rec()
    pa, pb = pool('A', 1), pool('B', 1)
    flow = make_flow()
    free_ended = threading.Event()  # a holds A until then: free ends first unless held back
    flow.add_step('a', func=rec.step('a', 0.3, hook=lambda: free_ended.wait(WAIT)), acquires=[(pa, 1)])
    flow.add_step('x', func=rec.step('x', 0.01), acquires=[(pa, 1), (pb, 1)])
    flow.add_step('b', func=rec.step('b', 0.05), acquires=[(pb, 1)])  # arrives after x: FIFO on B
    flow.add_step('free', func=setting(free_ended, rec.step('free', 0.01)))
    assert flow.run() is True
    rows = read_holdings(db(tmp_path), flow.run_id)
    x = [r for r in rows if r['step'] == 'x']
    assert len(x) == 2 and x[0]['acquired'] == x[1]['acquired']  # both in one grant
    a_row = next(r for r in rows if r['step'] == 'a')
    assert x[0]['acquired'] >= a_row['released']
    # x never held B while waiting for A; b came after x so it waited behind x on B
    assert rec.one('x')['mstart'] >= rec.one('a')['mend']
    assert rec.one('b')['mstart'] >= rec.one('x')['mend']
    assert rec.one('free')['mend'] <= rec.one('a')['mend']  # a step without pools is not held back


def test_releases_none_gives_back_what_was_acquired(tmp_path, make_flow):
    rec = Rec()
    p = pool('P', 2)
    flow = make_flow()
    a = flow.add_step('a', func=rec.step('a'), acquires=[(p, 2)], releases=None)
    flow.add_step('b', func=rec.step('b'), acquires=[(p, 2)], requires=((a, S),))
    assert flow.run() is True
    rows = {r['step']: r for r in read_holdings(db(tmp_path), flow.run_id)}
    assert rows['a']['released_count'] == 2 and rows['a']['released'] is not None


def test_partial_release_keeps_the_rest_taken(tmp_path, make_flow):
    rec = Rec()
    p = pool('P', 2)
    flow = make_flow()
    a = flow.add_step('a', func=rec.step('a'), acquires=[(p, 2)], releases=[(p, 1)])
    flow.add_step('b', func=rec.step('b'), acquires=[(p, 1)], requires=((a, S),))
    assert flow.run() is True
    rows = {r['step']: r for r in read_holdings(db(tmp_path), flow.run_id)}
    assert (rows['a']['count'], rows['a']['released_count']) == (2, 1)
    assert rows['a']['released'] is not None
    assert (rows['b']['count'], rows['b']['released_count']) == (1, 1)
    assert pool_levels(list(rows.values())) == {'P': 2}


def test_partial_release_then_a_request_for_all_is_a_deadlock(make_flow):
    rec = Rec()
    p = pool('PART', 2)
    flow = make_flow()
    a = flow.add_step('a', func=rec.step('a'), acquires=[(p, 2)], releases=[(p, 1)])
    flow.add_step('b', func=rec.step('b'), acquires=[(p, 2)], requires=((a, S),))
    message = run_expect_deadlock(flow)
    assert 'PART' in message and 'b' in message
    assert [i['step'] for i in rec.items] == ['a']


def test_releases_empty_keeps_the_pool_taken_and_a_later_request_is_a_deadlock(tmp_path, make_flow):
    rec = Rec()
    p = pool('KEPT', 1)
    flow = make_flow()
    a = flow.add_step('a', func=rec.step('a'), acquires=[(p, 1)], releases=[])
    flow.add_step('later', func=rec.step('later'), acquires=[(p, 1)], requires=((a, S),))
    flow.add_step('slow', func=rec.step('slow', 0.3))  # still running when 'later' starts waiting
    message = run_expect_deadlock(flow)
    assert 'KEPT' in message and 'later' in message
    assert sorted(i['step'] for i in rec.items) == ['a', 'slow']  # the deadlock waited for 'slow'
    rows = read_holdings(db(tmp_path), flow.run_id)
    assert [(r['step'], r['released_count'], r['released']) for r in rows] == [('a', None, None)]
    assert read_tasks(db(tmp_path), flow.run_id)[('later', '1')].status == 'allocate'


def test_releases_empty_without_later_request_succeeds(make_flow):
    rec = Rec()
    p = pool('P', 1)
    flow = make_flow()
    flow.add_step('a', func=rec.step('a'), acquires=[(p, 1)], releases=[])
    flow.add_step('b', func=rec.step('b'))
    assert flow.run() is True


def test_container_holding_all_of_a_pool_while_its_child_needs_one_is_a_deadlock(make_flow):
    rec = Rec()
    p = pool('HELD', 2)
    flow = make_flow()
    c = flow.add_step('cont', acquires=[(p, 2)])
    c.add_step('child', func=rec.step('child'), acquires=[(p, 1)])
    message = run_expect_deadlock(flow)
    assert 'HELD' in message and 'cont_child' in message
    assert rec.items == []


def test_no_starvation_a_big_request_is_served_before_later_small_ones(tmp_path, make_flow):
    """big (2 of 2) queues behind a running small one; smalls arriving later must not overtake it."""
    rec = Rec()
    p = pool('P', 2)
    flow = make_flow()
    flow.add_step('small1', func=rec.step('small1', 0.4), acquires=[(p, 1)])
    flow.add_step('big', delay=0.1, func=rec.step('big', 0.1), acquires=[(p, 2)])
    flow.add_step('small2', delay=0.2, func=rec.step('small2', 0.05), acquires=[(p, 1)])
    flow.add_step('small3', delay=0.25, func=rec.step('small3', 0.05), acquires=[(p, 1)])
    assert flow.run() is True
    small1, big, small2, small3 = (rec.one(n) for n in ('small1', 'big', 'small2', 'small3'))
    assert big['mstart'] >= small1['mend']
    assert small2['mstart'] >= big['mend'] and small3['mstart'] >= big['mend']
    rows = {r['step']: r for r in read_holdings(db(tmp_path), flow.run_id)}
    assert rows['big']['acquired'] < rows['small2']['acquired'] and rows['big']['acquired'] < rows['small3']['acquired']
    assert pool_levels(list(rows.values())) == {'P': 2}


def test_waiting_on_one_pool_does_not_hold_back_other_pools(make_flow):
    rec = Rec()
    p, q = pool('P', 1), pool('Q', 1)
    flow = make_flow()
    other_ended = threading.Event()  # holder keeps P until then: other ends first unless held back
    flow.add_step('holder', func=rec.step('holder', hook=lambda: other_ended.wait(WAIT)), acquires=[(p, 1)])
    flow.add_step('waiter', func=rec.step('waiter'), acquires=[(p, 1)])
    flow.add_step('other', delay=0.05, func=setting(other_ended, rec.step('other')), acquires=[(q, 1)])
    assert flow.run() is True
    assert rec.one('other')['mend'] <= rec.one('holder')['mend']


def test_a_failed_step_gives_its_pool_back(tmp_path, make_flow):
    rec = Rec()
    p = pool('P', 1)
    flow = make_flow(config={'stop_on_exception': False})
    a = flow.add_step('a', func=rec.step('a', fail=True), acquires=[(p, 1)])
    flow.add_step('b', func=rec.step('b'), acquires=[(p, 1)], requires=((a, F),))
    assert flow.run() is True  # the failure is handled by b
    rows = {r['step']: r for r in read_holdings(db(tmp_path), flow.run_id)}
    assert rows['a']['released_count'] == 1
    assert rec.one('b')['mstart'] >= rec.one('a')['mend']


def test_a_failed_container_gives_its_pool_back(tmp_path, make_flow):
    rec = Rec()
    p = pool('P', 1)
    flow = make_flow(config={'stop_on_exception': False})
    c = flow.add_step('c', acquires=[(p, 1)])
    c.add_step('x', func=rec.step('x', fail=True))
    flow.add_step('z', func=rec.step('z'), acquires=[(p, 1)], requires=((c, F),))
    assert flow.run() is True
    rows = {r['step']: r for r in read_holdings(db(tmp_path), flow.run_id)}
    assert rows['c']['released_count'] == 1 and rows['z']['acquired'] >= rows['c']['released']


def test_a_stopping_run_drops_waiting_tasks_without_a_deadlock_error(tmp_path, make_flow):
    """stop_on_exception: the waiter never starts, the holder finishes, run() is False (no raise)."""
    rec = Rec()
    p = pool('P', 1)
    flow = make_flow()
    # the holder keeps P until the coordinator has handled bad's failure: the run is stopping by then
    flow.add_step('holder', func=rec.step('holder', hook=until_failed(db(tmp_path), 'bad')), acquires=[(p, 1)])
    flow.add_step('waiter', func=rec.step('waiter'), acquires=[(p, 1)])
    flow.add_step('bad', func=rec.step('bad', fail=True))
    with within(DEADLOCK_WITHIN):
        assert flow.run() is False
    assert sorted(i['step'] for i in rec.items) == ['bad', 'holder']
    assert [r['step'] for r in read_holdings(db(tmp_path), flow.run_id)] == ['holder']


def test_steps_without_acquires_have_no_holdings(tmp_path, make_flow):
    flow = make_flow()
    flow.add_step('a', func=time.time, acquires=[])
    flow.add_step('b', func=time.time)
    assert flow.run() is True
    assert read_holdings(db(tmp_path), flow.run_id) == []


def test_unlimited_pools_never_hold_anyone_back(make_flow):
    barrier = threading.Barrier(4, timeout=5)
    rec = Rec()
    unl, missing = pool('U', -1), seq.ResourcePool('M')
    flow = make_flow()
    for i in range(4):
        flow.add_step(f's{i}', func=rec.step(f's{i}', hook=barrier.wait), acquires=[(unl, 50), (missing, 1000)])
    assert flow.run() is True  # the barrier breaks unless all four run at once
    assert len(rec.items) == 4


# ---------------------------------------------------------------------------- max_concurrent

def test_flow_max_concurrent_and_pools_combine(tmp_path, make_flow):
    rec = Rec()
    p = pool('P', 3)
    q = pool('Q', 1)
    flow = make_flow(config={'max_concurrent': 2})
    for i in range(6):
        flow.add_step(f'p{i}', func=rec.step(f'p{i}', 0.03), acquires=[(p, 1)])
    for i in range(3):
        flow.add_step(f'q{i}', func=rec.step(f'q{i}', 0.03), acquires=[(q, 1)])
    for i in range(3):
        flow.add_step(f'n{i}', func=rec.step(f'n{i}', 0.03))
    assert flow.run() is True
    assert len(rec.items) == 12
    assert peak([(i['mstart'], i['mend'], 1) for i in rec.items]) <= 2
    assert peak([(i['mstart'], i['mend'], 1) for i in rec.items if i['step'].startswith('q')]) == 1
    assert all(v <= {'P': 3, 'Q': 1}[k] for k, v in pool_levels(read_holdings(db(tmp_path), flow.run_id)).items())


def test_step_max_concurrent_and_pools_combine_in_the_engine(tmp_path, flow_config):
    """Engine level (a step runs at several sequences at once only there)."""
    rec = Rec()
    ev = Eventor(name='t', store=db(tmp_path), config=flow_config(task_construct='thread'))
    ev.add_resource_pool('P', 3)
    go = ev.add_event('go')
    ev.add_step('a', func=rec.step('a', 0.05), acquires=[('P', 1)], config={'max_concurrent': 1})
    ev.add_step('b', func=rec.step('b', 0.05), acquires=[('P', 1)])
    ev.add_step('c', func=rec.step('c', 0.05), acquires=[('P', 2)], config={'max_concurrent': 2})
    for name in ('a', 'b', 'c'):
        ev.add_assoc(go, name)
    for s in (1, 2, 3, 4):
        ev.trigger_event(go, s)
    assert ev.run() is True
    assert len(rec.items) == 12
    assert peak([(i['mstart'], i['mend'], 1) for i in rec.items if i['step'] == 'a']) == 1
    assert peak([(i['mstart'], i['mend'], 1) for i in rec.items if i['step'] == 'c']) == 1  # 2+2 > 3
    weights = {'a': 1, 'b': 1, 'c': 2}
    assert peak([(i['mstart'], i['mend'], weights[i['step']]) for i in rec.items]) <= 3
    assert pool_levels(read_holdings(db(tmp_path), ev.run_id))['P'] <= 3


# ---------------------------------------------------------------------------- process tasks

def _proc_work(path, label):
    t0 = time.time()
    time.sleep(0.1)
    t1 = time.time()
    with open(path, 'a') as fh:
        fh.write(f'{label} {t0!r} {t1!r}\n')


def test_process_tasks_share_a_pool_in_the_coordinator(tmp_path, make_flow):
    out = str(tmp_path / 'times.txt')
    p = pool('P', 1)
    flow = make_flow(construct='process')
    for name in ('a', 'b', 'c'):
        flow.add_step(name, func=_proc_work, args=(out, name), acquires=[(p, 1)])
    assert flow.run() is True
    with open(out) as fh:
        spans = {label: (float(t0), float(t1)) for label, t0, t1 in (line.split() for line in fh)}
    assert sorted(spans) == ['a', 'b', 'c']
    ordered = sorted(spans.values())
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(ordered, ordered[1:])), spans
    rows = read_holdings(db(tmp_path), flow.run_id)
    assert pool_levels(rows) == {'P': 1}
    for r in rows:
        assert r['acquired'] <= spans[r['step']][0] and spans[r['step']][1] <= r['released']


def test_process_mode_deadlock_ends_with_an_error(tmp_path, make_flow):
    out = str(tmp_path / 'times.txt')
    p = pool('PROC', 1)
    flow = make_flow(construct='process')
    a = flow.add_step('a', func=_proc_work, args=(out, 'a'), acquires=[(p, 1)], releases=[])
    flow.add_step('b', func=_proc_work, args=(out, 'b'), acquires=[(p, 1)], requires=((a, S),))
    message = run_expect_deadlock(flow)
    assert 'PROC' in message and 'b' in message


# ---------------------------------------------------------------------------- recovery

def test_recovery_skipped_tasks_acquire_nothing(tmp_path, make_flow):
    path = db(tmp_path)
    flag = tmp_path / 'second-time'
    rec = Rec()

    def flaky():
        if not flag.exists():
            flag.write_text('x')
            raise RuntimeError('first time fails')

    def build(**kw):
        p, q = pool('P', 1), pool('Q', 1)
        flow = make_flow(**kw)
        a = flow.add_step('a', func=rec.step('a'), acquires=[(p, 1)])
        c = flow.add_step('c', acquires=[(q, 1)], requires=((a, S),))
        c.add_step('x', func=rec.step('x'), acquires=[(p, 1)])
        flow.add_step('b', func=flaky, acquires=[(p, 1)], requires=((c, S),))
        return flow

    first = build()
    assert first.run() is False
    run_id = first.run_id
    got = sorted((r['recovery'], r['step'], r['sequence']) for r in read_holdings(path, run_id))
    assert got == [(0, 'a', '1'), (0, 'b', '1'), (0, 'c', '1'), (0, 'c_x', '1.1')]

    second = build(run_mode=seq.RUN_RECOVER, run_id=run_id)
    assert second.run() is True
    again = sorted((r['step'], r['sequence']) for r in read_holdings(path, run_id, recovery=1))
    # containers always replay (and hold their pools); skipped a and c_x take nothing; b reruns
    assert again == [('b', '1'), ('c', '1')]
    tasks = read_tasks(path, run_id, recovery=1)
    assert tasks[('a', '1')].skipped and tasks[('c_x', '1.1')].skipped
    assert [i['step'] for i in rec.items] == ['a', 'x']  # nothing ran again except b


# ---------------------------------------------------------------------------- errors

def test_request_larger_than_capacity_raises_at_add_step(make_flow):
    flow = make_flow()
    with pytest.raises(seq.SequentError, match=r"'big'.*'P'|'P'.*'big'"):
        flow.add_step('big', func=time.time, acquires=[(pool('P', 2), 3)])


def test_request_larger_than_capacity_on_a_container_raises(make_flow):
    flow = make_flow()
    with pytest.raises(seq.SequentError, match='P'):
        flow.add_step('cont', acquires=[(pool('P', 1), 2)])


def test_pool_named_twice_in_one_request_summing_over_capacity_raises_by_run(make_flow):
    flow = make_flow()
    p = pool('P', 3)
    with pytest.raises(seq.SequentError, match='P'):
        flow.add_step('twice', func=time.time, acquires=[(p, 2), (p, 2)])
        flow.run()


def test_pool_named_twice_in_one_request_summing_over_capacity_raises_at_add_step(make_flow):
    flow = make_flow()
    p = pool('P', 3)
    with pytest.raises(seq.SequentError, match='P'):
        flow.add_step('twice', func=time.time, acquires=[(p, 2), (p, 2)])


@pytest.mark.parametrize('amounts', [
    [('P', 1)],
    [(object(), 1)],
    [(seq.Resource, 1)],
])
def test_something_that_is_not_a_pool_raises_naming_the_step(amounts, make_flow):
    flow = make_flow()
    with pytest.raises(seq.SequentError, match='notapool'):
        flow.add_step('notapool', func=time.time, acquires=amounts)
    with pytest.raises(seq.SequentError, match='notapool2'):
        flow.add_step('notapool2', func=time.time, acquires=[(pool(), 1)], releases=amounts)


@pytest.mark.parametrize('amounts', [
    'P', [pool()], [(pool(), 0)], [(pool(), -1)], [(pool(), True)], [(pool(), '1')], [(pool(), 1, 1)],
])
def test_malformed_acquires_raise_naming_the_step(amounts, make_flow):
    flow = make_flow()
    with pytest.raises(seq.SequentError, match='badamounts'):
        flow.add_step('badamounts', func=time.time, acquires=amounts)


def test_releasing_more_than_acquired_raises(make_flow):
    flow = make_flow()
    p, q = pool('P', 3), pool('Q', 3)
    with pytest.raises(seq.SequentError, match='more'):
        flow.add_step('more', func=time.time, acquires=[(p, 1)], releases=[(p, 2)])
    with pytest.raises(seq.SequentError, match='other'):
        flow.add_step('other', func=time.time, acquires=[(p, 1)], releases=[(q, 1)])
    with pytest.raises(seq.SequentError, match='cont'):
        flow.add_step('cont', acquires=[(p, 1)], releases=[(p, 3)])


def test_releasing_more_than_acquired_in_pieces_raises_by_run(make_flow):
    flow = make_flow()
    p = pool('P', 3)
    with pytest.raises(seq.SequentError, match='pieces'):
        flow.add_step('pieces', func=time.time, acquires=[(p, 1)], releases=[(p, 1), (p, 1)])
        flow.run()


def test_two_pools_with_the_same_name_and_different_limits_raise(make_flow):
    flow = make_flow()
    flow.add_step('a', func=time.time, acquires=[(pool('SAME', 1), 1)])
    flow.add_step('b', func=time.time, acquires=[(pool('SAME', 2), 1)])
    with pytest.raises(seq.SequentError, match='SAME'):
        flow.run()


def test_two_pools_with_the_same_name_and_the_same_limit_raise(make_flow):
    flow = make_flow()
    flow.add_step('a', func=time.time, acquires=[(pool('SAME', 1), 1)])
    flow.add_step('b', func=time.time, acquires=[(pool('SAME', 1), 1)])
    with pytest.raises(seq.SequentError, match='SAME'):
        flow.run()


def test_the_same_pool_object_used_by_many_steps_is_fine(make_flow):
    flow = make_flow()
    p = pool('ONE', 1)
    c = flow.add_step('c', acquires=[(p, 1)], releases=[(p, 1)])
    c.add_step('x', func=time.time)
    flow.add_step('a', func=time.time, acquires=[(p, 1)])
    assert flow.run() is True


def test_container_child_is_not_blocked_behind_a_sibling_waiting_for_the_containers_pool(make_flow):
    rec = Rec()
    p = pool('P', 2)
    flow = make_flow()
    c = flow.add_step('c', acquires=[(p, 1)])
    c.add_step('x', func=rec.step('x'), acquires=[(p, 1)])
    flow.add_step('big', func=rec.step('big'), acquires=[(p, 2)])
    with within(DEADLOCK_WITHIN):
        assert flow.run() is True
    assert sorted(i['step'] for i in rec.items) == ['big', 'x']


# ---------------------------------------------------------------------------- properties

@st.composite
def plans(draw):
    """A random flow: 10-30 root items, some containers repeated 1-3 times, 1-3 pools of 1-3."""
    limits = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))

    def amounts(held=()):
        """Within capacity; inside a container, within what the container leaves free."""
        left = [limit - sum(n for i, n in held if i == k) for k, limit in enumerate(limits)]
        chosen = draw(st.lists(st.integers(0, len(limits) - 1), unique=True, max_size=len(limits)))
        return [(i, draw(st.integers(1, left[i]))) for i in chosen if left[i] >= 1]

    def requires(k):
        return draw(st.lists(st.integers(0, k - 1), unique=True, max_size=2)) if k else []

    sleeps = st.sampled_from([0.001, 0.002, 0.003])
    items = []
    for k in range(draw(st.integers(10, 30))):
        if draw(st.integers(0, 4)) == 0:
            held = amounts() if draw(st.booleans()) else []
            children = []
            for j in range(draw(st.integers(1, 3))):
                children.append({'acquires': amounts(held), 'requires': requires(j),
                                 'sleep': draw(sleeps)})
            items.append({'container': True, 'acquires': held, 'requires': requires(k),
                          'repeats': draw(st.integers(1, 3)), 'children': children})
        else:
            items.append({'container': False, 'acquires': amounts(), 'requires': requires(k),
                          'sleep': draw(sleeps)})
    # Containers hold their pools while their steps wait: two holding containers whose steps
    # need each other's pools would be a real deadlock (reported, see the deadlock tests), not a
    # feasible flow. So steps inside a holding container take only pools no container holds.
    held_by_containers = {i for item in items if item['container'] for i, _ in item['acquires']}
    for item in items:
        if item['container'] and item['acquires']:
            for child in item['children']:
                child['acquires'] = [(i, n) for i, n in child['acquires'] if i not in held_by_containers]
    max_concurrent = draw(st.one_of(st.none(), st.integers(1, 4)))
    return {'limits': limits, 'items': items, 'max_concurrent': max_concurrent}


def build_plan(make_flow, plan, tmp, rec):
    """The flow of a plan, with its store and logs in ``tmp``; returns it, what each task acquires, and the
    container tasks."""
    pools = [pool(f'RP{i}', limit) for i, limit in enumerate(plan['limits'])]
    config = {} if plan['max_concurrent'] is None else {'max_concurrent': plan['max_concurrent']}
    config['LOGGING'] = {'logdir': os.path.join(tmp, 'logs')}
    flow = make_flow(store=db(tmp), config=config)
    expected = {}  # (step, sequence) -> {pool: count} of every task, processing or container
    containers = set()

    def add(parent, name, spec, siblings, seqs):
        kwargs = dict(acquires=[(pools[i], n) for i, n in spec['acquires']],
                      requires=[(siblings[r], S) for r in spec['requires']])
        path = name if parent is flow else f'{parent.path}_{name}'
        if spec['container']:
            repeats = spec['repeats']
            step = parent.add_step(name, repeats=list(range(1, repeats + 1)), **kwargs)
            children = []
            for j, child in enumerate(spec['children']):
                children.append(add(step, f'{name}c{j}', dict(child, container=False), children,
                                    [f'{s}.{k}' for s in seqs for k in range(1, repeats + 1)]))
            containers.update((path, s) for s in seqs)
        else:
            step = parent.add_step(name, func=rec.step(path, spec['sleep']), **kwargs)
        for s in seqs:
            expected[(path, s)] = {f'RP{i}': n for i, n in spec['acquires']}
        return step

    roots = []
    for k, spec in enumerate(plan['items']):
        roots.append(add(flow, f's{k}', spec, roots, ['1']))
    return flow, expected, containers


@settings(max_examples=min(100, settings.default.max_examples), deadline=None,
          suppress_health_check=list(HealthCheck), database=None)
@given(plan=plans())
def test_random_flows_with_pools_finish_within_capacity(tmp_path, make_flow, plan):
    restart()  # the hang guard bounds each example, not all of them
    tmp = tempfile.mkdtemp(prefix='example-', dir=tmp_path)  # a store and logs of its own for each example
    rec = Rec()
    flow, expected, containers = build_plan(make_flow, plan, tmp, rec)
    with within(20):
        assert flow.run() is True
    # every processing step ran once per sequence it should have
    assert sorted((i['step'], i['seq']) for i in rec.items) == sorted(set(expected) - containers)
    tasks = read_tasks(db(tmp), flow.run_id)
    assert set(tasks) == set(expected)
    assert {r.status for r in tasks.values()} == {'success'}
    # the holdings table: exactly what each task asked for, all given back, never over capacity
    rows = read_holdings(db(tmp), flow.run_id)
    got = defaultdict(dict)
    for r in rows:
        got[(r['step'], r['sequence'])][r['pool']] = r['count']
        assert r['released_count'] == r['count'] and r['released'] is not None and r['released'] >= r['acquired']
    assert dict(got) == {k: v for k, v in expected.items() if v}
    for name, level in pool_levels(rows).items():
        assert level <= plan['limits'][int(name[2:])], (name, level)
    # each processing task ran inside the span its holdings were taken
    spans = {(r['step'], r['sequence']): (r['acquired'], r['released']) for r in rows}
    for i in rec.items:
        span = spans.get((i['step'], i['seq']))
        if span is not None:
            assert span[0] <= i['start'] and i['end'] <= span[1], (i, span)
    # a container holds from before its first child's start to after its last child's end
    for key in containers & set(spans):
        inside = [i for i in rec.items if i['step'].startswith(key[0] + '_')]
        assert spans[key][0] <= min(i['start'] for i in inside)
        assert max(i['end'] for i in inside) <= spans[key][1]
    if plan['max_concurrent'] is not None:
        assert peak([(i['mstart'], i['mend'], 1) for i in rec.items]) <= plan['max_concurrent']
