"""Tests of the run's log files: rotation with process tasks, the log folder, file names and
modes, and the logger registry after runs (sequent.eventor.logs)."""
import collections
import glob
import logging
import logging.handlers
import os
import re
import stat
import time

import pytest

import sequent as seq
from sequent.eventor import logs
from sequent.eventor.config import load_config
from sequent.eventor.logs import NAME_MAX, RunLogging, log_file_name

MARK = re.compile(r'\[ mark (\S+) (\d+) \]$')


def read(path):
    with open(path, encoding='utf8') as f:
        return f.read()


def run_flow(name, config, steps, run_id=None, construct='process'):
    """Run a flow of independent steps {name: (func, kwargs)}; the loggers are passed to them."""
    cfg = {'task_construct': construct, 'pass_logger_to_task': True, **config}
    flow = seq.Sequent(name=name, config=cfg, store=':memory:', run_id=run_id)
    for step, (func, kwargs) in steps.items():
        flow.add_step(step, func=func, kwargs=kwargs)
    assert flow.run() is True
    return flow


def chatty(tag, lines, logger):
    """A step that logs `lines` numbered lines."""
    for i in range(lines):
        logger.info('mark %s %d', tag, i)


def marks(paths):
    """How often each (tag, number) mark line occurs in the files `paths`."""
    seen = collections.Counter()
    for path in paths:
        for line in read(path).splitlines():
            m = MARK.search(line)
            if m:
                seen[m.group(1), int(m.group(2))] += 1
    return seen


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask0():
    """A zero umask for the test, so created modes are exactly the configured ones."""
    old = os.umask(0)
    yield
    os.umask(old)


def in_child(body):
    """Run `body()` in a forked child (leaving with os._exit) and check it exited 0."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# ------------------------------------------------------------------ rotation with process tasks

def test_process_tasks_lose_no_line_when_the_run_log_rotates_by_size(tmp_path, flow_config):
    logdir = tmp_path / 'logs'
    config = flow_config(max_concurrent=6, LOGGING={'maxBytes': 1000, 'backupCount': 5000})
    steps = {f's{n}': (chatty, {'tag': f's{n}', 'lines': 200}) for n in range(18)}
    run_flow('rot', config, steps, run_id='r1')
    files = glob.glob(str(logdir / 'rot-r1.log*'))
    assert len(files) > 3  # it did rotate, several times
    seen = marks(files)
    assert seen == {(f's{n}', i): 1 for n in range(18) for i in range(200)}  # each line once


def test_a_forked_child_never_rotates_and_follows_the_owners_rotation(tmp_path):
    rl = RunLogging('own', {'logdir': str(tmp_path), 'console': False, 'maxBytes': 500, 'backupCount': 50})
    log = rl.start()
    log.info('parent first')
    to_parent, from_child = os.pipe()
    to_child, from_parent = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(to_parent), os.close(from_parent)
            for i in range(20):  # far past maxBytes: the owner would have rotated many times
                log.info('mark child %d', i)
            os.write(from_child, b'x')
            os.read(to_child, 1)  # meanwhile the owner rotates
            log.info('mark after 0')
            code = 0
        finally:
            os._exit(code)
    os.close(from_child), os.close(to_child)
    try:
        os.read(to_parent, 1)
        before = os.listdir(tmp_path)
        log.info('parent rotates now')  # the file is over maxBytes: this line rotates it
        after = os.listdir(tmp_path)
    finally:
        os.close(from_parent)  # lets the child go on, even when this test fails
        os.close(to_parent)
        _, status = os.waitpid(pid, 0)
        rl.stop()
    assert os.waitstatus_to_exitcode(status) == 0
    assert before == ['own.log']  # the child rotated nothing
    assert sorted(after) == ['own.log', 'own.log.1']
    assert 'mark after 0' in read(rl.run_log_path)  # the child reopened the new file
    seen = marks(glob.glob(str(tmp_path / 'own.log*')))
    assert seen == {**{('child', i): 1 for i in range(20)}, ('after', 0): 1}


def test_a_forked_child_never_rotates_a_timed_run_log(tmp_path):
    rl = RunLogging('tim', {'logdir': str(tmp_path), 'console': False, 'when': 'H', 'backupCount': 5})
    log = rl.start()
    handler = next(h for h in log.handlers if isinstance(h, logging.handlers.TimedRotatingFileHandler))
    try:
        def child():
            handler.rolloverAt = time.time() - 1  # due
            log.info('mark child 0')

        in_child(child)
        assert os.listdir(tmp_path) == ['tim.log']
        handler.rolloverAt = time.time() - 1
        log.info('mark owner 0')  # the owner does rotate
        assert len(os.listdir(tmp_path)) == 2
    finally:
        rl.stop()
    assert marks(glob.glob(str(tmp_path / 'tim.log*'))) == {('child', 0): 1, ('owner', 0): 1}


def test_a_delayed_run_log_in_w_mode_is_emptied_at_start_and_never_again(tmp_path):
    (tmp_path / 'trunc.log').write_text('[ mark earlier 0 ]\n')
    rl = RunLogging('trunc', {'logdir': str(tmp_path), 'console': False, 'file_mode': 'w', 'delay': True,
                              'logging_level': logging.WARNING})
    log = rl.start()
    try:
        in_child(lambda: log.warning('mark one 0'))  # the first record: the children open the file
        in_child(lambda: log.warning('mark two 0'))
        log.warning('mark owner 0')  # and only then the owner
    finally:
        rl.stop()
    assert marks([rl.run_log_path]) == {('one', 0): 1, ('two', 0): 1, ('owner', 0): 1}


def test_a_delayed_run_log_makes_no_file_when_nothing_is_logged(tmp_path):
    rl = RunLogging('quiet', {'logdir': str(tmp_path), 'console': False, 'file_mode': 'w', 'delay': True})
    rl.start()
    rl.stop()
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ the log folder

def test_relative_logdir_is_resolved_once_so_a_tasks_chdir_moves_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()

    def wander(logger):
        os.chdir(elsewhere)
        logger.info('mark wander 0')

    def later(logger):
        logger.info('mark later 0')

    cfg = {'task_construct': 'thread', 'pass_logger_to_task': True,
           'LOGGING': {'logdir': 'logs', 'console': False}}
    flow = seq.Sequent(name='cd', config=cfg, store=':memory:', run_id='r1')
    first = flow.add_step('s1', func=wander)
    flow.add_step('s2', func=later, requires=((first, seq.STEP_SUCCESS),))
    assert flow.run() is True
    assert os.listdir(elsewhere) == []
    assert marks([tmp_path / 'logs' / 'cd-r1.s2_1.log']) == {('later', 0): 1}
    assert marks([tmp_path / 'logs' / 'cd-r1.log']) == {('wander', 0): 1, ('later', 0): 1}


def test_logdir_is_absolute_from_the_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rl = RunLogging('f', {'logdir': 'rel/logs', 'console': False})
    assert rl.logdir == str(tmp_path / 'rel' / 'logs')
    assert os.path.isabs(rl.run_log_path) and os.path.isabs(rl.task_log_path('f.a_1'))


# ------------------------------------------------------------------ safe file names

@pytest.mark.parametrize('key', [
    'flow-../../escape', '../up', 'a/b/c', '/abs/path', 'nul\x00byte', '.hidden', '..', '.', 'surrogate\udc80',
])
def test_every_log_file_lands_inside_logdir(tmp_path, key):
    logdir = tmp_path / 'logs'
    rl = RunLogging(key, {'logdir': str(logdir), 'console': False})
    log = rl.start()
    rl.task_started(key + '.t_1')
    log.info('mark run 0')
    logging.getLogger(key + '.t_1').info('mark task 0')
    rl.stop()
    for path in (rl.run_log_path, rl.task_log_path(key + '.t_1')):
        assert os.path.dirname(path) == str(logdir)
        name = os.path.basename(path)
        assert '/' not in name and '\x00' not in name and not name.startswith('.')
    assert sorted(os.listdir(tmp_path)) == ['logs']
    assert len(os.listdir(logdir)) == 2
    assert marks([rl.task_log_path(key + '.t_1')]) == {('task', 0): 1}


def test_a_flow_with_slashes_and_dot_dots_logs_inside_logdir(tmp_path):
    logdir = tmp_path / 'a' / 'logs'
    run_flow('team/flow', {'LOGGING': {'logdir': str(logdir), 'console': False}},
             {'s1': (chatty, {'tag': 's1', 'lines': 2})}, run_id='../../../x', construct='thread')
    assert sorted(os.listdir(tmp_path)) == ['a'] and os.listdir(tmp_path / 'a') == ['logs']
    files = os.listdir(logdir)
    assert len(files) == 2 and all(f.startswith('team_flow-.._.._.._x') and '~' in f for f in files)
    assert marks(logdir / f for f in files) == {('s1', 0): 2, ('s1', 1): 2}  # run log and task log


def test_safe_names_are_kept_and_changed_ones_stay_distinct():
    assert log_file_name('runly00.py-20261126-1.s1_1.1.1') == 'runly00.py-20261126-1.s1_1.1.1.log'
    assert log_file_name('f.a_1', 'p_', '_s') == 'p_f.a_1_s.log'
    assert log_file_name('naïve-δ') == 'naïve-δ.log'
    changed = log_file_name('a/b')
    assert changed.startswith('a_b~') and changed.endswith('.log')
    assert changed != log_file_name('a_b') and changed != log_file_name('a\x00b')
    assert changed == log_file_name('a/b')  # deterministic
    assert log_file_name('a/b', suffix='_s').endswith('_s.log')


# ------------------------------------------------------------------ long file names

def test_long_task_names_are_shortened_deterministically_and_stay_unique(tmp_path):
    rl = RunLogging('longflow', {'logdir': str(tmp_path), 'console': False, 'file_suffix': '_s'})
    log = rl.start()
    tasks = [f'longflow.{"x" * 300}_{n}' for n in (1, 2)] + [f'longflow.{"ж" * 200}_1']
    for n, task in enumerate(tasks):
        rl.task_started(task)
        logging.getLogger(task).info('mark t%d 0', n)
        rl.task_ended(task)
    log.info('mark run 0')
    rl.stop()
    paths = [rl.task_log_path(t) for t in tasks]
    assert len(set(paths)) == 3 and paths == [rl.task_log_path(t) for t in tasks]
    for n, path in enumerate(paths):
        name = os.path.basename(path)
        assert len(os.fsencode(name)) <= NAME_MAX and name.endswith('_s.log')
        assert name.startswith(tasks[n][:100])  # a readable prefix
        assert marks([path]) == {(f't{n}', 0): 1}


def test_a_long_run_log_name_leaves_room_for_rotated_backups(tmp_path):
    name = 'r' * 254
    rl = RunLogging(name, {'logdir': str(tmp_path), 'console': False, 'maxBytes': 200, 'backupCount': 40})
    log = rl.start()
    for i in range(30):
        log.info('mark r %d', i)
    rl.stop()
    files = os.listdir(tmp_path)
    assert len(files) > 10 and all(len(os.fsencode(f)) <= NAME_MAX for f in files)
    assert marks(tmp_path / f for f in files) == {('r', i): 1 for i in range(30)}


def test_a_timed_run_log_name_leaves_room_for_dated_backups():
    rl = RunLogging('t' * 254, {'logdir': '/tmp', 'when': 'S'})
    assert len(os.fsencode(os.path.basename(rl.run_log_path))) + len('.2026-01-01_00-00-00') <= NAME_MAX


# ------------------------------------------------------------------ the logger registry

def _registry():
    return dict(logging.Logger.manager.loggerDict)


def test_many_runs_in_one_process_leave_the_registry_as_it_was(tmp_path):
    def helper(logger):
        logger.info('mark helper 0')
        logging.getLogger(logger.name + '.helper.deep').info('mark deep 0')

    def one_run():
        run_flow('many', {'LOGGING': {'logdir': str(tmp_path), 'console': False}},
                 {'s1': (helper, {}), 's2': (helper, {})}, construct='thread')

    one_run()  # the first run may import modules that make their own loggers
    before = _registry()
    for _ in range(20):
        one_run()
    after = _registry()
    assert after.keys() == before.keys()
    assert not [n for n in after if n.startswith('many-')]


def test_stop_keeps_a_users_logger_under_the_run_name_and_relinks_it(tmp_path):
    user = logging.getLogger('mine-r1.s1_1.audit')  # made before the run: placeholders above it
    rl = RunLogging('mine-r1', {'logdir': str(tmp_path), 'console': False})
    flow_logger = rl.start()
    assert user.parent is flow_logger
    logging.getLogger('mine-r1.s1_1').info('a task logger of the run')
    logging.getLogger('mine-r1.s2_1.sub').info('and one below a placeholder')
    rl.stop()
    registry = logging.Logger.manager.loggerDict
    try:
        assert registry['mine-r1.s1_1.audit'] is user
        assert isinstance(registry['mine-r1.s1_1'], logging.PlaceHolder)
        assert isinstance(registry['mine-r1'], logging.PlaceHolder)
        assert not [n for n in registry if n.startswith('mine-r1.s2_1')]
        assert user.parent is logging.getLogger()  # no more the run's (silent) flow logger
        fresh = logging.getLogger('mine-r1')  # a later logger of that name adopts it, as logging does
        assert user.parent is fresh
    finally:
        for name in ('mine-r1.s1_1.audit', 'mine-r1.s1_1', 'mine-r1'):
            registry.pop(name, None)


def test_stop_gives_back_a_users_flow_logger_as_it_was(tmp_path):
    user = logging.getLogger('kept-r1')
    user.setLevel(logging.ERROR)
    rl = RunLogging('kept-r1', {'logdir': str(tmp_path), 'console': False})
    assert rl.start() is user and user.propagate is False
    rl.stop()
    try:
        assert logging.Logger.manager.loggerDict['kept-r1'] is user
        assert user.level == logging.ERROR and user.propagate is True and user.handlers == []
    finally:
        del logging.Logger.manager.loggerDict['kept-r1']


def test_stop_cleans_placeholders_above_a_dotted_flow_name(tmp_path):
    before = _registry()
    for run in range(3):
        rl = RunLogging(f'pkg.flow.py-{run}', {'logdir': str(tmp_path), 'console': False})
        rl.start()
        logging.getLogger(f'pkg.flow.py-{run}.s1_1.1').info('x')
        rl.stop()
    assert _registry() == before


def test_stop_keeps_placeholders_above_that_still_hold_other_loggers(tmp_path):
    other = logging.getLogger('shared.other')  # makes the placeholder 'shared'
    try:
        rl = RunLogging('shared.flow-1', {'logdir': str(tmp_path), 'console': False})
        rl.start()
        rl.stop()
        holder = logging.Logger.manager.loggerDict['shared']
        assert isinstance(holder, logging.PlaceHolder) and list(holder.loggerMap) == [other]
        assert 'shared.flow-1' not in logging.Logger.manager.loggerDict
    finally:
        for name in ('shared.other', 'shared'):
            logging.Logger.manager.loggerDict.pop(name, None)


def test_stopping_a_run_keeps_the_loggers_of_a_run_still_going_below_it(tmp_path):
    outer = RunLogging('nest-r1', {'logdir': str(tmp_path), 'console': False})
    inner = RunLogging('nest-r1.5', {'logdir': str(tmp_path), 'console': False})  # a run_id with a dot
    outer.start()
    inner_logger = inner.start()
    inner.task_started('nest-r1.5.s1_1')
    logging.getLogger('nest-r1.5.s1_1').info('mark before 0')
    outer.stop()
    registry = logging.Logger.manager.loggerDict
    assert registry['nest-r1.5'] is inner_logger
    assert isinstance(registry['nest-r1'], logging.PlaceHolder)  # the outer run's logger is gone
    logging.getLogger('nest-r1.5.s1_1').info('mark after 0')  # still reaches the inner run's files
    inner.stop()
    assert marks([inner.task_log_path('nest-r1.5.s1_1')]) == {('before', 0): 1, ('after', 0): 1}
    assert not [n for n in registry if n.startswith('nest-r1')]


def test_two_runs_of_one_logger_name_share_it_until_the_last_stops(tmp_path):
    user = logging.getLogger('twice-r1')
    first = RunLogging('twice-r1', {'logdir': str(tmp_path / 'a'), 'console': False})
    second = RunLogging('twice-r1', {'logdir': str(tmp_path / 'b'), 'console': False})
    try:
        first.start(), second.start()
        first.stop()
        assert logging.Logger.manager.loggerDict['twice-r1'] is user and user.propagate is False
        user.info('mark second 0')
        second.stop()
        assert user.propagate is True and user.level == logging.NOTSET and user.handlers == []
        assert marks([second.run_log_path]) == {('second', 0): 1}
    finally:
        logging.Logger.manager.loggerDict.pop('twice-r1', None)


def test_a_failed_start_leaves_no_logger_behind(tmp_path):
    rl = RunLogging('failing-start', {'logdir': str(tmp_path), 'console': False, 'when': 'h', 'atTime': 'x'})
    with pytest.raises(logs.ConfigError):
        rl.start()
    rl.stop()
    assert 'failing-start' not in logging.Logger.manager.loggerDict


# ------------------------------------------------------------------ modes

def test_folders_and_files_are_private_by_default(tmp_path, umask0):
    logdir = tmp_path / 'new' / 'logs'
    rl = RunLogging('priv', {'logdir': str(logdir), 'console': False, 'maxBytes': 150, 'backupCount': 3})
    log = rl.start()
    rl.task_started('priv.t_1')
    logging.getLogger('priv.t_1').info('mark t 0')
    for i in range(5):
        log.info('mark r %d', i)  # rotates: the new run log is made by the handler again
    rl.stop()
    assert mode_of(logdir) == 0o700 and mode_of(tmp_path / 'new') == 0o700
    files = os.listdir(logdir)
    assert len(files) > 2 and 'priv.log.1' in files
    assert {f: mode_of(logdir / f) for f in files} == dict.fromkeys(files, 0o600)


def test_configured_modes_are_used_as_given(tmp_path, umask0):
    config = load_config({'LOGGING': {'logdir_mode': '0o750', 'logfile_mode': '0640'}})['LOGGING']
    assert (config['logdir_mode'], config['logfile_mode']) == (0o750, 0o640)
    rl = RunLogging('cfg', {**config, 'logdir': str(tmp_path / 'logs'), 'console': False})
    rl.start()
    rl.stop()
    assert mode_of(tmp_path / 'logs') == 0o750 and mode_of(rl.run_log_path) == 0o640


def test_raw_settings_accept_octal_strings_too(tmp_path, umask0):
    rl = RunLogging('raw', {'logdir': str(tmp_path / 'l'), 'console': False, 'logfile_mode': '644'})
    rl.start()
    rl.stop()
    assert mode_of(rl.run_log_path) == 0o644
    with pytest.raises(logs.ConfigError, match='LOGGING.logfile_mode'):
        RunLogging('raw', {'logfile_mode': '0o999'})


def test_umask_only_removes_bits(tmp_path):
    old = os.umask(0o077)
    try:
        rl = RunLogging('um', {'logdir': str(tmp_path / 'l'), 'console': False,
                               'logdir_mode': 0o755, 'logfile_mode': 0o644})
        rl.start()
        rl.stop()
    finally:
        os.umask(old)
    assert mode_of(tmp_path / 'l') == 0o700 and mode_of(rl.run_log_path) == 0o600


def test_existing_folder_and_files_keep_their_modes(tmp_path, umask0):
    logdir = tmp_path / 'logs'
    logdir.mkdir(mode=0o755)
    (logdir / 'old.log').write_text('before\n')
    os.chmod(logdir / 'old.log', 0o644)
    rl = RunLogging('old', {'logdir': str(logdir), 'console': False})
    rl.start().info('after')
    rl.stop()
    assert mode_of(logdir) == 0o755 and mode_of(logdir / 'old.log') == 0o644
    assert read(logdir / 'old.log').startswith('before\n') and 'after' in read(logdir / 'old.log')


def test_process_task_files_are_private_too(tmp_path, umask0, flow_config):
    logdir = tmp_path / 'logs'
    run_flow('procmode', flow_config(LOGGING={'maxBytes': 400, 'backupCount': 100}),
             {'s1': (chatty, {'tag': 's1', 'lines': 20})}, run_id='r1')
    files = os.listdir(logdir)
    assert 'procmode-r1.s1_1.log' in files and 'procmode-r1.log.1' in files
    assert {f: mode_of(logdir / f) for f in files} == dict.fromkeys(files, 0o600)
