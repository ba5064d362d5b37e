"""Real flows through ``sequent.Sequent``, in process and thread mode: environment, logging, failures,
dying task processes, the default store and the exit code of a script."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import sequent as seq
from sequent.eventor.dburl import resolve_store
from sequent.eventor.store import Store

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
CONSTRUCTS = ['process', 'thread']


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def make_flow(tmp_path: Path, flow_config):
    """``make_flow(construct, name='flow', **config)``: a flow with its store and logs under tmp_path."""
    def make_flow(construct: str, name: str = 'flow', **config) -> seq.Sequent:
        return seq.Sequent(name=name, store=str(tmp_path / 'store.db'),
                           config=flow_config(**{'task_construct': construct, **config}))
    return make_flow


def task_rows(tmp_path: Path, run_id: str) -> dict:
    store = Store(resolve_store(str(tmp_path / 'store.db'), {}, '')).open()
    try:
        return {(r.step, r.sequence): r for r in store.task_rows(run_id)}
    finally:
        store.close()


def run_log(tmp_path: Path, flow: seq.Sequent) -> str:
    return (tmp_path / 'logs' / f'{flow.name}-{flow.run_id}.log').read_text()


def task_log(tmp_path: Path, flow: seq.Sequent, step: str, sequence: str) -> Path:
    return tmp_path / 'logs' / f'{flow.name}-{flow.run_id}.{step}_{sequence}.log'


def my_children() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is this one, zombies included."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/status') as f:
                fields = dict(line.split(':', 1) for line in f if ':' in line)
        except OSError:
            continue
        if fields.get('PPid', '').strip() == me:
            found.append((int(entry), fields.get('State', '').strip()))
    return found


def record_env(outdir: str) -> None:
    """Write the task's SEQUENT_* variables to <outdir>/<step>_<sequence>.json."""
    env = {key: os.getenv(key) for key in ('SEQUENT_STEP_NAME', 'SEQUENT_STEP_SEQUENCE', 'SEQUENT_STEP_RECOVERY',
                                           'SEQUENT_LOGGER_NAME')}
    env['pid'] = os.getpid()
    path = Path(outdir) / f"{env['SEQUENT_STEP_NAME']}_{env['SEQUENT_STEP_SEQUENCE']}.json"
    path.write_text(json.dumps(env))


def log_through_env_logger(message: str) -> None:
    logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).info(message)


def raise_in_user_function(text: str) -> None:
    raise ValueError(text)


def succeed() -> None:
    pass


# --------------------------------------------------------------------------------------------- environment (B1.6)


@pytest.mark.parametrize('construct', CONSTRUCTS)
def test_each_task_sees_its_name_sequence_recovery_and_logger_name_in_the_environment(tmp_path, construct, make_flow):
    out = tmp_path / 'out'
    out.mkdir()
    flow = make_flow(construct, name='envflow')
    c = flow.add_step('c', repeats=[1, 2])
    c.add_step('k', func=record_env, args=(str(out),))
    flow.add_step('r', func=record_env, args=(str(out),))
    assert flow.run() is True
    got = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    assert sorted(got) == ['c_k_1.1', 'c_k_1.2', 'r_1']
    for key, (step, sequence) in {'c_k_1.1': ('c_k', '1.1'), 'c_k_1.2': ('c_k', '1.2'), 'r_1': ('r', '1')}.items():
        env = got[key]
        assert env['SEQUENT_STEP_NAME'] == step
        assert env['SEQUENT_STEP_SEQUENCE'] == sequence
        assert env['SEQUENT_STEP_RECOVERY'] == '0'
        assert env['SEQUENT_LOGGER_NAME'] == f'envflow-{flow.run_id}.{step}_{sequence}'
        if construct == 'process':
            assert env['pid'] != os.getpid()
        else:
            assert env['pid'] == os.getpid()


def test_concurrent_thread_tasks_each_see_their_own_variables(make_flow):
    flow = make_flow('thread')
    names = ['a', 'b', 'c', 'd']
    barrier = threading.Barrier(len(names), timeout=10)
    seen = {}

    def step():
        barrier.wait()  # every task is running now: their variables are set at the same time
        for _ in range(50):
            name = os.getenv('SEQUENT_STEP_NAME')
            seen.setdefault(name, set()).add((os.environ['SEQUENT_STEP_NAME'], os.getenv('SEQUENT_LOGGER_NAME'),
                                              dict(os.environ).get('SEQUENT_STEP_NAME')))
            time.sleep(0.001)

    for name in names:
        flow.add_step(name, func=step)
    assert flow.run() is True
    assert seen == {name: {(name, f'flow-{flow.run_id}.{name}_1', name)} for name in names}


def step_name_seen_by_a_shell() -> str:
    """What a command the task runs sees as SEQUENT_STEP_NAME (tasks often wrap shell commands)."""
    out = subprocess.run(['sh', '-c', 'echo "$SEQUENT_STEP_NAME"'], capture_output=True, text=True).stdout.strip()
    if out != os.getenv('SEQUENT_STEP_NAME'):
        raise AssertionError(f'the shell saw {out!r}, the task {os.getenv("SEQUENT_STEP_NAME")!r}')
    return out


def _shell_env_test(tmp_path, make_flow, construct):
    flow = make_flow(construct)
    flow.add_step('wrapper', func=step_name_seen_by_a_shell)
    assert flow.run() is True
    assert task_rows(tmp_path, flow.run_id)[('wrapper', '1')].result == "'wrapper'"


def test_process_task_passes_its_variables_to_commands_it_runs(tmp_path, make_flow):
    _shell_env_test(tmp_path, make_flow, 'process')


def step_name_seen_by_a_shell_given_the_environment() -> str:
    """The documented way for a thread task: hand the command os.environ.copy() (it holds the overlay)."""
    out = subprocess.run(['sh', '-c', 'echo "$SEQUENT_STEP_NAME"'], capture_output=True, text=True,
                         env=os.environ.copy()).stdout.strip()
    if out != os.getenv('SEQUENT_STEP_NAME'):
        raise AssertionError(f'the shell saw {out!r}, the task {os.getenv("SEQUENT_STEP_NAME")!r}')
    return out


def test_thread_task_passes_its_variables_to_commands_given_os_environ_copy(tmp_path, make_flow):
    flow = make_flow('thread')
    flow.add_step('wrapper', func=step_name_seen_by_a_shell_given_the_environment)
    assert flow.run() is True
    assert task_rows(tmp_path, flow.run_id)[('wrapper', '1')].result == "'wrapper'"


@pytest.mark.parametrize('outcome', ['success', 'failure'])
def test_thread_run_restores_the_real_os_environ(outcome, make_flow):
    before = os.environ
    flow = make_flow('thread')
    flow.add_step('s', func=succeed if outcome == 'success' else raise_in_user_function,
                  args=() if outcome == 'success' else ('no',))
    assert flow.run() is (outcome == 'success')
    assert type(os.environ) is os._Environ
    assert os.environ is before
    assert 'SEQUENT_STEP_NAME' not in os.environ
    os.environ['SEQUENT_INTEGRATION_PROBE'] = '1'  # the real mapping still writes the real environment
    try:
        assert subprocess.run([sys.executable, '-c', 'import os; print(os.environ["SEQUENT_INTEGRATION_PROBE"])'],
                              capture_output=True, text=True).stdout.strip() == '1'
    finally:
        del os.environ['SEQUENT_INTEGRATION_PROBE']


# --------------------------------------------------------------------------------------------- logging (A9, B7)

LINE = re.compile(r'^\[ \d{4}-\d\d-\d\d,\d\d:\d\d:\d\d\.\d{6} \]\[ INFO    \]\[ (?P<host>[^ ]+) \]'
                  r'\[ (?P<proc>Task-s1\(1\))  \]\[ (?P<msg>hello from s1 via SEQUENT_LOGGER_NAME) \]$', re.M)


@pytest.mark.parametrize('construct', CONSTRUCTS)
def test_task_logger_lines_go_to_the_run_log_and_the_tasks_own_log_in_the_original_format(
        tmp_path, construct, make_flow):
    flow = make_flow(construct)
    flow.add_step('s1', func=log_through_env_logger, args=('hello from s1 via SEQUENT_LOGGER_NAME',))
    assert flow.run() is True
    for text in (run_log(tmp_path, flow), task_log(tmp_path, flow, 's1', '1').read_text()):
        lines = LINE.findall(text)
        assert len(lines) == 1, text
        assert lines[0][0] == HOST
    own = task_log(tmp_path, flow, 's1', '1').read_text()
    assert 'Processing finished' not in own  # the task's file holds the task's lines only


@pytest.mark.parametrize('construct', CONSTRUCTS)
def test_tasks_that_log_nothing_leave_no_task_log_and_no_per_prefix_copies(tmp_path, construct, make_flow):
    flow = make_flow(construct)
    a = flow.add_step('a', func=log_through_env_logger, args=('a speaks',))
    flow.add_step('b', func=succeed, requires=((a, seq.STEP_SUCCESS),))
    assert flow.run() is True
    assert sorted(p.name for p in (tmp_path / 'logs').iterdir()) == sorted(
        [f'flow-{flow.run_id}.log', f'flow-{flow.run_id}.a_1.log'])


@pytest.mark.parametrize('construct', CONSTRUCTS)
@pytest.mark.parametrize('outcome', ['success', 'failure'])
def test_run_log_ends_with_the_outcome(tmp_path, construct, outcome, make_flow):
    flow = make_flow(construct)
    s1 = flow.add_step('s1', func=succeed)
    flow.add_step('s2', func=succeed if outcome == 'success' else raise_in_user_function,
                  args=() if outcome == 'success' else ('nope',), requires=((s1, seq.STEP_SUCCESS),))
    assert flow.run() is (outcome == 'success')
    lines = run_log(tmp_path, flow).splitlines()
    assert lines[0].endswith(f"Process PID: {os.getpid()}; run_id: '{flow.run_id}'. ]")
    assert lines[-1].endswith(f'[ Processing finished with: {outcome} ]')
    assert '[ Task s2/1 ] Completed, status: ' + outcome + ' ]' in run_log(tmp_path, flow)


# --------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize('construct', CONSTRUCTS)
def test_step_exception_is_stored_with_its_traceback_and_logged(tmp_path, construct, make_flow):
    flow = make_flow(construct)
    bad = flow.add_step('bad', func=raise_in_user_function, args=('kaput 42',))
    flow.add_step('after', func=succeed, requires=((bad, seq.STEP_SUCCESS),))
    assert flow.run() is False
    rows = task_rows(tmp_path, flow.run_id)
    assert ('after', '1') not in rows
    row = rows[('bad', '1')]
    assert row.status == 'failure'
    assert 'ValueError' in row.error and 'kaput 42' in row.error
    assert 'in raise_in_user_function' in row.error and 'raise ValueError(text)' in row.error
    log = run_log(tmp_path, flow)
    assert 'Step bad [1] failed: ValueError: kaput 42' in log
    assert "ValueError('kaput 42')" in log or 'ValueError: kaput 42' in log
    assert 'in raise_in_user_function' in log


def die_by_exit():
    os._exit(3)


def die_by_sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def die_by_segfault():
    import ctypes
    import faulthandler
    faulthandler.disable()  # pytest enables it: its dump would only add noise; the signal is the same
    ctypes.string_at(0)


DEATHS = {
    'exit3': (die_by_exit, r'exited with code 3'),
    'sigkill': (die_by_sigkill, r'killed by signal 9 \(SIGKILL\)'),
    'segfault': (die_by_segfault, r'killed by signal 11 \(SIGSEGV\)'),
}


@pytest.mark.parametrize('death', list(DEATHS))
def test_process_task_that_dies_without_returning_is_a_failure_naming_how_it_died(tmp_path, death, make_flow):
    func, pattern = DEATHS[death]
    flow = make_flow('process')
    dead = flow.add_step('dead', func=func)
    flow.add_step('after', func=succeed, requires=((dead, seq.STEP_SUCCESS),))
    started = time.monotonic()
    assert flow.run() is False
    assert time.monotonic() - started < 10
    rows = task_rows(tmp_path, flow.run_id)
    assert ('after', '1') not in rows
    row = rows[('dead', '1')]
    assert row.status == 'failure'
    assert re.search(pattern, row.error), row.error
    assert 'Processing finished with: failure' in run_log(tmp_path, flow)
    assert my_children() == []
    assert row.pid and not os.path.exists(f'/proc/{row.pid}')


@pytest.mark.parametrize('death', list(DEATHS))
def test_process_task_death_is_handled_like_a_failure_when_a_sibling_requires_it(tmp_path, death, make_flow):
    out = tmp_path / 'out'
    out.mkdir()
    func, _ = DEATHS[death]
    flow = make_flow('process')
    dead = flow.add_step('dead', func=func)
    flow.add_step('cleanup', func=record_env, args=(str(out),), requires=((dead, seq.STEP_FAILURE),))
    assert flow.run() is True
    assert [p.name for p in out.iterdir()] == ['cleanup_1.json']


@pytest.mark.parametrize('outcome', ['success', 'failure'])
def test_no_child_process_remains_after_a_process_run(tmp_path, outcome, make_flow):
    flow = make_flow('process')
    for i in range(3):
        flow.add_step(f's{i}', func=succeed if outcome == 'success' or i else raise_in_user_function,
                      args=() if outcome == 'success' or i else ('x',))
    assert flow.run() is (outcome == 'success')
    assert my_children() == []
    for row in task_rows(tmp_path, flow.run_id).values():
        assert row.pid != os.getpid()
        assert not os.path.exists(f'/proc/{row.pid}')


# --------------------------------------------------------------------------------------------- output, closures


def print_unflushed(text: str) -> None:
    print(text)  # no flush: the task process must flush its stdout before it ends


@pytest.mark.parametrize('construct', CONSTRUCTS)
def test_task_stdout_appears_on_the_callers_stdout(construct, capfd, make_flow):
    flow = make_flow(construct)
    flow.add_step('talk', func=print_unflushed, args=(f'printed by a {construct} task',))
    capfd.readouterr()
    assert flow.run() is True
    out = capfd.readouterr().out
    assert out.count(f'printed by a {construct} task') == 1


def test_lambda_and_closure_steps_run_in_process_mode(tmp_path, make_flow):
    out = tmp_path / 'out'
    out.mkdir()
    secret = 'captured by the closure'

    def closure():
        (out / 'closure').write_text(f'{secret} {os.getpid()}')

    flow = make_flow('process')
    lam = flow.add_step('lam', func=lambda: (out / 'lambda').write_text(str(os.getpid())))
    flow.add_step('clo', func=closure, requires=((lam, seq.STEP_SUCCESS),))
    assert flow.run() is True
    rows = task_rows(tmp_path, flow.run_id)
    lam_pid = int((out / 'lambda').read_text())
    text, clo_pid = (out / 'closure').read_text().rsplit(' ', 1)
    assert text == secret
    assert lam_pid != os.getpid() and int(clo_pid) != os.getpid()
    assert (rows[('lam', '1')].pid, rows[('clo', '1')].pid) == (lam_pid, int(clo_pid))


# --------------------------------------------------------------------------------------------- scripts

SCRIPT = textwrap.dedent('''\
    import sys
    import sequent as seq

    def ok():
        print('ok ran')

    def bad():
        raise RuntimeError('bad ran')

    flow = seq.Sequent(config={'LOGGING': {'logdir': sys.argv[2], 'console': False}})
    s1 = flow.add_step('s1', func=ok)
    flow.add_step('s2', func=ok if sys.argv[1] == 'ok' else bad, requires=((s1, seq.STEP_SUCCESS),))
    sys.exit(0 if flow.run() else 1)
''')


@pytest.mark.parametrize('outcome, code', [('ok', 0), ('bad', 1)])
def test_script_uses_the_default_store_in_its_cwd_and_exits_with_the_outcome(tmp_path, outcome, code):
    scripts, work = tmp_path / 'scripts', tmp_path / 'work'
    scripts.mkdir()
    work.mkdir()
    (scripts / 'myflow.py').write_text(SCRIPT)
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    proc = subprocess.run([sys.executable, str(scripts / 'myflow.py'), outcome, str(tmp_path / 'logs')], cwd=work,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.count('ok ran') == (2 if outcome == 'ok' else 1)
    assert sorted(p.name for p in work.iterdir() if p.suffix == '.db') == ['myflow.run.db']
    assert not list(scripts.glob('*.db'))
    with sqlite3.connect(str(work / 'myflow.run.db')) as conn:
        runs = conn.execute('SELECT flow, status, program FROM sequent_runs').fetchall()
    assert runs == [('myflow.py', 'success' if outcome == 'ok' else 'failure', str(scripts / 'myflow.py'))]
    logs = [p.name for p in (tmp_path / 'logs').iterdir()]
    assert any(re.fullmatch(r'myflow\.py-\d{8}-\d{6}-\d{6}-[0-9a-f]{4}\.log', name) for name in logs), logs
