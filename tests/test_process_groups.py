"""Nothing a process task starts outlives it.

Every task child leads a process group of its own, and every way a task ends or is stopped reaches
that whole group: the task ending by itself, ``signal_tasks``, ``stop`` (SIGTERM, then SIGKILL at the
deadline), the launcher being SIGKILLed (by ``stop`` or by anyone), and the coordinator ending by
SIGTERM or SIGKILL.  Tasks here start ``sleep`` in the background (not waited for) and in the
foreground (waited for); a test passes when no process of the task's group is left alive.
A zombie is not alive: it has ended, only its parent has not reaped it (init may reap late here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from guard import alarm
from procs import group_alive, is_alive, proc_stat, wait_for
from sequent.eventor import launcher as launcher_mod
from sequent.eventor.launcher import ProcessLauncher

REPO = Path(__file__).resolve().parents[1]
GONE_WITHIN = 10.0        # seconds a process that was killed gets to be seen gone
TEST_LIMIT = 60           # seconds any one test may take (guard.alarm)
LONG = '300'              # seconds the programs the tasks start would run if nothing ended them
IGNORE_TERM = ['sh', '-c', f'trap "" TERM; sleep {LONG}']   # sleep inherits the ignored SIGTERM
STARTED: list[dict] = []  # the pids tasks reported, for clean_up() should a test fail


# --------------------------------------------------------------------------------------------
# The task body (inherited by the launcher through fork)


def write_json(path: str, data: dict) -> None:
    """Write a file whole (through a rename), so a reader never sees it half-written."""
    with open(path + '.tmp', 'w') as f:
        json.dump(data, f)
    os.rename(path + '.tmp', path)


def run_child(step_index: int, sequence: tuple, payload: dict) -> tuple[str, str, str, str]:
    """Start programs as told, report their pids through payload['ready'], then wait or return."""
    do = payload['do']
    if do == 'group':
        return ('success', f'{os.getpid()} {os.getpgrp()} {os.getsid(0)}', '', '')
    if payload.get('ignore_term'):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    bg_cmd = IGNORE_TERM if payload.get('bg_ignores_term') else ['sleep', LONG]
    bg = subprocess.Popen(bg_cmd, start_new_session=do == 'new_session')
    fg = subprocess.Popen(['sleep', LONG]) if do == 'foreground' else None
    write_json(payload['ready'], {'task': os.getpid(), 'bg': bg.pid, 'fg': fg.pid if fg else None})
    if fg is not None:
        fg.wait()
        return ('success', 'foreground program ended', '', '')
    return ('success', 'left a program running', '', '')


# --------------------------------------------------------------------------------------------
# Helpers


def wait_until(condition: Callable[[], bool], what: str, timeout: float = GONE_WITHIN) -> None:
    """Poll ``condition`` (the death of a process that is not our child gives no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f'{what}: not within {timeout} s')
        time.sleep(0.01)


def wait_ready(path: Path, timeout: float = 20.0) -> dict:
    """The pids a task wrote once its programs had started."""
    wait_until(path.exists, f'{path} written', timeout)
    pids = json.loads(path.read_text())
    STARTED.append(pids)
    return pids


def clean_up() -> None:
    """Kill the programs a failed test left running: those reported, and their task's group's."""
    while STARTED:
        pids = STARTED.pop()
        for pid in {pids.get('bg'), pids.get('fg')} | group_alive(pids['task']):
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as f:
                    cmdline = f.read()
                ours = b'sleep' in cmdline and LONG.encode() in cmdline    # sleep, or sh running it
                if ours and is_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, TypeError):
                pass


def assert_all_gone(pids: dict, timeout: float = GONE_WITHIN) -> None:
    """The task's process, its programs and anything else of its group end within ``timeout``."""
    procs = {pid for pid in pids.values() if pid}
    wait_until(lambda: not any(is_alive(p) for p in procs) and not group_alive(pids['task']),
               f'the processes of task group {pids["task"]} ({pids}) gone '
               f'(alive: {[p for p in procs if is_alive(p)]} + group {group_alive(pids["task"])})', timeout)


def our_children() -> list[int]:
    """Pids of the processes (zombies included) whose parent is this one."""
    me = os.getpid()
    return [int(e) for e in os.listdir('/proc') if e.isdigit() and (proc_stat(int(e)) or ('', 0))[1] == me]


@pytest.fixture
def launcher(mode: str):
    """A started launcher, stopped afterwards; the test must not outlive TEST_LIMIT."""
    lau = ProcessLauncher(run_child)
    lau.start()
    try:
        with alarm(TEST_LIMIT, 'the test'):
            yield lau
    finally:
        lau.stop(grace=1.0)
        clean_up()
    assert our_children() == []


# --------------------------------------------------------------------------------------------
# With a real launcher


def test_every_task_leads_a_process_group_of_its_own(launcher: ProcessLauncher) -> None:
    groups = []
    for i in range(3):      # the first task gets a fresh child, the next ones the spare
        launcher.launch(i, 0, (), {'do': 'group'})
        (c,) = wait_for(launcher, 1)
        pid, pgrp, sid = map(int, c.result.split())
        assert pid == c.pid == pgrp, c
        assert sid == os.getsid(0)          # still in the coordinator's session
        groups.append(pgrp)
    assert os.getpgrp() not in groups and len(set(groups)) == 3


@pytest.mark.parametrize('bg_ignores_term', [False, True])
def test_a_program_left_running_by_a_finished_task_is_killed_and_reaped(
        launcher: ProcessLauncher, tmp_path: Path, bg_ignores_term: bool) -> None:
    ready = tmp_path / 'ready'
    launcher.launch(1, 0, (), {'do': 'background', 'ready': str(ready), 'bg_ignores_term': bg_ignores_term})
    (c,) = wait_for(launcher, 1)
    assert (c.status, c.result, c.exitcode) == ('success', 'left a program running', 0)   # as before
    pids = wait_ready(ready)
    assert_all_gone(pids)
    launcher.stop()
    assert proc_stat(pids['bg']) is None        # reaped too, not left a zombie


def test_signal_tasks_reaches_the_programs_a_task_started(launcher: ProcessLauncher, tmp_path: Path) -> None:
    ready = tmp_path / 'ready'
    launcher.launch(1, 0, (), {'do': 'foreground', 'ready': str(ready)})
    pids = wait_ready(ready)
    launcher.signal_tasks(signal.SIGTERM)
    (c,) = wait_for(launcher, 1)
    assert c.status == 'failure' and c.signal == signal.SIGTERM and c.pid == pids['task']
    assert_all_gone(pids)


def test_stop_terminates_the_programs_a_task_started(launcher: ProcessLauncher, tmp_path: Path) -> None:
    ready = tmp_path / 'ready'
    launcher.launch(1, 0, (), {'do': 'foreground', 'ready': str(ready)})
    pids = wait_ready(ready)
    t0 = time.monotonic()
    (c,) = launcher.stop(grace=30.0)
    assert time.monotonic() - t0 < 10            # SIGTERM did it: no wait for the grace
    assert c.signal == signal.SIGTERM
    assert_all_gone(pids, timeout=0.5)
    assert proc_stat(pids['bg']) is None and proc_stat(pids['fg']) is None    # and all reaped


def test_stop_sigkills_the_whole_group_at_the_deadline(launcher: ProcessLauncher, tmp_path: Path) -> None:
    ready = tmp_path / 'ready'
    launcher.launch(1, 0, (), {'do': 'foreground', 'ready': str(ready), 'ignore_term': True,
                               'bg_ignores_term': True})
    pids = wait_ready(ready)
    t0 = time.monotonic()
    (c,) = launcher.stop(grace=0.5)
    assert 0.4 < time.monotonic() - t0 < 10
    assert c.signal == signal.SIGKILL and c.pid == pids['task']
    assert_all_gone(pids)


def test_sigkill_of_the_launcher_kills_the_programs_of_its_tasks(launcher: ProcessLauncher,
                                                                  tmp_path: Path) -> None:
    ready = [tmp_path / 'r1', tmp_path / 'r2']
    launcher.launch(1, 0, (), {'do': 'foreground', 'ready': str(ready[0])})
    launcher.launch(2, 0, (), {'do': 'background', 'ready': str(ready[1]), 'bg_ignores_term': True})
    running, finished = wait_ready(ready[0]), wait_ready(ready[1])
    assert {c.task_id for c in wait_for(launcher, 1)} == {2}   # its program killed by the launcher...
    assert_all_gone(finished)
    os.kill(launcher.pid, signal.SIGKILL)                       # ...and now the launcher is gone at once
    (c,) = wait_for(launcher, 1)
    assert c.task_id == 1 and c.status == 'failure' and c.signal == signal.SIGKILL
    assert "launcher process 'sequent-launcher' was killed by signal 9 (SIGKILL)" in c.error
    assert_all_gone(running)        # the keeper killed the group the launcher's death left behind
    launcher.stop()
    assert all(proc_stat(pid) is None for pid in running.values())    # all reaped, none left to init


def test_stop_sigkills_an_unresponsive_launcher_and_the_programs_of_its_tasks(
        launcher: ProcessLauncher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher_mod, '_STOP_MARGIN', 0.5)
    ready = tmp_path / 'ready'
    launcher.launch(1, 0, (), {'do': 'foreground', 'ready': str(ready)})
    pids = wait_ready(ready)
    os.kill(launcher.pid, signal.SIGSTOP)      # the launcher no longer answers; its tasks still run
    (c,) = launcher.stop(grace=0.0)
    assert c.status == 'failure' and c.signal == signal.SIGKILL and 'task lost' in c.error
    assert_all_gone(pids)


def test_a_program_started_in_a_new_session_is_left_alone(launcher: ProcessLauncher, tmp_path: Path) -> None:
    ready = tmp_path / 'ready'
    launcher.launch(1, 0, (), {'do': 'new_session', 'ready': str(ready)})
    (c,) = wait_for(launcher, 1)
    pids = wait_ready(ready)
    try:
        assert c.status == 'success'
        wait_until(lambda: not is_alive(pids['task']), 'the task process ended')
        assert is_alive(pids['bg'])      # it left the task's group on purpose (as a daemon does)
    finally:
        os.kill(pids['bg'], signal.SIGKILL)     # (not our child: the keeper or init reaps it)


def test_signals_sent_right_after_start_do_not_kill_keeper_or_launcher(mode: str) -> None:
    with alarm(TEST_LIMIT, 'the test'):
        for attempt in range(15):
            lau = ProcessLauncher(run_child)
            lau.start()
            try:
                os.kill(lau.keeper_pid, signal.SIGINT)    # the keeper exists as start() returns
                os.kill(lau.keeper_pid, signal.SIGTERM)
                os.kill(lau.pid, signal.SIGINT)           # the launcher, as soon as its pid is known
                os.kill(lau.pid, signal.SIGTERM)          # (what a signal to the whole group does)
                lau.launch(1, 0, (), {'do': 'group'})
                (c,) = wait_for(lau, 1)
                assert c.status == 'success' and lau.alive, (attempt, c)
            finally:
                lau.stop(grace=1.0)
            assert our_children() == []


# --------------------------------------------------------------------------------------------
# With a real coordinator (a flow run by the engine in a child process)


COORDINATOR = '''
import json, os, subprocess, sys
sys.path.insert(0, {repo!r})
import sequent as seq

READY, STORE, LOGDIR = sys.argv[1:4]

def spawner():
    bg = subprocess.Popen(['sleep', '300'])
    fg = subprocess.Popen(['sleep', '300'])
    with open(READY + '.tmp', 'w') as f:
        json.dump({{'task': os.getpid(), 'bg': bg.pid, 'fg': fg.pid, 'launcher': os.getppid()}}, f)
    os.rename(READY + '.tmp', READY)
    fg.wait()

flow = seq.Sequent(name='groups', store=STORE, config={{'task_construct': 'process', 'shutdown_grace': 5.0,
                   'LOGGING': {{'logdir': LOGDIR, 'console': False}}}})
flow.add_step('spawner', func=spawner)
sys.exit(0 if flow.run() else 1)
'''


@pytest.fixture
def coordinator(tmp_path: Path):
    """Start a coordinator running one process task that starts two programs; yield (proc, pids)."""
    script = tmp_path / 'coordinator.py'
    script.write_text(COORDINATOR.format(repo=str(REPO)))
    ready = tmp_path / 'ready'
    proc = subprocess.Popen([sys.executable, str(script), str(ready), str(tmp_path / 'store.db'),
                             str(tmp_path / 'logs')], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    pids: dict = {}
    try:
        with alarm(TEST_LIMIT, 'the test'):
            pids.update(wait_ready(ready, timeout=30))
            yield proc, pids
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        proc.stderr.close()
        clean_up()


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_to_the_coordinator_ends_the_programs_of_running_tasks(coordinator, signum: int) -> None:
    proc, pids = coordinator
    os.kill(proc.pid, signum)
    assert proc.wait(timeout=20) == -signum
    assert_all_gone(pids)
    wait_until(lambda: not is_alive(pids['launcher']), 'the launcher ended')


def test_sigkill_to_the_coordinators_whole_group_ends_the_programs_of_running_tasks(coordinator) -> None:
    proc, pids = coordinator
    os.killpg(proc.pid, signal.SIGKILL)     # coordinator and launcher at once: the keeper is left
    assert proc.wait(timeout=20) == -signal.SIGKILL
    assert_all_gone(pids)
