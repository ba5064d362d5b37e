"""What a run tells its user: log lines in the user's words, the summary that ends the run log
(counts, failures, how to recover), the traceback in a failed task's own log file, refused runs
that leave no file behind, and the console under cron (stdout not a terminal)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sequent as seq
from sequent.eventor import Eventor, EventorError
from sequent.eventor.dburl import resolve_store
from sequent.eventor.summary import recover_hint, store_argument

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = str(Path(__file__).resolve())


def fail_with(text: str) -> None:
    logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).info('about to fail with %s', text)
    raise ValueError(text)


def succeed() -> None:
    pass


def run_log(tmp_path: Path, flow) -> str:
    return (tmp_path / 'logs' / f'{flow.name}-{flow.run_id}.log').read_text()


def messages(text: str) -> list[str]:
    """The messages of a log's lines (what follows the fourth field), one per record."""
    return re.findall(r'^\[ [^]]+ \]\[ \w+ +\]\[ [^]]+ \]\[ [^]]+ \]\[ (.*?) \]$', text, re.M)


def listing(folder: Path) -> dict[str, int]:
    """Every file and folder below ``folder`` with its size (folders: -1)."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob('*')}


def two_failures(tmp_path: Path, flow_config, construct: str = 'thread', **kwargs) -> seq.Sequent:
    """A flow with a failure that a sibling handles (a -> cleanup) and one nobody handles (s1_y in 1.1)."""
    flow = seq.Sequent(name='twofail', store=str(tmp_path / 'store.db'),
                       config=flow_config(task_construct=construct), **kwargs)
    a = flow.add_step('a', func=fail_with, args=('handled one',))
    flow.add_step('cleanup', func=succeed, requires=((a, seq.STEP_FAILURE),))
    s1 = flow.add_step('s1', repeats=[1, 2])
    x = s1.add_step('x', func=succeed)
    s1.add_step('y', func=fail_with, args=('bad input',), requires=((x, seq.STEP_SUCCESS),))
    return flow


# --------------------------------------------------------------------------------------------- the summary


def test_summary_counts_statuses_and_names_each_unhandled_and_handled_failure(tmp_path, flow_config):
    flow = two_failures(tmp_path, flow_config)
    assert flow.run() is False
    lines = messages(run_log(tmp_path, flow))
    start = next(i for i, line in enumerate(lines) if line.startswith('Summary: '))
    summary = lines[start:]
    assert summary[0].startswith(f"Summary: run '{flow.run_id}' of flow 'twofail' ended with failure in ")
    assert summary[1] == 'Tasks: 2 succeeded, 2 failed; containers: 1 failed'
    assert 'Unhandled failure: step s1_y [1.1]: ValueError: bad input' in summary
    assert 'Handled failure: step a [1], handled by cleanup: ValueError: handled one' in summary
    assert not any('s1 [1]' in line for line in summary)  # the container's failure follows from s1_y's
    assert summary[-1] == 'Processing finished with: failure'


def test_summary_levels_let_cron_see_a_failure(tmp_path, flow_config):
    flow = two_failures(tmp_path, flow_config)
    flow.run()
    log = run_log(tmp_path, flow)
    assert re.search(r'\[ ERROR   \].*\[ Unhandled failure: step s1_y', log)
    assert re.search(r'\[ WARNING \].*\[ Summary: run ', log)


def test_a_failure_handled_through_its_container_names_the_handler_and_the_run_succeeds(tmp_path, flow_config):
    flow = seq.Sequent(name='around', store=str(tmp_path / 'store.db'), config=flow_config(task_construct='thread'))
    box = flow.add_step('box', repeats=[1])
    box.add_step('inner', func=fail_with, args=('inside',))
    flow.add_step('mop', func=succeed, requires=((box, seq.STEP_FAILURE),))
    assert flow.run() is True
    lines = messages(run_log(tmp_path, flow))
    assert ('Handled failure: step box_inner [1.1], handled by mop (through the failure of container box): '
            'ValueError: inside') in lines
    assert not any(line.startswith('Unhandled failure') or line.startswith('Recover with') for line in lines)


def test_a_successful_run_ends_with_its_counts_and_no_recovery_hint(tmp_path, flow_config):
    flow = seq.Sequent(name='fine', store=str(tmp_path / 'store.db'), config=flow_config(task_construct='thread'))
    c = flow.add_step('c', repeats=[1, 2, 3])
    c.add_step('k', func=succeed)
    assert flow.run() is True
    lines = messages(run_log(tmp_path, flow))
    assert lines[-3].startswith(f"Summary: run '{flow.run_id}' of flow 'fine' ended with success in ")
    assert lines[-2] == 'Tasks: 3 succeeded; containers: 1 succeeded'
    assert not any('recover' in line.lower() for line in lines)


def test_a_recovery_counts_what_it_skipped(tmp_path, flow_config):
    marker = tmp_path / 'fixed'

    def flaky() -> None:
        if not marker.exists():
            raise RuntimeError('not yet')

    flow = seq.Sequent(name='again', store=str(tmp_path / 'store.db'), config=flow_config(task_construct='thread'))
    a = flow.add_step('a', func=succeed)
    flow.add_step('b', func=flaky, requires=((a, seq.STEP_SUCCESS),))
    assert flow.run() is False
    marker.touch()
    assert flow.run(run_mode=seq.RUN_RECOVER) is True
    lines = messages(run_log(tmp_path, flow))
    assert f"Summary: run '{flow.run_id}' of flow 'again' (recovery 1) ended with success" in lines[-3]
    assert lines[-2] == 'Tasks: 1 succeeded, 1 skipped (succeeded before)'


# --------------------------------------------------------------------------------------------- the recovery hint


def test_a_failed_run_says_how_to_recover_it_from_the_command_line_and_from_python(tmp_path, flow_config):
    flow = two_failures(tmp_path, flow_config)
    assert flow.run() is False
    lines = messages(run_log(tmp_path, flow))
    store = str(tmp_path / 'store.db')
    assert f'Recover with: sequent recover {THIS_FILE} {flow.run_id} --store {store}' in lines
    assert f"Or from Python: run the flow again with run_mode=RUN_RECOVER, run_id='{flow.run_id}'" in lines


def test_the_recovery_hint_names_a_databases_store_by_its_key(tmp_path, flow_config):
    cfg = flow_config(task_construct='thread', DATABASES={'main': {'dialect': 'sqlite',
                                                                   'database': str(tmp_path / 'keyed.db')}})
    flow = seq.Sequent(name='keyed', store='main', config=cfg)
    flow.add_step('a', func=fail_with, args=('x',))
    assert flow.run() is False
    assert f'Recover with: sequent recover {THIS_FILE} {flow.run_id} --store main' in messages(run_log(tmp_path, flow))


def test_the_recovery_hint_never_shows_a_password():
    target = resolve_store('postgresql://batch:s3cret@db.example/flows', {}, '')
    store = store_argument('postgresql://batch:s3cret@db.example/flows', {}, target.display, target.is_memory)
    hint = ' '.join(recover_hint('/srv/flows/nightly.py', 'r1', store))
    assert 's3cret' not in hint
    assert "sequent recover /srv/flows/nightly.py r1 --store 'postgresql://batch:***@db.example/flows'" in hint


def test_a_run_in_memory_says_it_cannot_be_recovered(tmp_path, flow_config):
    flow = seq.Sequent(name='mem', store=':memory:', config=flow_config(task_construct='thread'))
    flow.add_step('a', func=fail_with, args=('x',))
    assert flow.run() is False
    log = run_log(tmp_path, flow)
    assert 'cannot be recovered: its store is in memory' in log and 'Recover with' not in log


# --------------------------------------------------------------------------------------------- log lines


@pytest.mark.parametrize('construct', ['thread', 'process', 'invoke'])
def test_a_failed_task_is_logged_in_words_and_its_own_log_file_holds_its_traceback(tmp_path, flow_config, construct):
    flow = seq.Sequent(name='tb', store=str(tmp_path / 'store.db'), config=flow_config(task_construct=construct))
    flow.add_step('bad', func=fail_with, args=('kaput 7',))
    assert flow.run() is False
    own = (tmp_path / 'logs' / f'tb-{flow.run_id}.bad_1.log').read_text()
    assert 'about to fail with kaput 7' in own  # the task's own line
    assert 'Step bad [1] failed: ValueError: kaput 7' in own
    assert 'Traceback (most recent call last):' in own and 'in fail_with' in own and 'raise ValueError(text)' in own
    log = run_log(tmp_path, flow)
    assert 'Step bad [1] failed: ValueError: kaput 7' in log and 'in fail_with' in log
    assert '[ Task bad/1 ] Completed, status: failure ]' in log
    assert 'TaskStatus' not in log and '<Task(' not in log and 'run_action' not in log


def test_a_container_failure_says_why_in_words(tmp_path, flow_config):
    flow = seq.Sequent(name='box', store=str(tmp_path / 'store.db'), config=flow_config(task_construct='thread'))
    c = flow.add_step('c', repeats=[1])
    c.add_step('k', func=fail_with, args=('deep',))
    assert flow.run() is False
    assert 'Container c [1] failed: an unhandled failure in iteration 1.1' in messages(run_log(tmp_path, flow))


# --------------------------------------------------------------------------------------------- refused runs


def build(tmp_path: Path, flow_config, name: str = 'refused', **kwargs) -> seq.Sequent:
    flow = seq.Sequent(name=name, store=str(tmp_path / 'data' / 'store.db'),
                       config=flow_config(task_construct='thread'), **kwargs)
    flow.add_step('a', func=succeed)
    return flow


def test_recovering_from_a_store_that_does_not_exist_creates_nothing(tmp_path, flow_config):
    with pytest.raises(seq.SequentError, match="no run 'r9' to recover"):
        build(tmp_path, flow_config).run(run_mode=seq.RUN_RECOVER, run_id='r9')
    assert listing(tmp_path) == {}


def test_recovering_the_latest_run_of_a_flow_without_runs_creates_nothing(tmp_path, flow_config):
    with pytest.raises(seq.SequentError, match="no run of flow 'refused' to recover"):
        build(tmp_path, flow_config).run(run_mode=seq.RUN_RECOVER)
    assert listing(tmp_path) == {}


@pytest.mark.parametrize('refusal', ['unknown run_id', 'run of another flow', 'attempt missing'])
def test_a_refused_recovery_leaves_the_store_and_the_logs_as_they_were(tmp_path, flow_config, refusal):
    first = build(tmp_path, flow_config, name='owner', run_id='r1')
    assert first.run() is True
    before = listing(tmp_path)
    log_before = (tmp_path / 'logs' / 'owner-r1.log').read_text()
    if refusal == 'unknown run_id':
        run, match = lambda: build(tmp_path, flow_config).run(run_mode=seq.RUN_RECOVER, run_id='r9'), "no run 'r9'"
    elif refusal == 'run of another flow':
        run, match = lambda: build(tmp_path, flow_config).run(run_mode=seq.RUN_RECOVER, run_id='r1'), 'flow'
    else:
        run, match = lambda: build(tmp_path, flow_config, name='owner').run(
            run_mode=seq.RUN_RECOVER, run_id='r1', recovery_run=5), 'no attempt 5'
    with pytest.raises(seq.SequentError, match=match):
        run()
    assert listing(tmp_path) == before
    assert (tmp_path / 'logs' / 'owner-r1.log').read_text() == log_before


def test_a_new_run_under_a_taken_run_id_is_refused_and_creates_no_file(tmp_path, flow_config):
    assert build(tmp_path, flow_config, name='owner', run_id='r1').run() is True
    before = listing(tmp_path)
    with pytest.raises(seq.SequentError, match="run_id 'r1' already exists"):
        build(tmp_path, flow_config, name='owner', run_id='r1').run()
    assert sorted(listing(tmp_path)) == sorted(before)


def test_a_program_that_fails_validation_creates_nothing(tmp_path, flow_config):
    ev = Eventor(name='invalid', store=str(tmp_path / 'data' / 'store.db'), config=flow_config(task_construct='thread'))
    go = ev.add_event('go')
    ev.add_step('s', func=succeed)
    ev.add_assoc(go, 's')
    ev.trigger_event('ghost_event')
    with pytest.raises(EventorError, match='ghost_event'):
        ev.run()
    assert listing(tmp_path) == {}


def test_a_run_refused_after_it_made_its_files_removes_them_and_only_them(tmp_path, flow_config, monkeypatch):
    """A refusal that only the run's lock can tell (another coordinator won the race to the run):
    the store file, log file and folders this run made go; what was there before stays."""
    from sequent.eventor import attempts

    def refuse(*args, **kwargs):
        raise EventorError("run 'r1' is being run by process 1 on elsewhere; wait for it to end")

    (tmp_path / 'keep.txt').write_text('mine')
    before = listing(tmp_path)
    monkeypatch.setattr(attempts, 'take_lock', refuse)
    with pytest.raises(seq.SequentError, match='being run by'):
        build(tmp_path, flow_config, run_id='r1').run()
    assert listing(tmp_path) == before


def test_a_refusal_after_the_files_keeps_a_store_that_existed(tmp_path, flow_config, monkeypatch):
    from sequent.eventor import attempts

    assert build(tmp_path, flow_config, name='owner', run_id='r0').run() is True
    before = listing(tmp_path)
    monkeypatch.setattr(attempts, 'take_lock', lambda *a, **k: (_ for _ in ()).throw(EventorError('taken')))
    with pytest.raises(seq.SequentError, match='taken'):
        build(tmp_path, flow_config, run_id='r1').run()
    assert listing(tmp_path) == before


# --------------------------------------------------------------------------------------------- the console under cron

CRON_FLOW = textwrap.dedent('''
    import logging, os, sys
    import sequent as seq

    def speak():
        logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).info('an info line from a task')
        logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).warning('a warning from a task')

    def fail():
        raise ValueError('cron failure')

    logging_config = {'logdir': sys.argv[1], **eval(sys.argv[2])}
    flow = seq.Sequent(name='cron', store=os.path.join(sys.argv[1], 'store.db'),
                       config={'task_construct': 'thread', 'LOGGING': logging_config})
    a = flow.add_step('a', func=speak)
    flow.add_step('b', func=fail, requires=((a, seq.STEP_SUCCESS),))
    sys.exit(0 if flow.run() else 1)
''')


def run_cron_flow(tmp_path: Path, logging_config: str = '{}') -> subprocess.CompletedProcess:
    script = tmp_path / 'cronflow.py'
    script.write_text(CRON_FLOW)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, str(script), str(tmp_path / 'logs'), logging_config], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def test_under_cron_the_console_has_warnings_errors_and_the_summary_but_no_info_lines(tmp_path):
    done = run_cron_flow(tmp_path)
    assert done.returncode == 1  # the exit status is the outcome
    out = done.stdout
    assert 'an info line from a task' not in out and 'Process PID' not in out
    assert 'a warning from a task' in out
    assert 'Step b [1] failed: ValueError: cron failure' in out
    assert 'Summary: run ' in out and 'Tasks: 1 succeeded, 1 failed' in out
    assert 'Recover with: sequent recover ' in out
    log = next(p for p in (tmp_path / 'logs').glob('cron-*.log') if p.name.count('.') == 1).read_text()
    assert 'an info line from a task' in log and 'Process PID' in log  # the file keeps every line


def test_console_level_can_ask_for_every_line_on_a_pipe(tmp_path):
    done = run_cron_flow(tmp_path, "{'console_level': 'INFO'}")
    assert 'an info line from a task' in done.stdout and 'Summary: run ' in done.stdout


def test_without_console_a_failed_run_writes_only_its_summary_to_stderr(tmp_path):
    done = run_cron_flow(tmp_path, "{'console': False}")
    assert done.returncode == 1
    assert done.stdout == ''
    err = messages(done.stderr)
    assert err[0].startswith('Summary: run ') and 'Unhandled failure: step b [1]: ValueError: cron failure' in err
    assert not any('a warning from a task' in line for line in err)


@pytest.mark.parametrize('value, expected', [('auto', 'auto'), ('AUTO', 'auto'), ('warning', logging.WARNING),
                                             (logging.ERROR, logging.ERROR)])
def test_console_level_takes_auto_or_a_logging_level(value, expected):
    from sequent.eventor.config import load_config

    assert load_config({'LOGGING': {'console_level': value}})['LOGGING']['console_level'] == expected


@pytest.mark.parametrize('value', ['loud', True, -1, None])
def test_a_wrong_console_level_is_refused_naming_the_key(value):
    from sequent.eventor.config import load_config
    from sequent.eventor.errors import ConfigError

    with pytest.raises(ConfigError, match=r"configuration key 'LOGGING\.console_level': expected 'auto' or a logging"):
        load_config({'LOGGING': {'console_level': value}})


def test_the_summary_names_the_first_failures_and_says_where_to_find_the_others(tmp_path, flow_config):
    flow = seq.Sequent(name='many', store=str(tmp_path / 'store.db'),
                       config=flow_config(task_construct='thread', stop_on_exception=False))
    for i in range(12):
        flow.add_step(f's{i:02d}', func=fail_with, args=(f'number {i}',))
    assert flow.run() is False
    lines = messages(run_log(tmp_path, flow))
    named = [line for line in lines if line.startswith('Unhandled failure: ')]
    assert len(named) == 10
    assert (f"... and 2 more failures not listed here: sequent show {tmp_path / 'store.db'} {flow.run_id} --failed"
            in lines)
