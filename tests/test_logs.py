"""Tests of the engine's logging (sequent.eventor.logs)."""
import io
import logging
import os
import re
import sys
import threading

import pytest

from sequent.eventor import logs
from sequent.eventor.logs import (
    HOST, RunLogging, describe_exception, flow_logger_name, reset_task_label, set_task_label,
    task_logger_name,
)

FLOW = flow_logger_name('runly00.py', '20261126-1')
TASK = task_logger_name(FLOW, 's1_s11_s111', '1.1.1')
LINE = re.compile(
    r'^\[ (\d{4}-\d\d-\d\d,\d\d:\d\d:\d\d\.\d{6}) \]\[ (.{7}) \]\[ (.+?) \]\[ (.{11,}?) \]\[ (.*?) \]')


@pytest.fixture
def run(tmp_path):
    """A started RunLogging writing to tmp_path, stopped afterwards."""
    rl = RunLogging(FLOW, {'logdir': str(tmp_path / 'logs'), 'console': False})
    rl.start()
    yield rl
    rl.stop()


def read(path):
    with open(path, encoding='utf8') as f:
        return f.read()


def test_names_of_flow_and_task_loggers():
    assert flow_logger_name('f', None) == 'f'
    assert FLOW == 'runly00.py-20261126-1'
    assert TASK == 'runly00.py-20261126-1.s1_s11_s111_1.1.1'


def test_line_format_has_microseconds_padded_level_host_and_process(run):
    logging.getLogger(FLOW).info('hello there')
    line = read(run.run_log_path).splitlines()[0]
    m = LINE.match(line)
    assert m, line
    assert m.group(2) == 'INFO   '
    assert m.group(3) == HOST
    assert m.group(4).rstrip() == 'MainProcess'
    assert m.group(5) == 'hello there'
    assert line.endswith('[ hello there ]')  # no DEBUG suffix at INFO


def test_debug_level_appends_module_function_and_line(tmp_path):
    rl = RunLogging('dbg', {'logdir': str(tmp_path), 'console': False, 'logging_level': logging.DEBUG})
    rl.start()
    logging.getLogger('dbg').debug('detail')
    rl.stop()
    line = read(rl.run_log_path).strip()
    assert LINE.match(line).group(2) == 'DEBUG  '
    assert re.search(r'\]\[ test_logs\.test_debug_level_appends_module_function_and_line\(\d+\) \]$', line)


def test_records_below_the_level_are_dropped(run):
    chatty = logging.getLogger(FLOW + '.chatty')
    chatty.setLevel(logging.DEBUG)  # a user logger below the flow's level still stays out
    try:
        logging.getLogger(TASK).debug('invisible')
        chatty.debug('chatty debug')
        logging.getLogger(FLOW).info('visible')
    finally:
        chatty.setLevel(logging.NOTSET)
    text = read(run.run_log_path)
    assert 'visible' in text and 'invisible' not in text and 'chatty' not in text


def test_task_label_shows_in_its_thread_only(run):
    barrier = threading.Barrier(2)

    def labelled():
        token = set_task_label('Task-s2(1)')
        barrier.wait()
        logging.getLogger(FLOW).info('from labelled')
        barrier.wait()
        reset_task_label(token)

    def plain():
        barrier.wait()  # runs while the other thread's label is set
        logging.getLogger(FLOW).info('from plain')
        barrier.wait()

    threads = [threading.Thread(target=labelled), threading.Thread(target=plain, name='Plain')]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    procs = {LINE.match(l).group(5): LINE.match(l).group(4) for l in read(run.run_log_path).splitlines()}
    assert procs['from labelled'] == 'Task-s2(1) '
    assert procs['from plain'].rstrip() == 'MainProcess'


def test_task_record_goes_to_run_file_and_one_task_file(run, tmp_path):
    run.task_started(TASK)
    run.task_started(task_logger_name(FLOW, 'silent', '1'))
    logging.getLogger(TASK).info('task line')
    logging.getLogger(TASK + '.helper').info('child line')  # a logger below the task's
    run.task_ended(TASK)
    run.task_ended(task_logger_name(FLOW, 'silent', '1'))
    assert 'task line' in read(run.run_log_path) and 'child line' in read(run.run_log_path)
    task_text = read(run.task_log_path(TASK))
    assert 'task line' in task_text and 'child line' in task_text
    # exactly one run file and one task file: none per dot-prefix, none for the silent task
    assert sorted(os.listdir(tmp_path / 'logs')) == sorted(
        os.path.basename(p) for p in (run.run_log_path, run.task_log_path(TASK)))


def test_flow_record_does_not_go_to_task_file(run):
    run.task_started(TASK)
    logging.getLogger(TASK).info('mine')
    logging.getLogger(FLOW).info('engine line')
    assert 'engine line' not in read(run.task_log_path(TASK))


def test_prefix_and_suffix_decorate_file_names(tmp_path):
    rl = RunLogging('f', {'logdir': str(tmp_path), 'console': False, 'file_prefix': 'p_', 'file_suffix': '_s'})
    assert rl.run_log_path == str(tmp_path / 'p_f_s.log')
    assert rl.task_log_path('f.a_1') == str(tmp_path / 'p_f.a_1_s.log')


def test_console_writes_to_the_current_stdout(tmp_path, capsys, monkeypatch):
    rl = RunLogging('con', {'logdir': str(tmp_path), 'console_level': 'INFO'})  # every line, as on a terminal
    rl.start()
    logging.getLogger('con').warning('to the console')
    out = capsys.readouterr().out
    assert LINE.match(out) and '[ WARNING ]' in out and 'to the console' in out
    redirected = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', redirected)  # replaced after the handler was made
    logging.getLogger('con').info('redirected')
    rl.stop()
    assert 'redirected' in redirected.getvalue()


def test_flow_logger_does_not_propagate_to_root(run):
    seen = []
    root_handler = logging.Handler()
    root_handler.emit = seen.append
    logging.getLogger().addHandler(root_handler)
    try:
        logging.getLogger(TASK).warning('not for root')
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert seen == []
    assert 'not for root' in read(run.run_log_path)


def test_stop_removes_handlers_and_closes_files(tmp_path):
    def fds():
        return len(os.listdir('/proc/self/fd'))

    settings = {'logdir': str(tmp_path), 'console': True}
    before = fds()
    for cycle in range(2):
        rl = RunLogging('cyc', settings)
        others = list(logging.getLogger('cyc').handlers)  # e.g. pytest's capture handlers
        logger = rl.start()
        rl.task_started('cyc.t_1')
        rl.task_started('cyc.t_2')  # left open: stop() must close it
        logging.getLogger('cyc.t_1').info('cycle %d', cycle)
        logging.getLogger('cyc.t_2').info('cycle %d', cycle)
        opened = fds()
        rl.task_ended('cyc.t_1')
        assert fds() == opened - 1  # the task's file is closed when the task ends
        ours = [h for h in logger.handlers if h not in others]  # kept alive: closing must free fds
        rl.stop()
        rl.stop()  # idempotent
        assert len(ours) == 3 and logger.handlers == others
        assert fds() == before
        del ours
    assert read(rl.task_log_path('cyc.t_1')).count('cycle') == 2


def test_two_runs_do_not_interfere(tmp_path):
    a = RunLogging('flowA', {'logdir': str(tmp_path), 'console': False})
    b = RunLogging('flowB', {'logdir': str(tmp_path), 'console': False})
    a.start(), b.start()
    logging.getLogger('flowA').info('A line')
    b.stop()
    logging.getLogger('flowB').info('B after stop')
    logging.getLogger('flowA').info('A again')
    a.stop()
    assert 'A line' in read(a.run_log_path) and 'A again' in read(a.run_log_path)
    assert 'A' not in read(b.run_log_path)


def test_rotation_by_max_bytes(tmp_path):
    rl = RunLogging('rot', {'logdir': str(tmp_path), 'console': False, 'maxBytes': 300, 'backupCount': 2})
    rl.start()
    for i in range(20):
        logging.getLogger('rot').info('line %d', i)
    rl.stop()
    assert sorted(os.listdir(tmp_path)) == ['rot.log', 'rot.log.1', 'rot.log.2']
    assert os.path.getsize(rl.run_log_path) <= 300


def test_timed_rotation_handler_when_set(tmp_path):
    rl = RunLogging('timed', {'logdir': str(tmp_path), 'console': False, 'when': 'midnight', 'atTime': '01:30'})
    logger = rl.start()
    handler = next(h for h in logger.handlers if isinstance(h, logging.handlers.TimedRotatingFileHandler))
    assert handler.atTime.hour == 1 and handler.atTime.minute == 30
    rl.stop()


def test_forked_child_writes_to_its_task_file(run):
    run.task_started(TASK)
    logging.getLogger(FLOW).info('parent before fork')
    pid = os.fork()
    if pid == 0:  # child: log, then leave without running pytest's teardown
        try:
            token = set_task_label('Task-s1(1)')
            logging.getLogger(TASK).info('from the child %d', os.getpid())
            reset_task_label(token)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    run.task_ended(TASK)
    task_line = read(run.task_log_path(TASK)).strip()
    assert f'from the child {pid}' in task_line and '[ Task-s1(1)  ]' in task_line
    assert f'from the child {pid}' in read(run.run_log_path)


def test_describe_exception_gives_repr_and_traceback_lines():
    def failing():
        raise ValueError('bad value')

    try:
        failing()
    except ValueError as exc:
        text, tb = describe_exception(exc)
    assert text == "ValueError('bad value')"
    assert not tb.startswith('Traceback')
    assert re.search(r'File ".*test_logs\.py", line \d+, in failing\n    raise ValueError', tb)


def test_bad_at_time_is_a_config_error(tmp_path):
    rl = RunLogging('bad', {'logdir': str(tmp_path), 'console': False, 'when': 'h', 'atTime': 'noon'})
    with pytest.raises(logs.ConfigError):
        rl.start()
