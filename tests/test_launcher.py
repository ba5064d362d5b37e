"""Tests of the process runner (sequent.eventor.launcher): protocol, failures, reaping, orphans."""

from __future__ import annotations

import faulthandler
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from procs import wait_for
from sequent.eventor.launcher import ProcessLauncher

REPO = Path(__file__).resolve().parents[1]
BIG_SIZE = 3 * 1024 * 1024 + 17
LOCK = threading.Lock()     # taken by a coordinator thread after start(): tasks never see it taken


def big_text(size: int = BIG_SIZE, seed: int = 0) -> str:
    """A large text whose every position is checkable."""
    unit = ''.join(chr(0x41 + (seed + i) % 26) for i in range(26)) + 'é€\n'
    return (unit * (size // len(unit) + 1))[:size]


def mark_ready(payload: dict) -> None:
    """Tell the test (through a file holding our pid) that the task is running."""
    path = payload.get('ready')
    if path:
        with open(path + '.tmp', 'w') as f:
            f.write(str(os.getpid()))
        os.rename(path + '.tmp', path)


def run_child(step_index: int, sequence: tuple, payload: dict) -> tuple[str, str, str, str]:
    """The task body of these tests, inherited by the launcher through fork."""
    do = payload['do']
    if do == 'return':
        return ('success', payload['value'], '', '')
    if do == 'args':
        return ('success', repr((step_index, sequence, payload.get('x'))), '', '')
    if do == 'fail':
        return ('failure', '', 'told to fail', 'no traceback')
    if do == 'raise':
        raise ValueError('boom from task')
    if do == 'exit':
        os._exit(payload['code'])
    if do == 'sysexit':
        sys.exit(payload['code'])
    if do == 'signal':
        faulthandler.disable()              # keep pytest's crash dump out of the test output
        os.kill(os.getpid(), payload['sig'])
        time.sleep(10)
        return ('success', 'signal did not kill', '', '')
    if do == 'sleep':
        mark_ready(payload)
        time.sleep(payload['secs'])
        return ('success', 'slept', '', '')
    if do == 'ignore_term':
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        mark_ready(payload)
        time.sleep(payload['secs'])
        return ('success', 'slept through SIGTERM', '', '')
    if do == 'big':
        return ('success', big_text(payload.get('size', BIG_SIZE), payload.get('seed', 0)), '', '')
    if do == 'print':
        print(payload['text'], end='')      # not flushed: the child must flush before os._exit
        return ('success', 'printed', '', '')
    if do == 'lock':
        acquired = LOCK.acquire(timeout=5)
        return ('success', f'acquired={acquired}', '', '')
    if do == 'invalid':
        return 'not a tuple'  # type: ignore[return-value]
    raise AssertionError(f'unknown payload {payload!r}')


# --------------------------------------------------------------------------------------------
# Helpers


def wait_file(path: Path, timeout: float = 20.0) -> int:
    """Wait until a task wrote its ready file; return the pid in it."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f'{path} did not appear within {timeout}s')
        time.sleep(0.01)
    return int(path.read_text())


def proc_state(pid: int) -> str | None:
    """The State letter of a process, or None when it does not exist."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    match = re.search(r'^State:\s+(\S)', status, re.M)
    return match.group(1) if match else None


def wait_ended(pid: int, timeout: float = 10.0) -> None:
    """Wait until a process no longer runs (absent, or a zombie waiting for init to reap it)."""
    deadline = time.monotonic() + timeout
    while proc_state(pid) not in (None, 'Z'):
        if time.monotonic() > deadline:
            pytest.fail(f'process {pid} still exists (state {proc_state(pid)}) after {timeout}s')
        time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    """Pids of all processes (zombies included) whose parent is ``pid``."""
    kids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            status = Path(f'/proc/{entry}/status').read_text()
        except OSError:
            continue
        match = re.search(r'^PPid:\s+(\d+)', status, re.M)
        if match and int(match.group(1)) == pid:
            kids.append(int(entry))
    return kids


def pidfds_of(pid: int) -> int:
    """How many pidfds a process holds."""
    count = 0
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            if 'pidfd' in os.readlink(f'/proc/{pid}/fd/{fd}'):
                count += 1
        except OSError:
            pass
    return count


@pytest.fixture
def launcher(mode: str):
    """A started launcher; afterwards it is stopped and must have left no process behind."""
    lau = ProcessLauncher(run_child)
    lau.start()
    pid = lau.pid
    try:
        yield lau
    finally:
        lau.stop(grace=1.0)
    assert proc_state(pid) is None
    assert children_of(os.getpid()) == []


# --------------------------------------------------------------------------------------------
# Outcomes


def test_success_and_arguments(launcher: ProcessLauncher) -> None:
    launcher.launch(7, 3, ('a', 1), {'do': 'args', 'x': [1, 2]})
    (c,) = wait_for(launcher, 1)
    assert c.task_id == 7 and c.status == 'success'
    assert c.result == repr((3, ('a', 1), [1, 2]))
    assert c.error == '' and c.traceback == ''
    assert c.exitcode == 0 and c.signal is None
    assert c.pid > 0 and c.pid not in (os.getpid(), launcher.pid)
    assert launcher.running == 0


def test_failure_returned_by_run_child(launcher: ProcessLauncher) -> None:
    launcher.launch(1, 0, (), {'do': 'fail'})
    (c,) = wait_for(launcher, 1)
    assert (c.status, c.error, c.traceback, c.exitcode) == ('failure', 'told to fail', 'no traceback', 0)


def test_exception_is_a_failure_with_traceback(launcher: ProcessLauncher) -> None:
    launcher.launch(1, 0, (), {'do': 'raise'})
    (c,) = wait_for(launcher, 1)
    assert c.status == 'failure'
    assert c.error == 'ValueError: boom from task'
    assert 'Traceback' in c.traceback and 'run_child' in c.traceback and 'boom from task' in c.traceback
    assert c.exitcode == 0


def test_invalid_outcome_is_a_failure(launcher: ProcessLauncher) -> None:
    launcher.launch(1, 0, (), {'do': 'invalid'})
    (c,) = wait_for(launcher, 1)
    assert c.status == 'failure'
    assert c.error == "TypeError: run_child returned an invalid outcome: 'not a tuple'"
    assert 'Traceback' in c.traceback


@pytest.mark.parametrize('code, status',
                         [(0, 'success'), (None, 'success'), (2, 'failure'), ('bye', 'failure')])
def test_system_exit(launcher: ProcessLauncher, code: object, status: str) -> None:
    launcher.launch(1, 0, (), {'do': 'sysexit', 'code': code})
    (c,) = wait_for(launcher, 1)
    assert c.status == status
    if status == 'failure':
        assert c.error.startswith('SystemExit') and 'Traceback' in c.traceback
    else:
        assert c.error == ''


def test_exit_without_result(launcher: ProcessLauncher) -> None:
    launcher.launch(1, 0, (), {'do': 'exit', 'code': 3})
    launcher.launch(2, 0, (), {'do': 'exit', 'code': 0})
    got = {c.task_id: c for c in wait_for(launcher, 2)}
    assert got[1].status == 'failure' and got[1].exitcode == 3 and got[1].signal is None
    assert got[1].error == 'task process exited with code 3 without a result'
    assert got[2].status == 'failure' and got[2].exitcode == 0
    assert got[2].error == 'task process exited with code 0 without a result'


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_killed_by_signal_without_result(launcher: ProcessLauncher, sig: int) -> None:
    launcher.launch(1, 0, (), {'do': 'signal', 'sig': int(sig)})
    (c,) = wait_for(launcher, 1)
    assert c.status == 'failure' and c.signal == sig and c.exitcode is None
    assert c.error == f'task process was killed by signal {int(sig)} ({sig.name}) without a result'


def test_closure_run_child_is_inherited(mode: str) -> None:
    secret = object()
    lau = ProcessLauncher(lambda i, seq, p: ('success', f'{id(secret)}:{i}:{seq}', '', ''))
    with lau:
        lau.launch(5, 2, ('s',), {})
        (c,) = wait_for(lau, 1)
    assert c.result == f"{id(secret)}:2:('s',)"
    assert children_of(os.getpid()) == []


# --------------------------------------------------------------------------------------------
# Volume


def test_many_tasks_complete_exactly_once(launcher: ProcessLauncher) -> None:
    n = 200
    for i in range(n):
        launcher.launch(i, i % 5, (i,), {'do': 'return', 'value': f'value-{i}'})
    assert launcher.running == n
    got = wait_for(launcher, n, timeout=60)
    assert sorted(c.task_id for c in got) == list(range(n))
    assert all(c.status == 'success' and c.result == f'value-{c.task_id}' for c in got)
    assert len({c.pid for c in got}) == n
    assert launcher.running == 0
    time.sleep(0.2)
    assert launcher.collect() == []


def test_big_results_intact(launcher: ProcessLauncher) -> None:
    for i in range(4):
        launcher.launch(i, 0, (), {'do': 'big', 'seed': i, 'size': BIG_SIZE + i})
    launcher.launch(99, 0, (), {'do': 'return', 'value': 'small'})
    got = {c.task_id: c for c in wait_for(launcher, 5)}
    for i in range(4):
        assert got[i].status == 'success'
        assert len(got[i].result) == BIG_SIZE + i
        assert got[i].result == big_text(BIG_SIZE + i, i)
    assert got[99].result == 'small'


def test_big_payload_to_the_task(launcher: ProcessLauncher) -> None:
    value = big_text(2 * 1024 * 1024, 3)
    launcher.launch(1, 0, (), {'do': 'return', 'value': value})
    (c,) = wait_for(launcher, 1)
    assert c.result == value


def test_collect_does_not_block(launcher: ProcessLauncher, tmp_path: Path) -> None:
    launcher.launch(1, 0, (), {'do': 'sleep', 'secs': 60, 'ready': str(tmp_path / 'r')})
    wait_file(tmp_path / 'r')
    t0 = time.monotonic()
    assert launcher.collect() == []
    assert time.monotonic() - t0 < 0.5
    assert launcher.running == 1


def test_task_output_is_flushed_once(mode: str, capfd: pytest.CaptureFixture[str]) -> None:
    print('coordinator-buffered|', end='')      # unflushed at start(): must not be duplicated
    with ProcessLauncher(run_child) as lau:
        for i in range(3):
            lau.launch(i, 0, (), {'do': 'print', 'text': f'<task-{i}>'})
        wait_for(lau, 3)
    out = capfd.readouterr().out
    assert out.count('coordinator-buffered|') == 1
    for i in range(3):
        assert out.count(f'<task-{i}>') == 1


# --------------------------------------------------------------------------------------------
# Signals, stopping, reaping


def test_signal_tasks_interrupts_with_keyboard_interrupt(launcher: ProcessLauncher, tmp_path: Path) -> None:
    for i in range(2):
        launcher.launch(i, 0, (), {'do': 'sleep', 'secs': 60, 'ready': str(tmp_path / f'r{i}')})
    for i in range(2):
        wait_file(tmp_path / f'r{i}')
    launcher.signal_tasks(signal.SIGINT)
    got = wait_for(launcher, 2)
    for c in got:
        assert c.status == 'failure' and c.error == 'KeyboardInterrupt'
        assert 'time.sleep' in c.traceback and c.exitcode == 0


def test_stop_terminates_running_tasks(launcher: ProcessLauncher, tmp_path: Path) -> None:
    pids = []
    launcher.launch(10, 0, (), {'do': 'return', 'value': 'done'})
    with selectors.DefaultSelector() as sel:      # finished, but left uncollected
        sel.register(launcher.fileno(), selectors.EVENT_READ)
        assert sel.select(30)
    for i in range(3):
        launcher.launch(i, 0, (), {'do': 'sleep', 'secs': 60, 'ready': str(tmp_path / f'r{i}')})
    for i in range(3):
        pids.append(wait_file(tmp_path / f'r{i}'))
    launcher_pid = launcher.pid
    t0 = time.monotonic()
    got = {c.task_id: c for c in launcher.stop(grace=5.0)}
    assert time.monotonic() - t0 < 4.0
    assert sorted(got) == [0, 1, 2, 10]
    assert got[10].status == 'success' and got[10].result == 'done'
    for i in range(3):
        assert got[i].status == 'failure' and got[i].signal == signal.SIGTERM
        assert got[i].error == 'task process was killed by signal 15 (SIGTERM) without a result'
    assert sorted(got[i].pid for i in range(3)) == sorted(pids)
    for pid in pids + [launcher_pid]:
        assert proc_state(pid) is None
    assert children_of(os.getpid()) == []
    assert launcher.running == 0
    assert launcher.stop() == [] and launcher.collect() == []


def test_stop_kills_tasks_that_ignore_sigterm(launcher: ProcessLauncher, tmp_path: Path) -> None:
    launcher.launch(1, 0, (), {'do': 'ignore_term', 'secs': 60, 'ready': str(tmp_path / 'r')})
    pid = wait_file(tmp_path / 'r')
    t0 = time.monotonic()
    (c,) = launcher.stop(grace=0.5)
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 4.0
    assert c.status == 'failure' and c.signal == signal.SIGKILL and c.pid == pid
    assert proc_state(pid) is None
    assert children_of(os.getpid()) == []


def test_stop_returns_uncollected_completions(launcher: ProcessLauncher) -> None:
    launcher.launch(1, 0, (), {'do': 'return', 'value': 'v'})
    with selectors.DefaultSelector() as sel:
        sel.register(launcher.fileno(), selectors.EVENT_READ)
        assert sel.select(30)
    (c,) = launcher.stop()
    assert c.task_id == 1 and c.result == 'v'


def test_lifecycle_errors(mode: str) -> None:
    lau = ProcessLauncher(run_child)
    with pytest.raises(RuntimeError):
        lau.launch(1, 0, (), {'do': 'return', 'value': ''})
    assert lau.collect() == []
    lau.start()
    pid = lau.pid
    lau.start()
    assert lau.pid == pid and lau.alive
    lau.launch(1, 0, (), {'do': 'sleep', 'secs': 60})
    with pytest.raises(ValueError):
        lau.launch(1, 0, (), {'do': 'return', 'value': ''})
    (c,) = lau.stop(grace=0.2)
    assert c.status == 'failure'
    assert lau.stop() == [] and not lau.alive
    with pytest.raises(RuntimeError):
        lau.launch(2, 0, (), {'do': 'return', 'value': ''})
    with pytest.raises(RuntimeError):
        lau.start()
    assert children_of(os.getpid()) == []
    assert ProcessLauncher(run_child).stop() == []


def test_watches_children_with_pidfds_or_sigchld(launcher: ProcessLauncher, mode: str,
                                                 tmp_path: Path) -> None:
    launcher.launch(1, 0, (), {'do': 'sleep', 'secs': 60, 'ready': str(tmp_path / 'r')})
    wait_file(tmp_path / 'r')
    launcher.launch(2, 0, (), {'do': 'return', 'value': ''})
    wait_for(launcher, 1)       # the launcher has handled task 1 completely by now
    # one pidfd for the running task, one for the spare child forked ahead for the next task
    assert pidfds_of(launcher.pid) == (2 if mode == 'pidfd' else 0)


def test_launcher_death_fails_running_tasks(launcher: ProcessLauncher, tmp_path: Path) -> None:
    launcher.launch(1, 0, (), {'do': 'sleep', 'secs': 60, 'ready': str(tmp_path / 'r')})
    task_pid = wait_file(tmp_path / 'r')
    os.kill(launcher.pid, signal.SIGKILL)
    (c,) = wait_for(launcher, 1)
    assert c.task_id == 1 and c.status == 'failure'
    assert c.signal == signal.SIGKILL and c.exitcode is None
    assert "launcher process 'sequent-launcher' was killed by signal 9 (SIGKILL)" in c.error
    assert not launcher.alive and launcher.running == 0
    wait_ended(task_pid, timeout=5)           # the task dies with its launcher (parent-death signal)
    launcher.launch(2, 0, (), {'do': 'return', 'value': 'x'})
    (c2,) = wait_for(launcher, 1)
    assert c2.task_id == 2 and c2.status == 'failure' and 'not started' in c2.error
    assert launcher.stop() == []


def test_launcher_ignores_sigint(launcher: ProcessLauncher) -> None:
    os.kill(launcher.pid, signal.SIGINT)
    launcher.launch(1, 0, (), {'do': 'return', 'value': 'still here'})
    (c,) = wait_for(launcher, 1)
    assert c.result == 'still here' and launcher.alive


COORDINATOR_SCRIPT = '''
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from sequent.eventor import launcher as launcher_mod
from sequent.eventor.launcher import ProcessLauncher
launcher_mod._USE_PIDFD = {use_pidfd!r}

def run_child(step_index, sequence, payload):
    if {ignore_term!r}:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(os.getpid(), flush=True)
    time.sleep(60)
    return ('success', '', '', '')

lau = ProcessLauncher(run_child)
lau.start()
print(lau.pid, flush=True)
lau.launch(1, 0, (), {{}})
time.sleep(120)
'''


def test_dead_coordinator_takes_launcher_and_tasks_along(mode: str, tmp_path: Path) -> None:
    script = tmp_path / 'coordinator.py'
    script.write_text(COORDINATOR_SCRIPT.format(repo=str(REPO), use_pidfd=mode == 'pidfd', ignore_term=False))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        launcher_pid = int(proc.stdout.readline())
        task_pid = int(proc.stdout.readline())
        assert proc_state(launcher_pid) not in (None, 'Z')
        assert proc_state(task_pid) not in (None, 'Z')
        proc.kill()
        proc.wait(timeout=10)
        t0 = time.monotonic()
        wait_ended(task_pid, timeout=8)
        wait_ended(launcher_pid, timeout=8)
        assert time.monotonic() - t0 < 8
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_tasks_do_not_see_coordinator_threads(launcher: ProcessLauncher) -> None:
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with LOCK:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert held.wait(10)
        launcher.launch(1, 0, (), {'do': 'lock'})
        (c,) = wait_for(launcher, 1)
        assert c.result == 'acquired=True'      # forked from the launcher, not from this process
    finally:
        release.set()
        thread.join()


def test_dead_coordinator_sigkills_tasks_that_ignore_sigterm(tmp_path: Path) -> None:
    script = tmp_path / 'coordinator.py'
    script.write_text(COORDINATOR_SCRIPT.format(repo=str(REPO), use_pidfd=True, ignore_term=True))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        launcher_pid = int(proc.stdout.readline())
        task_pid = int(proc.stdout.readline())
        proc.kill()
        proc.wait(timeout=10)
        t0 = time.monotonic()
        time.sleep(2)
        assert proc_state(task_pid) not in (None, 'Z')   # SIGTERM ignored: still in its grace period
        wait_ended(task_pid, timeout=15)
        wait_ended(launcher_pid, timeout=5)
        assert 4 < time.monotonic() - t0 < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
