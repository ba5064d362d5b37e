"""The task child: what runs in the process the launcher forks for one task, and what it reports.

The launcher (:mod:`sequent.eventor.forkserver`) forks one child per task, or a spare ahead of
need; the child sheds the launcher's state, calls ``run_child`` and sends its outcome through its
result pipe as one length-prefixed pickle (:mod:`sequent.eventor.wire`).  This runs once per task
in a fresh fork, and every distinct call costs page faults in each child, so the path is kept short.

The outcome statuses and types are defined here, where outcomes are made, with the two small
helpers the child needs; the launcher, the keeper and the coordinator's side import them from here.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from types import ModuleType
from typing import Callable, NoReturn, Protocol

from .wire import HEADER, MAX_MESSAGE, PROTOCOL, read_exactly, write_all

try:        # the C module: in a fresh child, signal.signal's enum wrapping costs ~100 us a call
    import _signal
except ImportError:  # pragma: no cover - not CPython
    _signal = signal  # type: ignore[assignment]

__all__ = ['FAILURE', 'PR_SET_PDEATHSIG', 'SUCCESS', 'ChildSetup', 'Outcome', 'RunChild', 'child_main',
           'close_quietly', 'flush_stdio']

Outcome = tuple[str, str, str, str]   # (status, result text, error text, traceback text)
RunChild = Callable[[int, tuple, dict], Outcome]

SUCCESS = 'success'
FAILURE = 'failure'

PR_SET_PDEATHSIG = 1           # prctl option; the keeper also calls it once to warm ctypes up

_SIGINT = int(signal.SIGINT)
_SIGTERM = int(signal.SIGTERM)
_SIGCHLD = int(signal.SIGCHLD)
_SIG_DFL = int(signal.SIG_DFL)
_SIG_IGN = int(signal.SIG_IGN)
_SIGKILL = int(signal.SIGKILL)


class ChildSetup(Protocol):
    """What a new child takes from the launcher it was forked from (the launcher is one)."""

    run_child: RunChild
    my_pid: int                             # the launcher's pid
    prctl: Callable[..., int] | None
    use_pidfd: bool
    fds: set[int]                           # every fd of the launcher's own
    old_nofile: tuple[int, int] | None      # the open-files limit before the launcher raised it
    resource: ModuleType | None


# --------------------------------------------------------------------------------------------
# Small helpers, shared with the launcher, the keeper and the coordinator's side


def close_quietly(fds: 'list[int] | set[int]') -> None:
    """Close file descriptors, ignoring ones already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def flush_stdio(ignore: type[BaseException] = BaseException) -> None:
    """Flush Python's stdout/stderr buffers (os._exit would drop them, a fork would copy them)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except ignore:  # a child ignores everything here: nothing may stop it from exiting
            pass


# --------------------------------------------------------------------------------------------
# The child's body


def child_main(launcher: ChildSetup, wfd: int, step_index: int, sequence: tuple, payload: dict,
               cmd: int = -1) -> NoReturn:
    """Body of a task child: shed the launcher's state, run the task, report, exit.

    The spare child (``cmd`` >= 0) first waits on its command pipe for its task; end of file
    there means the launcher is stopping.  Every distinct call here costs page faults in each
    child, so the path is kept short.
    """
    code = 0
    try:
        _prepare_child(launcher)
        if cmd >= 0:
            header = read_exactly(cmd, HEADER.size)
            if header is None:
                os._exit(0)
            step_index, sequence, payload = pickle.loads(read_exactly(cmd, HEADER.unpack(header)[0]))
        outcome = _run_task(launcher.run_child, step_index, sequence, payload)
        _write_outcome(wfd, outcome)
        flush_stdio()
    except BaseException:  # noqa: B036 - a child must never return into the launcher loop
        code = 1
    finally:
        os._exit(code)


def _prepare_child(launcher: ChildSetup) -> None:
    """In a new child: lead a process group, die with the launcher, restore signals, close fds."""
    os.setpgid(0, 0)
    if launcher.prctl is not None:
        launcher.prctl(PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != launcher.my_pid:    # the launcher died before prctl took effect
            os._exit(1)
    if not launcher.use_pidfd:
        _signal.set_wakeup_fd(-1)
        _signal.signal(_SIGCHLD, _SIG_DFL)
    # SIGTERM is at its default but blocked in the launcher; a fork has no pending signals.
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (_SIGTERM,))
    close_quietly(launcher.fds)
    if launcher.old_nofile is not None and launcher.resource is not None:
        launcher.resource.setrlimit(launcher.resource.RLIMIT_NOFILE, launcher.old_nofile)


def _exception_text(exc: BaseException) -> str:
    """One-line 'Type: message' text of an exception."""
    return ''.join(traceback.format_exception_only(type(exc), exc)).strip()


def _run_task(run_child: RunChild, step_index: int, sequence: tuple, payload: dict) -> Outcome:
    """Call ``run_child`` with Ctrl-C enabled and turn anything it does into an outcome tuple.

    SIGINT raises KeyboardInterrupt only while ``run_child`` runs; afterwards it is ignored so that
    the outcome is always written whole.
    """
    try:
        _signal.signal(_SIGINT, _signal.default_int_handler)
        try:
            value = run_child(step_index, sequence, payload)
        finally:
            _signal.signal(_SIGINT, _SIG_IGN)
        if not (isinstance(value, (tuple, list)) and len(value) == 4 and value[0] in (SUCCESS, FAILURE)
                and all(isinstance(x, str) for x in value[1:])):
            raise TypeError(f'run_child returned an invalid outcome: {value!r:.300}')
        return tuple(value)
    except SystemExit as exc:
        if exc.code is None or exc.code == 0:
            return (SUCCESS, '', '', '')
        return (FAILURE, '', _exception_text(exc), traceback.format_exc())
    except BaseException as exc:  # noqa: B036 - a task's failure of any kind is reported, not raised
        return (FAILURE, '', _exception_text(exc), traceback.format_exc())


def _write_outcome(fd: int, outcome: Outcome) -> None:
    """Send the outcome to the launcher as one length-prefixed pickle."""
    data = pickle.dumps(outcome, PROTOCOL)
    if len(data) > MAX_MESSAGE:
        error = f'task outcome too large to report ({len(data)} bytes)'
        data = pickle.dumps((FAILURE, '', error, ''), PROTOCOL)
    write_all(fd, HEADER.pack(len(data)) + data)
