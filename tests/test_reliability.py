"""Reliability: whatever a task produces is recorded, a flow the store cannot keep is refused up front,
one coordinator per run even across pauses and racing recoveries, store faults are clear errors that
leave a recoverable run, and reading history changes nothing.

Each test states the promise it checks; the PostgreSQL side of the store tests is in
tests/test_store_backends.py.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from guard import alarm

import sequent as seq
from sequent.eventor import runlock
from sequent.eventor.text import DEPTH_LIMIT, ERROR_LIMIT, RESULT_LIMIT, TRACEBACK_LIMIT, storable

REPO = Path(__file__).resolve().parents[1]
QUIET = {'LOGGING': {'console': False}}


@pytest.fixture(autouse=True)
def no_hang():
    with alarm(60):
        yield


def config(tmp_path: Path, **extra) -> dict:
    return {'LOGGING': {'console': False, 'logdir': str(tmp_path / 'logs')}, **extra}


def tasks_of(store: str, run_id: str) -> dict[tuple[str, int], seq.TaskInfo]:
    return {(t.step, t.recovery): t for t in seq.run_tasks(store, run_id)}


def outcome_of(store: str, run_id: str) -> str:
    return {r.run_id: r.outcome for r in seq.list_runs(store)}[run_id]


# --------------------------------------------------------------------------- text a task produces

def raise_text(kind: str) -> None:
    texts = {
        'nul': 'bad\0byte',
        'surrogate': 'no such file: ' + os.fsdecode(b'caf\xe9.txt'),  # a lone surrogate, as os.listdir gives
        'huge': 'x' * 5_000_000,
    }
    raise RuntimeError(texts[kind])


def return_text(kind: str):
    return {'nul': 'a\0b', 'surrogate': '\udcff', 'huge': 'y' * 1_000_000}[kind]


class BrokenRepr(Exception):
    def __repr__(self):
        raise ValueError('no repr for you')

    def __str__(self):
        raise ValueError('no str either')


def raise_broken() -> None:
    raise BrokenRepr()


@pytest.mark.parametrize('construct', ['thread', 'process', 'invoke'])
@pytest.mark.parametrize('kind', ['nul', 'surrogate', 'huge'])
def test_any_error_text_is_recorded_and_the_failure_handled(tmp_path, construct, kind):
    """An exception message with a NUL byte, a lone surrogate or megabytes of text is stored (escaped,
    capped) and the failure handler runs; the coordinator does not die of it."""
    store = str(tmp_path / 'store.db')
    flow = seq.Sequent('texts', store=store, run_id='r1',
                       config=config(tmp_path, task_construct=construct))
    bad = flow.add_step('bad', func=raise_text, args=(kind,))
    flow.add_step('handler', func=return_text, args=(kind,), requires=((bad, seq.STEP_FAILURE),))
    assert flow.run() is True  # the failure was handled
    tasks = tasks_of(store, 'r1')
    error = tasks[('bad', 0)].error
    assert tasks[('bad', 0)].status == 'failure' and 'RuntimeError' in error
    assert len(error) <= ERROR_LIMIT + TRACEBACK_LIMIT + 200
    assert '\0' not in error and storable(error, len(error)) == error
    result = tasks[('handler', 0)].result
    assert tasks[('handler', 0)].status == 'success' and len(result) <= RESULT_LIMIT + 100
    assert '\0' not in result and storable(result, len(result)) == result
    if kind == 'nul':
        assert 'bad\\x00byte' in error
    if kind == 'surrogate':
        assert '\\udce9' in error
    if kind == 'huge':
        assert 'characters cut' in error
    log = (tmp_path / 'logs' / 'texts-r1.log').read_text()
    assert len(log) < 200_000  # logged capped too, not 5 MB twice


@pytest.mark.parametrize('construct', ['thread', 'process', 'invoke'])
def test_an_exception_that_cannot_describe_itself_is_still_a_failure(tmp_path, construct):
    """A broken __repr__/__str__ on the exception makes a recorded failure, not a lost task or a hang."""
    store = str(tmp_path / 'store.db')
    flow = seq.Sequent('broken', store=store, run_id='r1', config=config(tmp_path, task_construct=construct))
    flow.add_step('bad', func=raise_broken)
    assert flow.run() is False
    task = tasks_of(store, 'r1')[('bad', 0)]
    assert task.status == 'failure' and 'BrokenRepr' in task.error


def test_repeats_failing_with_bad_text_fails_the_container_only(tmp_path):
    """A repeats iterator raising with unstorable text fails its container, recorded; the run ends."""
    def repeats():
        yield 1
        raise OSError('\udcff\0')

    store = str(tmp_path / 'store.db')
    flow = seq.Sequent('rep', store=store, run_id='r1', config=config(tmp_path, task_construct='thread'))
    loop = flow.add_step('loop', repeats=repeats)
    loop.add_step('inner', func=return_text, args=('nul',))
    assert flow.run() is False
    tasks = tasks_of(store, 'r1')
    assert tasks[('loop', 0)].status == 'failure' and 'OSError' in tasks[('loop', 0)].error
    assert tasks[('loop_inner', 0)].status == 'success'


# --------------------------------------------------------------------------- flows the store cannot keep

def test_names_longer_than_the_store_keeps_are_refused_when_added():
    flow = seq.Sequent('names')
    with pytest.raises(seq.SequentError, match='255'):
        flow.add_step('s' * 256, func=print)
    with pytest.raises(seq.SequentError, match='run_id'):
        seq.Sequent('names', run_id='r' * 65)
    with pytest.raises(seq.SequentError, match='run_id'):
        seq.Sequent('names', run_id='bad\0id')
    with pytest.raises(seq.SequentError, match='flow name'):
        seq.Sequent('f' * 300)
    flow = seq.Sequent('names', config=QUIET)
    flow.add_step('a', func=print)
    with pytest.raises(seq.SequentError, match='run_id'):
        flow.run(run_id='x' * 100)


def test_nesting_deeper_than_the_limit_is_refused_and_the_limit_itself_runs(tmp_path):
    """Containers nest up to DEPTH_LIMIT deep and run to the end; one level more is refused at add_step."""
    store = str(tmp_path / 'store.db')
    flow = seq.Sequent('deep', store=store, run_id='r1', config=config(tmp_path, task_construct='thread'))
    node = flow
    for level in range(DEPTH_LIMIT):
        node = node.add_step(chr(ord('a') + level % 26))
    leaf = node.add_step('leaf', func=return_text, args=('nul',))
    with pytest.raises(seq.SequentError, match='deep'):
        leaf.add_step('too_deep', func=print)
    assert flow.run() is True
    assert all(t.status == 'success' for t in seq.run_tasks(store, 'r1'))


def test_a_sequence_longer_than_the_store_keeps_fails_its_container(tmp_path, monkeypatch):
    from sequent.eventor import containers
    monkeypatch.setattr(containers, 'SEQUENCE_LIMIT', 3)
    store = str(tmp_path / 'store.db')
    flow = seq.Sequent('long', store=store, run_id='r1', config=config(tmp_path, task_construct='thread'))
    loop = flow.add_step('loop', repeats=range(12))
    loop.add_step('inner', func=print, args=('',))
    assert flow.run() is False
    tasks = seq.run_tasks(store, 'r1')
    assert sum(t.step == 'loop_inner' and t.status == 'success' for t in tasks) == 9  # 1.1 .. 1.9
    assert 'sequence' in next(t for t in tasks if t.step == 'loop').error


# --------------------------------------------------------------------------- one coordinator per run

def test_a_recovery_of_another_flows_run_is_refused_naming_both(tmp_path):
    store = str(tmp_path / 'store.db')
    first = seq.Sequent('payroll', store=store, run_id='r1', config=config(tmp_path, task_construct='thread'))
    first.add_step('a', func=raise_text, args=('nul',))
    assert first.run() is False
    other = seq.Sequent('billing', store=store, config=config(tmp_path, task_construct='thread'))
    other.add_step('a', func=print)
    with pytest.raises(seq.SequentError, match="flow 'payroll', not of flow 'billing'"):
        other.run(run_mode=seq.RUN_RECOVER, run_id='r1')
    assert outcome_of(store, 'r1') == 'failure'
    assert {t.recovery for t in seq.run_tasks(store, 'r1')} == {0}


def test_a_failed_attempt_start_commits_nothing(tmp_path):
    """When recording an attempt's start fails half-way, the run's row is left as it was (not 'running')."""
    store = str(tmp_path / 'store.db')
    flow = seq.Sequent('half', store=store, run_id='r1', config=config(tmp_path, task_construct='thread'))
    flow.add_step('a', func=raise_text, args=('nul',))
    assert flow.run() is False
    with sqlite3.connect(store) as conn:  # a stray attempt row in the way of attempt 1
        conn.execute("INSERT INTO sequent_attempts (run_id, recovery, mode, started) VALUES ('r1', 1, 'x', 0)")
    with pytest.raises(seq.SequentError):
        flow.run(run_mode=seq.RUN_RECOVER, run_id='r1')
    assert outcome_of(store, 'r1') == 'failure'
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT recovery, status FROM sequent_runs").fetchall() == [(0, 'failure')]
        assert conn.execute("SELECT count(*) FROM sequent_locks").fetchone() == (0,)


def test_recovery_takes_the_lock_before_it_reads(tmp_path, monkeypatch):
    """The run is read only once the lock is held, so a racing recovery's writes cannot be missed."""
    from sequent.eventor.store import Store
    calls: list[str] = []
    for name in ('take_lock', 'get_run', 'previous_states', 'start_attempt'):
        original = getattr(Store, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            if not self.readonly:  # a read-only look before the lock (the refusal check) decides nothing
                calls.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(Store, name, spy)
    store = str(tmp_path / 'store.db')
    flow = seq.Sequent('order', store=store, run_id='r1', config=config(tmp_path, task_construct='thread'))
    flow.add_step('a', func=raise_text, args=('nul',))
    flow.run()
    calls.clear()
    flow.run(run_mode=seq.RUN_RECOVER, run_id='r1')
    assert calls.index('take_lock') < calls.index('get_run') < calls.index('previous_states') < \
        calls.index('start_attempt')


RACE_SCRIPT = textwrap.dedent('''
    import os, sys, time
    import sequent as seq

    def slow(path):
        open(path, 'a').write('started\\n')
        time.sleep(float(os.environ.get('SLOW', '1.5')))

    def fail():
        raise RuntimeError('first time')

    store, logs, mode, marker = sys.argv[1:5]
    flow = seq.Sequent('race', store=store, config={'LOGGING': {'console': False, 'logdir': logs},
                                                    'task_construct': 'thread'})
    a = flow.add_step('a', func=slow, args=(marker,))
    b = fail if mode == 'first' else slow
    flow.add_step('b', func=b, args=() if mode == 'first' else (marker,), requires=((a, seq.STEP_SUCCESS),))
    try:
        ok = flow.run(run_id='r1', run_mode=seq.RUN_RESTART if mode == 'first' else seq.RUN_RECOVER)
    except seq.SequentError as exc:
        print('REFUSED', exc)
        sys.exit(3)
    sys.exit(0 if ok else 1)
''')


def test_two_recoveries_of_one_run_one_runs_the_other_is_refused(tmp_path):
    """Racing recoveries: exactly one runs; the other is refused cleanly (no raw driver error, nothing
    half-written), and the run ends 'success', not 'abandoned'."""
    script = tmp_path / 'race.py'
    script.write_text(RACE_SCRIPT)
    store, logs, marker = str(tmp_path / 'store.db'), str(tmp_path / 'logs'), str(tmp_path / 'marker')
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'SLOW': '0'}
    first = subprocess.run([sys.executable, str(script), store, logs, 'first', marker], env=env)
    assert first.returncode == 1
    env['SLOW'] = '1.5'
    racers = [subprocess.Popen([sys.executable, str(script), store, logs, 'recover', marker], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(30), *p.communicate()) for p in racers]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results
    refused = next(out for code, out, _ in results if code == 3)
    assert 'is being run by' in refused
    assert all('Traceback' not in err for _, _, err in results), results
    assert outcome_of(store, 'r1') == 'success'
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT recovery FROM sequent_attempts ORDER BY recovery").fetchall() == [(0,), (1,)]


# --------------------------------------------------------------------------- the lease

def test_lease_is_cheap_while_fresh_and_confirms_when_old():
    beats: list[bool] = []

    def beat():
        beats.append(True)
        return True

    lease = runlock.Lease(beat, every=100, stale_after=0.2)
    assert lease.check() and beats == []
    time.sleep(0.15)
    assert lease.check() and beats == [True]  # too old to rely on: confirmed against the store


def test_lease_lost_when_the_lock_is_someone_elses_wakes_the_coordinator():
    woken = threading.Event()
    lease = runlock.Lease(lambda: False, every=0.05, on_lost=woken.set)
    lease.start()
    try:
        assert woken.wait(5) and lease.lost and not lease.check()
    finally:
        lease.stop()


def steal_lock(store: str, run_id: str) -> None:
    """What a recovery on another host does once this coordinator's heartbeat is stale."""
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE sequent_locks SET token = 'elsewhere:1:1', host = 'elsewhere', heartbeat = ? "
                     "WHERE run_id = ?", (time.time(), run_id))


def test_a_coordinator_that_lost_its_lock_starts_nothing_and_ends_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, 'HEARTBEAT_EVERY', 0.05)
    store = str(tmp_path / 'store.db')
    ran: list[str] = []
    flow = seq.Sequent('lease', store=store, run_id='r1', config=config(tmp_path, task_construct='thread'))

    def first():
        ran.append('first')
        steal_lock(store, 'r1')
        time.sleep(0.5)  # the heartbeat finds the lock gone meanwhile

    a = flow.add_step('a', func=first)
    flow.add_step('b', func=ran.append, args=('second',), requires=((a, seq.STEP_SUCCESS),))
    with pytest.raises(seq.SequentError, match='lost the run'):
        flow.run()
    assert ran == ['first']
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT outcome FROM sequent_attempts").fetchall() == [('lost',)]
        assert conn.execute("SELECT status FROM sequent_runs").fetchall() == [('running',)]  # the other's now
        assert conn.execute("SELECT token FROM sequent_locks").fetchall() == [('elsewhere:1:1',)]


def test_a_long_invoke_step_does_not_starve_the_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, 'HEARTBEAT_EVERY', 0.05)
    store = str(tmp_path / 'store.db')
    ages: list[float] = []

    def long_step():
        time.sleep(0.6)
        with sqlite3.connect(store) as conn:
            ages.append(time.time() - conn.execute("SELECT heartbeat FROM sequent_locks").fetchone()[0])

    flow = seq.Sequent('invoke', store=store, run_id='r1', config=config(tmp_path, task_construct='invoke'))
    flow.add_step('long', func=long_step)
    assert flow.run() is True
    assert ages and ages[0] < 0.4


PAUSE_SCRIPT = textwrap.dedent('''
    import os, sys, time
    import sequent as seq
    from sequent.eventor import runlock
    runlock.STALE_AFTER = 1.0
    runlock.HEARTBEAT_EVERY = 0.2

    def step(journal, name, seconds):
        with open(journal, 'a') as f:
            f.write(f'{name} {time.time()}\\n')
        time.sleep(seconds)

    store, logs, journal = sys.argv[1:4]
    flow = seq.Sequent('paused', store=store, run_id='r1',
                       config={'LOGGING': {'console': False, 'logdir': logs}, 'shutdown_grace': 1})
    a = flow.add_step('a', func=step, args=(journal, 'a', 1.0))
    flow.add_step('b', func=step, args=(journal, 'b', 0), requires=((a, seq.STEP_SUCCESS),))
    try:
        flow.run()
    except seq.SequentError as exc:
        print(exc)
        sys.exit(4)
''')


def test_a_paused_coordinator_that_was_replaced_starts_nothing_when_it_wakes(tmp_path):
    """SIGSTOP past the stale limit, replacement by another host, SIGCONT: the woken coordinator
    confirms its lease before it starts anything, finds the run taken, and ends as lost."""
    script = tmp_path / 'pause.py'
    script.write_text(PAUSE_SCRIPT)
    store, journal = str(tmp_path / 'store.db'), tmp_path / 'journal'
    proc = subprocess.Popen([sys.executable, str(script), store, str(tmp_path / 'logs'), str(journal)],
                            env={**os.environ, 'PYTHONPATH': str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not (journal.exists() and journal.read_text().startswith('a ')):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(1.6)  # past the stale limit: 'a' (its own process) ends meanwhile
        steal_lock(store, 'r1')
        woke = time.time()
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4 and 'lost the run' in out
    starts = [line.split() for line in journal.read_text().splitlines()]
    assert [name for name, _ in starts] == ['a'], starts  # 'b' never started after the takeover
    assert all(float(when) < woke for _, when in starts)


# --------------------------------------------------------------------------- store faults

def hold_write_lock(store: str, seconds: float, ready: threading.Event) -> None:
    conn = sqlite3.connect(store, isolation_level=None)
    conn.execute('BEGIN IMMEDIATE')
    ready.set()
    time.sleep(seconds)
    conn.execute('ROLLBACK')
    conn.close()


def test_a_store_locked_past_the_busy_timeout_is_a_clear_error_and_the_run_recoverable(tmp_path):
    store = str(tmp_path / 'store.db')
    cfg = config(tmp_path, task_construct='thread', busy_timeout=0.2)
    flow = seq.Sequent('locked', store=store, run_id='r1', config=cfg)
    ready = threading.Event()
    holder: list[threading.Thread] = []

    def grab():
        holder.append(threading.Thread(target=hold_write_lock, args=(store, 1.0, ready)))
        holder[0].start()
        ready.wait(5)

    a = flow.add_step('a', func=grab)
    flow.add_step('b', func=print, args=('',), requires=((a, seq.STEP_SUCCESS),))
    with pytest.raises(seq.SequentError, match=r'locked by another connection for longer than busy_timeout \(0.2 s\)'
                       ) as info:
        flow.run()
    assert "recover it with run_id 'r1'" in str(info.value)
    holder[0].join()
    assert outcome_of(store, 'r1') in ('error', 'abandoned')
    recovered = seq.Sequent('locked', store=store, config=config(tmp_path, task_construct='thread'))
    ran: list[str] = []
    a = recovered.add_step('a', func=ran.append, args=('a',))
    recovered.add_step('b', func=ran.append, args=('b',), requires=((a, seq.STEP_SUCCESS),))
    assert recovered.run(run_mode=seq.RUN_RECOVER, run_id='r1') is True
    assert outcome_of(store, 'r1') == 'success'


def test_a_read_only_store_is_a_clear_error(tmp_path):
    path = tmp_path / 'store.db'
    first = seq.Sequent('ro', store=str(path), run_id='r1', config=config(tmp_path, task_construct='thread'))
    first.add_step('a', func=print, args=('',))
    assert first.run()
    url = f'sqlite:///file:{path}?mode=ro&uri=true'
    again = seq.Sequent('ro', store=url, run_id='r2', config=config(tmp_path, task_construct='thread'))
    again.add_step('a', func=print, args=('',))
    with pytest.raises(seq.SequentError, match='cannot be written'):
        again.run()


@pytest.mark.parametrize('url, what', [
    ('postgresql+psycopg://user@127.0.0.1:notaport/db', 'port'),
    ('postgresql+psycopg://user@127.0.0.1:1/db', 'connection'),
])
def test_a_bad_database_url_is_a_clear_error(tmp_path, url, what):
    flow = seq.Sequent('url', store=url, config=config(tmp_path, task_construct='thread'))
    flow.add_step('a', func=print)
    with pytest.raises(seq.SequentError, match=what):
        flow.run()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB file system of our own, to fill up."""
    mount = tmp_path / 'small'
    mount.mkdir()
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f'cannot mount a small tmpfs here: {done.stderr.decode().strip()}')
    try:
        yield mount
    finally:
        subprocess.run(['umount', '-l', str(mount)], check=False)


def test_a_full_disk_is_a_clear_error_and_the_run_recoverable(tmp_path, small_disk):
    store = str(small_disk / 'store.db')
    cfg = config(tmp_path, task_construct='thread')

    def build(fill: bool) -> seq.Sequent:
        flow = seq.Sequent('full', store=store, config=cfg)
        a = flow.add_step('a', func=print, args=('',))
        b = flow.add_step('b', func=fill_disk if fill else print, args=(str(small_disk),) if fill else ('',),
                          requires=((a, seq.STEP_SUCCESS),))
        flow.add_step('c', func=return_text, args=('huge',), requires=((b, seq.STEP_SUCCESS),))
        return flow

    flow = build(fill=True)
    with pytest.raises(seq.SequentError, match='disk holding the store is full'):
        flow.run(run_id='r1')
    for name in os.listdir(small_disk):
        if name.startswith('filler'):
            os.remove(small_disk / name)
    assert build(fill=False).run(run_mode=seq.RUN_RECOVER, run_id='r1') is True
    tasks = seq.run_tasks(store, 'r1')
    assert [t.step for t in tasks if t.recovery == 1 and not t.skipped] == ['b', 'c']


def fill_disk(folder: str) -> None:
    with open(os.path.join(folder, 'filler'), 'wb') as f:
        try:
            while True:
                f.write(b'\0' * 65536)
                f.flush()
        except OSError:
            pass


# --------------------------------------------------------------------------- reading history

def test_reading_a_foreign_database_changes_nothing(tmp_path):
    path = tmp_path / 'foreign.db'
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE customers (id INTEGER)')
    before = path.read_bytes()
    with pytest.raises(seq.SequentError, match='not a sequent store'):
        seq.list_runs(str(path))
    with pytest.raises(seq.SequentError, match='not a sequent store'):
        seq.run_tasks(str(path), 'r1')
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        assert conn.execute('PRAGMA journal_mode').fetchone() == ('delete',)
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ['customers']


def test_reading_history_of_a_store_does_not_change_its_journal_mode(tmp_path):
    path = tmp_path / 'store.db'
    flow = seq.Sequent('hist', store=str(path), run_id='r1', config=config(tmp_path, task_construct='thread'))
    flow.add_step('a', func=print, args=('',))
    assert flow.run()
    assert [r.run_id for r in seq.list_runs(str(path))] == ['r1']


def test_a_new_store_file_is_private(tmp_path):
    path = tmp_path / 'store.db'
    flow = seq.Sequent('mode', store=str(path), run_id='r1', config=config(tmp_path, task_construct='thread'))
    flow.add_step('a', func=print, args=('',))
    old = os.umask(0o022)
    try:
        assert flow.run()
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o600
    for suffix in ('-wal', '-shm'):
        side = Path(str(path) + suffix)
        if side.exists():
            assert (side.stat().st_mode & 0o077) == 0
    shared = tmp_path / 'shared.db'
    flow = seq.Sequent('mode', store=str(shared), run_id='r1',
                       config=config(tmp_path, task_construct='thread', store_mode=0o640))
    flow.add_step('a', func=print, args=('',))
    assert flow.run()
    assert (shared.stat().st_mode & 0o777) == 0o640


def test_a_store_whose_first_run_died_before_its_tables_reads_as_empty(tmp_path):
    """A coordinator killed right after creating the store file leaves an empty database: no runs,
    not an error, and reading it still creates nothing."""
    path = tmp_path / 'store.db'
    path.touch()
    assert seq.list_runs(str(path)) == []
    with pytest.raises(seq.SequentError, match="no run 'r1'"):
        seq.run_tasks(str(path), 'r1')
    assert path.stat().st_size == 0


def test_a_store_whose_first_run_died_while_making_its_tables_reads_as_empty(tmp_path):
    """Tables made but no schema version written yet: no runs, and the next run completes the store."""
    from sequent.eventor.store import metadata
    import sqlalchemy as sa
    path = tmp_path / 'store.db'
    engine = sa.create_engine(f'sqlite:///{path}')
    metadata.create_all(engine)
    engine.dispose()
    assert seq.list_runs(str(path)) == []
    flow = seq.Sequent('half', store=str(path), run_id='r1', config=config(tmp_path, task_construct='thread'))
    flow.add_step('a', func=print, args=('',))
    assert flow.run()
    assert [r.run_id for r in seq.list_runs(str(path))] == ['r1']


def test_reading_a_foreign_or_empty_postgresql_database_changes_nothing(postgres_database):
    import sqlalchemy as sa
    assert seq.list_runs(postgres_database) == []  # empty: no runs, and no tables made
    engine = sa.create_engine(postgres_database)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
            conn.execute(sa.text('CREATE TABLE customers (id integer)'))
            conn.commit()
        with pytest.raises(seq.SequentError, match='not a sequent store'):
            seq.list_runs(postgres_database)
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == ['customers']
    finally:
        engine.dispose()


def test_a_missing_postgresql_database_is_a_clear_error(postgres_url, tmp_path):
    import sqlalchemy as sa
    url = sa.engine.make_url(postgres_url).set(database='no_such_db').render_as_string(hide_password=False)
    flow = seq.Sequent('nodb', store=url, config=config(tmp_path, task_construct='thread'))
    flow.add_step('a', func=print)
    with pytest.raises(seq.SequentError, match='refused this login or database name') as info:
        flow.run()
    assert 'sequent:***@' in str(info.value) or '***' in str(info.value)


def test_a_databases_entry_with_a_bad_port_is_a_clear_error(tmp_path):
    cfg = config(tmp_path, task_construct='thread',
                 DATABASES={'flows': {'dialect': 'postgresql', 'host': '127.0.0.1', 'port': 'abc', 'database': 'x'}})
    flow = seq.Sequent('url', store='flows', config=cfg)
    flow.add_step('a', func=print)
    with pytest.raises(seq.SequentError, match="DATABASES entry 'flows' does not make a valid URL"):
        flow.run()
