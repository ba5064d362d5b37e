"""Crash safety and signals, with the coordinator as a real child process (tests/crashflow.py).

A. A coordinator SIGKILLed at any instant leaves a store from which recovery reruns only what had not
   succeeded, and none of its processes (launcher, tasks) survives it.
B. A task of a dead coordinator does not run on unattended.
C. SIGTERM stops a run: nothing new starts, running tasks get SIGTERM (SIGKILL after shutdown_grace)
   and are recorded, the coordinator dies of SIGTERM, the run is 'interrupted' and recoverable.
D. SIGINT: the same stop, then KeyboardInterrupt out of run().
E. Thread tasks cannot be killed: after shutdown_grace they are recorded as abandoned.
Also: SIGTERM at random instants of the big flow, and signals sent to the whole process group.
Tasks journal 'start'/'done' lines (tests/crashflow.py), which the store's history is checked against.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import sequent as seq
from procs import all_pids, group_alive, is_alive, proc_stat

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / 'crashflow.py'
RUN_ID = 'crash-run'
STEP_SLEEP = 0.02          # seconds each step of the big flow sleeps
KILL_SEEDS = range(16)
TERM_SEEDS = range(6)
CONTAINERS = {'c', 'c2'}
GONE_WITHIN = 8.0          # seconds the killed run's processes get to end


# --------------------------------------------------------------------------------------------- helpers


@dataclass
class Line:
    kind: str              # start or done
    step: str
    sequence: str
    attempt: int
    pid: int
    ppid: int = 0
    time: float = 0.0


class Flow:
    """One flow's files under tmp_path and the coordinators started for it."""

    def __init__(self, tmp_path: Path, kind: str, name: str = 'flow'):
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.kind = kind
        self.store = str(self.dir / 'store.db')
        self.journal = self.dir / 'journal'
        self.procs: list[subprocess.Popen] = []

    def start(self, mode: str = 'restart', sleep: float = STEP_SLEEP, grace: float = 10.0,
              **extra_env: str) -> subprocess.Popen:
        env = {**os.environ, 'PYTHONPATH': str(REPO), **extra_env}
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), self.kind, mode, self.store, RUN_ID, str(self.journal),
             str(self.dir / 'logs'), str(sleep), str(grace)],
            cwd=self.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, mode: str = 'restart', sleep: float = STEP_SLEEP, grace: float = 10.0,
            timeout: float = 30) -> subprocess.CompletedProcess:
        proc = self.start(mode, sleep, grace)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def lines(self, kind: str | None = None, attempt: int | None = None) -> list[Line]:
        if not self.journal.exists():
            return []
        found = []
        for text in self.journal.read_text().splitlines():
            f = text.split()
            if f[0] == 'start':
                line = Line(f[0], f[1], f[2], int(f[3]), int(f[4]), int(f[5]), float(f[6]))
            else:
                line = Line(f[0], f[1], f[2], int(f[3]), int(f[4]))
            if (kind is None or line.kind == kind) and (attempt is None or line.attempt == attempt):
                found.append(line)
        return found

    def wait_for_lines(self, kind: str, count: int, timeout: float = 15) -> list[Line]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.lines(kind)
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(f'{count} {kind!r} lines expected in the journal within {timeout} s, got '
                             f'{self.lines(kind)}; stderr: {self.stderr()}')

    def stderr(self) -> str:
        texts = []
        for proc in self.procs:
            if proc.poll() is not None and proc.stderr is not None and not proc.stderr.closed:
                texts.append(proc.stderr.read())
        return '\n'.join(texts)

    def tasks(self, recovery: int | None = None) -> list[seq.TaskInfo]:
        return seq.run_tasks(self.store, RUN_ID, recovery=recovery)

    def run_info(self) -> seq.RunInfo:
        [info] = [r for r in seq.list_runs(self.store) if r.run_id == RUN_ID]
        return info

    def cleanup(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def flows(tmp_path):
    made: list[Flow] = []

    def make(kind: str, name: str = 'flow') -> Flow:
        made.append(Flow(tmp_path, kind, name))
        return made[-1]

    try:
        yield make
    finally:
        for flow in made:
            flow.cleanup()


def descendants(root: int) -> set[int]:
    """Every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_gone(pids: set[int], pgrp: int | None, timeout: float) -> set[int]:
    """Wait until none of ``pids`` (nor of the group) lives; return the survivors after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids if is_alive(p)} | (group_alive(pgrp) if pgrp is not None else set())
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def wait_exit(proc: subprocess.Popen, timeout: float) -> float:
    """Wait for a coordinator to exit; return the seconds it took."""
    t0 = time.monotonic()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f'coordinator {proc.pid} still running {timeout} s later') from None
    return time.monotonic() - t0


def processing(key: tuple[str, str]) -> bool:
    return key[0] not in CONTAINERS


# --------------------------------------------------------------------------------------------- A. SIGKILL at any instant


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """A full run of the big flow: its tasks, its duration, and when its first task started."""
    flow = Flow(tmp_path_factory.mktemp('reference'), 'big')
    try:
        t0 = time.time()
        done = flow.run()
        duration = time.time() - t0
        assert done.returncode == 0, done.stderr
        keys = {(t.step, t.sequence) for t in flow.tasks()}
        assert len(keys) == 19
        first = min(line.time for line in flow.lines('start')) - t0
        return keys, first, duration
    finally:
        flow.cleanup()


def kill_delay(seed: int, first: float, duration: float, seeds: int) -> float:
    """One delay per seed, stratified over [a little before the first task, the end of the reference run]."""
    lo, hi = max(0.0, first - 0.05), duration
    width = (hi - lo) / seeds
    return lo + width * (seed + random.Random(seed).random())


def signal_at(flow: Flow, signum: int, delay: float) -> tuple[subprocess.Popen, set[int], float]:
    """Start the big flow, send ``signum`` to its coordinator ``delay`` s later (unless it ended before),
    wait for the coordinator's end; return it, every pid of its run seen, and how long it took to end."""
    proc = flow.start()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    below = descendants(proc.pid)
    t0 = time.monotonic()
    if proc.poll() is None:
        os.kill(proc.pid, signum)
    else:  # the run ended before the signal was due
        assert proc.returncode == 0, flow.stderr()
    took = wait_exit(proc, 15)
    starts0 = flow.lines('start', attempt=0)
    return proc, below | {line.pid for line in starts0} | {line.ppid for line in starts0}, took


def recover_and_check(flow: Flow, keys: set, label: str) -> None:
    """Recover (or, if the run was never recorded, start) the big flow; check (1), (2) and (3)."""
    existed = Path(flow.store).exists() and any(r.run_id == RUN_ID for r in seq.list_runs(flow.store))
    if not existed:  # stopped before the run was recorded: nothing can have run; start it afresh
        assert not flow.lines(), f'{label}: tasks ran in a run the store does not know'
        rec = flow.run('restart')
        attempt = 0
    else:
        rec = flow.run('recover')
        attempt = 1
    assert rec.returncode == 0, f'{label}: recovery failed: {rec.stderr}'

    rows = flow.tasks()
    done = {(line.step, line.sequence, line.attempt) for line in flow.lines('done')}
    # (1) every task recorded as success (not skipped) ran to completion in that attempt
    for row in rows:
        if row.status == 'success' and not row.skipped and processing((row.step, row.sequence)):
            assert (row.step, row.sequence, row.recovery) in done, \
                f'{label}: {row.step}/{row.sequence} recorded success in attempt {row.recovery} but never finished there'
    if attempt == 1:
        # (2) nothing that had succeeded before the recovery ran again in it
        succeeded = {(r.step, r.sequence) for r in rows if r.recovery == 0 and r.status == 'success'}
        rerun = {(line.step, line.sequence) for line in flow.lines('start', attempt=1)}
        assert not succeeded & rerun, f'{label}: ran again although it had succeeded: {succeeded & rerun}'
        # and what had not succeeded (a task that was running included) ran again
        for row in flow.tasks(recovery=1):
            key = (row.step, row.sequence)
            if processing(key):
                assert row.skipped == (key in succeeded), f'{label}: {key} skipped={row.skipped}'
    # (3) the final attempt has every task of the flow as a success, and the run is a success
    final = {(r.step, r.sequence): r.status for r in flow.tasks(recovery=attempt)}
    assert set(final) == keys, f'{label}: missing {keys - set(final)}'
    assert set(final.values()) == {'success'}, f'{label}: {final}'
    assert flow.run_info().outcome == 'success'
    assert flow.run_info().recoveries == attempt


@pytest.mark.parametrize('seed', KILL_SEEDS)
def test_sigkill_at_any_instant_recovery_reruns_only_what_had_not_succeeded_and_nothing_survives(
        flows, reference, seed):
    keys, first, duration = reference
    delay = kill_delay(seed, first, duration, len(KILL_SEEDS))
    label = f'SIGKILL after {delay:.3f} s'
    flow = flows('big')
    proc, pids, _ = signal_at(flow, signal.SIGKILL, delay)
    # (4) nothing of the killed run survives it: launcher, tasks, anything else of its process group
    survivors = wait_gone(pids, proc.pid, GONE_WITHIN)
    assert not survivors, f'{label}: still alive {GONE_WITHIN} s later: {survivors}'
    recover_and_check(flow, keys, label)


def assert_sleepers_interrupted(flow, proc, took: float) -> None:
    """The 'sleepers' run after a signal: nothing left running, nothing new started, both
    sleeping tasks recorded as failed by SIGTERM, and the run recorded as interrupted."""
    assert wait_gone(set(), proc.pid, 5) == set()
    assert flow.lines('done') == []
    time.sleep(max(0.0, 1.6 - took))  # past the time 'late' was due
    assert sorted(l.step for l in flow.lines('start')) == ['s1', 's2']  # nothing new started
    rows = {(r.step, r.sequence): r for r in flow.tasks(recovery=0)}
    assert set(rows) == {('s1', '1'), ('s2', '1')}
    for row in rows.values():
        assert row.status == 'failure'
        assert 'signal 15' in row.error or 'SIGTERM' in row.error, row.error
    assert flow.run_info().outcome == 'interrupted'


@pytest.mark.parametrize('seed', TERM_SEEDS)
def test_sigterm_at_any_instant_ends_the_coordinator_quickly_and_the_run_recovers(flows, reference, seed):
    keys, first, duration = reference
    delay = kill_delay(seed, first, duration, len(TERM_SEEDS))
    label = f'SIGTERM after {delay:.3f} s'
    flow = flows('big')
    proc, pids, took = signal_at(flow, signal.SIGTERM, delay)
    assert proc.returncode in (0, -signal.SIGTERM), f'{label}: {flow.stderr()}'
    assert took < 5, f'{label}: the coordinator took {took:.1f} s to end'
    survivors = wait_gone(pids, proc.pid, GONE_WITHIN)
    assert not survivors, f'{label}: still alive {GONE_WITHIN} s later: {survivors}'
    recover_and_check(flow, keys, label)


# --------------------------------------------------------------------------------------------- B. orphaned tasks


def test_task_of_a_sigkilled_coordinator_is_ended_without_finishing_and_rerun_by_recovery(flows):
    flow = flows('sleepers')
    proc = flow.start(sleep=30)
    starts = flow.wait_for_lines('start', 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    pids = {line.pid for line in starts} | {line.ppid for line in starts}
    survivors = wait_gone(pids, proc.pid, 10)
    assert not survivors, f'still alive 10 s after the coordinator was SIGKILLed: {survivors}'
    assert flow.lines('done') == []
    rows = {(r.step, r.sequence): r.status for r in flow.tasks(recovery=0)}
    assert rows == {('s1', '1'): 'active', ('s2', '1'): 'active'}

    rec = flow.run('recover', sleep=0.01)
    assert rec.returncode == 0, rec.stderr
    assert sorted((l.step, l.attempt) for l in flow.lines('done')) == [('after', 1), ('late', 1), ('s1', 1),
                                                                      ('s2', 1)]
    final = {(r.step, r.sequence): (r.status, r.skipped) for r in flow.tasks(recovery=1)}
    assert final == {('s1', '1'): ('success', False), ('s2', '1'): ('success', False),
                     ('after', '1'): ('success', False), ('late', '1'): ('success', False)}


# --------------------------------------------------------------------------------------------- C. SIGTERM


def test_sigterm_stops_the_run_terminates_running_tasks_records_them_and_the_run_recovers(flows):
    flow = flows('sleepers')
    proc = flow.start(sleep=30)
    flow.wait_for_lines('start', 2)
    os.kill(proc.pid, signal.SIGTERM)
    took = wait_exit(proc, 10)
    assert proc.returncode == -signal.SIGTERM, flow.stderr()
    assert took < 5, f'coordinator took {took:.1f} s to exit after SIGTERM'
    assert_sleepers_interrupted(flow, proc, took)

    rec = flow.run('recover', sleep=0.01)
    assert rec.returncode == 0, rec.stderr
    final = {(r.step, r.sequence): r.status for r in flow.tasks(recovery=1)}
    assert final == {('s1', '1'): 'success', ('s2', '1'): 'success', ('after', '1'): 'success',
                     ('late', '1'): 'success'}
    assert flow.run_info().outcome == 'success'


def test_sigterm_kills_a_task_that_ignores_sigterm_after_the_shutdown_grace(flows):
    grace = 1.0
    flow = flows('ignorer')
    proc = flow.start(sleep=30, grace=grace)
    [start] = flow.wait_for_lines('start', 1)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    took = wait_exit(proc, grace + 10)
    assert proc.returncode == -signal.SIGTERM, flow.stderr()
    assert took < grace + 3, f'coordinator took {took:.1f} s to exit (grace {grace} s)'
    assert not wait_gone({start.pid}, proc.pid, 3)
    assert time.monotonic() - t0 >= grace * 0.9  # the task was given its grace
    assert flow.lines('done') == []
    assert [l.step for l in flow.lines('start')] == ['stubborn']
    [row] = flow.tasks(recovery=0)
    assert row.status == 'failure'
    assert 'signal 9' in row.error or 'SIGKILL' in row.error, row.error
    assert flow.run_info().outcome == 'interrupted'


def test_sigterm_lets_a_task_finish_within_the_grace_records_its_success_and_starts_nothing_after_it(flows):
    flow = flows('ignorer')
    proc = flow.start(sleep=1.0, grace=10)
    flow.wait_for_lines('start', 1)
    os.kill(proc.pid, signal.SIGTERM)
    took = wait_exit(proc, 10)
    assert proc.returncode == -signal.SIGTERM, flow.stderr()
    assert took < 4, f'coordinator took {took:.1f} s to exit after its last task ended'
    assert [(l.kind, l.step) for l in flow.lines()] == [('start', 'stubborn'), ('done', 'stubborn')]
    assert [(r.step, r.status) for r in flow.tasks(recovery=0)] == [('stubborn', 'success')]
    assert flow.run_info().outcome == 'interrupted'

    rec = flow.run('recover', sleep=0.01)
    assert rec.returncode == 0, rec.stderr
    assert [(r.step, r.status, r.skipped) for r in flow.tasks(recovery=1)] == [('stubborn', 'success', True),
                                                                             ('after', 'success', False)]
    assert [l.step for l in flow.lines('start', attempt=1)] == ['after']


def test_sigterm_to_the_whole_process_group_still_gives_running_tasks_the_shutdown_grace(flows):
    flow = flows('ignorer')
    proc = flow.start(sleep=1.0, grace=10)
    flow.wait_for_lines('start', 1)
    os.killpg(proc.pid, signal.SIGTERM)
    wait_exit(proc, 15)
    assert proc.returncode == -signal.SIGTERM, flow.stderr()
    assert [(r.step, r.status, r.error) for r in flow.tasks(recovery=0)] == [('stubborn', 'success', None)]
    assert [(l.kind, l.step) for l in flow.lines()] == [('start', 'stubborn'), ('done', 'stubborn')]


def test_sigterm_arriving_as_the_last_task_ends_still_records_how_the_run_ended(flows):
    flow = flows('ignorer')
    proc = flow.start(sleep=0.01, CRASHFLOW_SIGTERM_AFTER_LOOP='1')
    wait_exit(proc, 15)
    assert proc.returncode == -signal.SIGTERM, flow.stderr()
    assert [(r.step, r.status) for r in flow.tasks(recovery=0)] == [('stubborn', 'success'), ('after', 'success')]
    assert flow.run_info().outcome in ('success', 'interrupted')


# --------------------------------------------------------------------------------------------- D. SIGINT


def test_sigint_stops_the_run_like_sigterm_then_raises_keyboardinterrupt_from_run(flows):
    flow = flows('sleepers')
    proc = flow.start(sleep=30)
    flow.wait_for_lines('start', 2)
    os.kill(proc.pid, signal.SIGINT)
    took = wait_exit(proc, 10)
    assert proc.returncode == 130, flow.stderr()
    assert took < 5
    assert_sleepers_interrupted(flow, proc, took)


def test_ctrl_c_to_the_whole_process_group_stops_the_run_and_exits_130(flows):
    flow = flows('sleepers')
    proc = flow.start(sleep=30)
    starts = flow.wait_for_lines('start', 2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    took = wait_exit(proc, 10)
    assert proc.returncode == 130, flow.stderr()
    assert took < 5
    assert not wait_gone({line.pid for line in starts} | {line.ppid for line in starts}, proc.pid, 5)
    assert flow.lines('done') == []
    assert {(r.step, r.status) for r in flow.tasks(recovery=0)} == {('s1', 'failure'), ('s2', 'failure')}
    assert flow.run_info().outcome == 'interrupted'


# --------------------------------------------------------------------------------------------- E. thread tasks


def test_sigterm_abandons_a_running_thread_task_after_the_shutdown_grace(flows):
    grace = 1.0
    flow = flows('threads')
    proc = flow.start(sleep=30, grace=grace)
    flow.wait_for_lines('start', 1)
    os.kill(proc.pid, signal.SIGTERM)
    took = wait_exit(proc, grace + 10)
    assert proc.returncode == -signal.SIGTERM, flow.stderr()
    assert grace * 0.9 <= took < grace + 3, f'coordinator took {took:.1f} s to exit (grace {grace} s)'
    assert flow.lines('done') == []
    [row] = flow.tasks(recovery=0)
    assert row.status == 'failure'
    assert 'abandoned' in row.error, row.error
    assert flow.run_info().outcome == 'interrupted'
