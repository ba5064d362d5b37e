"""The live progress line: drawn on a terminal (a pseudo-terminal here), never in a log file, never
on a pipe; log lines printed above it; redrawn at most at its rate."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

from sequent.eventor.progress import CLEAR, LiveLine, Progress
from sequent.eventor.summary import FAILURE, RUNNING, SUCCESS, WAITING

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')

FLOW = textwrap.dedent('''
    import logging, os, sys, time
    import sequent as seq

    def work(seconds):
        time.sleep(seconds)
        logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).info('worked %s', seconds)

    logdir, construct, extra = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    flow = seq.Sequent(name='live', store=os.path.join(logdir, 'store.db'),
                       config={'task_construct': construct, 'LOGGING': {'logdir': logdir, **extra}})
    loop = flow.add_step('loop', repeats=[1, 2])
    first = loop.add_step('first', func=work, args=(0.25,))
    loop.add_step('second', func=work, args=(0.25,), requires=((first, seq.STEP_SUCCESS),))
    sys.exit(0 if flow.run() else 1)
''')


def flow_command(tmp_path: Path, construct: str, extra: str = '{}') -> tuple[list[str], dict]:
    script = tmp_path / 'liveflow.py'
    script.write_text(FLOW)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''), TERM='xterm')
    env.pop('COLUMNS', None)
    return [sys.executable, str(script), str(tmp_path / 'logs'), construct, extra], env


def run_on_terminal(tmp_path: Path, construct: str, extra: str = '{}') -> tuple[int, str]:
    """Run the flow with its stdout and stderr on a pseudo-terminal of 160 columns; (exit status, output)."""
    command, env = flow_command(tmp_path, construct, extra)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 160, 0, 0))
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=60), b''.join(chunks).decode('utf-8', 'replace')


def run_log(tmp_path: Path) -> str:
    return next(p for p in (tmp_path / 'logs').glob('live-*.log') if p.name.count('.') == 1).read_text()


def live_lines(output: str) -> list[str]:
    """What the live line showed, each drawing: the text after a clear-line, up to the next control."""
    plain = output.replace(CLEAR, '\0')
    return [ANSI.sub('', piece.split('\r')[0].split('\n')[0]) for piece in plain.split('\0')[1:]]


def test_a_run_on_a_terminal_shows_a_live_line_of_its_progress_that_no_log_file_holds(tmp_path):
    status, output = run_on_terminal(tmp_path, 'thread')
    assert status == 0, output
    shown = [line for line in live_lines(output) if line.startswith('live: ')]
    done = [int(m.group(1)) for line in shown for m in [re.search(r'(\d+) done, (\d+) running', line)] if m]
    assert max(done) >= 2  # redrawn as tasks ended
    assert any(re.search(r'\bin loop 1\.[12]\b', line) for line in shown)  # the container's iteration
    assert 'Summary: run ' in output and 'Processing finished with: success' in output
    for log in (tmp_path / 'logs').glob('*.log'):
        text = log.read_text()
        assert ' done, ' not in text and '\x1b[' not in text and '\r' not in text, log.name


def test_log_lines_of_process_tasks_print_whole_above_the_live_line(tmp_path):
    status, output = run_on_terminal(tmp_path, 'process')
    assert status == 0, output
    assert any(re.search(r'\d+ done', line) for line in live_lines(output))
    lines = ANSI.sub('', output.replace(CLEAR, '\n')).replace('\r\n', '\n').split('\n')
    worked = [line for line in lines if 'worked 0.25' in line]
    assert len(worked) == 4 and all(line.startswith('[ ') and line.endswith(' ]') for line in worked)


def test_progress_false_draws_no_live_line_on_a_terminal(tmp_path):
    status, output = run_on_terminal(tmp_path, 'thread', "{'progress': False}")
    assert status == 0, output
    assert ' done, ' not in output and CLEAR not in output
    assert 'worked 0.25' in output  # the log lines are still there


def test_a_run_on_a_pipe_draws_no_live_line(tmp_path):
    command, env = flow_command(tmp_path, 'thread', "{'console_level': 'INFO'}")
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'worked 0.25' in done.stdout and 'Summary: run ' in done.stdout
    assert ' done, ' not in done.stdout + done.stderr and '\x1b[' not in done.stdout + done.stderr


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_line_goes_above_the_live_line_which_is_drawn_again_below_it():
    screen = FakeTerminal()
    line = LiveLine(screen, use_rich=False)
    line.show([('3 done', '')])
    line.write_above('a log line\n')
    line.close()
    assert screen.getvalue() == f'{CLEAR}3 done{CLEAR}a log line\n{CLEAR}3 done{CLEAR}'


def test_progress_redraws_at_most_at_its_rate_and_says_when_the_next_drawing_is_due():
    now = [100.0]
    screen = FakeTerminal()
    progress = Progress(LiveLine(screen, use_rich=False), 'f', rate=10, clock=lambda: now[0])
    counts = [0] * 6
    counts[SUCCESS], counts[RUNNING], counts[WAITING], counts[FAILURE] = 1, 2, 3, 1
    progress.update(counts, [('loop', '1.2')])
    assert progress.wait() is None
    now[0] += 0.04
    counts[SUCCESS] = 2
    progress.update(counts, [])
    assert screen.getvalue().count(CLEAR) == 1  # too soon: not drawn yet
    assert abs(progress.wait() - 0.06) < 1e-9
    now[0] += 0.06
    progress.update(counts, [])
    assert progress.wait() is None
    drawn = screen.getvalue().split(CLEAR)[1:]
    assert drawn[0].startswith('f: 1 done, 2 running, 3 waiting, 1 failed · in loop 1.2')
    assert drawn[1].startswith('f: 2 done, 2 running, 3 waiting, 1 failed')
