"""The launcher: the forked process that forks one child per task and reports how each ended.

:class:`sequent.eventor.launcher.ProcessLauncher` (the coordinator's side) forks the keeper
(:func:`sequent.eventor.keeper.keeper_main`) at the very start of a run, before the coordinator
opens its database or starts a thread; the keeper forks the launcher, whose loop is in this module.
The launcher is a fork of the coordinator too, so it already holds the whole program (functions,
closures, arguments): a task is started by a small message naming the task, and the launcher forks
a child that calls ``run_child`` and reports the outcome through a pipe (the child's body is
:mod:`sequent.eventor.taskchild`).  The launcher is single-threaded, so forking from it is safe
even when the coordinator has threads.

Protocol: coordinator and launcher talk over an ``AF_UNIX``/``SOCK_STREAM`` socket pair carrying
the messages of :mod:`sequent.eventor.wire` (length-prefixed pickles).  A child sends its outcome
the same way over its own pipe.  The launcher waits with :mod:`selectors` on the socket, each
child's result pipe and each child's pidfd (or, without ``os.pidfd_open``, a ``SIGCHLD`` wakeup
pipe), so it never polls.  When the coordinator goes away (end of file on the socket) the launcher
terminates its children (``SIGTERM``, then ``SIGKILL`` after a grace period), reaps them and exits;
each child also asks the kernel for ``SIGKILL`` should the launcher itself die.

Nothing a task starts outlives it.  Every task child leads a process group of its own
(``setpgid`` in the child right after the fork and in the launcher, so the group exists before
either acts), and every signal meant for a task goes to its whole group: ``signal_tasks``,
``signal_task`` (one task's group only, for a per-step timeout), ``stop`` and the end of the
coordinator.  When a task child has ended, the launcher sends ``SIGKILL`` to what is left of its
group before it reaps the child (the unreaped child keeps the group id from being reused), so a
program the task started and did not wait for ends with it.  Only a program
that leaves the group on purpose (a new session or process group, as daemons do) escapes this.

The launcher itself is not forked by the coordinator directly but by a *keeper*
(:mod:`sequent.eventor.keeper`): the launcher's parent and a child subreaper, with which the
launcher shares a table of the pids of its unreaped task children.  Should the launcher die
outright, the keeper kills the group of every listed child before it reaps it and tells the
coordinator how the launcher ended.

Besides :func:`launcher_main`, which the keeper calls, the coordinator's side takes from here what
both sides must agree on: the message kinds and a few small helpers.  The keeper's report format is
in :mod:`sequent.eventor.keeper`, the outcome statuses in :mod:`sequent.eventor.taskchild`.
"""

from __future__ import annotations

import gc
import os
import selectors
import signal
import socket
import sys
import time
import traceback
import weakref
from typing import Callable, NoReturn

from .taskchild import RunChild, child_main, close_quietly, flush_stdio
from .wire import CHUNK, encode, first_message, has_whole_message, take_messages, write_all

__all__ = ['LIVE_SOCKETS', 'MSG_LAUNCH', 'MSG_SIGNAL', 'MSG_SIGNAL_TASK', 'MSG_STOP', 'decode_status',
           'describe_end', 'exit_after', 'launcher_main']

_ORPHAN_GRACE = 5.0            # seconds a task gets after SIGTERM when the coordinator vanished

# Coordinator -> launcher message kinds.
MSG_LAUNCH = 0
MSG_SIGNAL = 1
MSG_STOP = 2
MSG_SIGNAL_TASK = 3             # (MSG_SIGNAL_TASK, task_id, signum): one task's process group only

# Kinds of selector registrations inside the launcher.
_EV_SOCK = 0
_EV_RESULT = 1
_EV_EXIT = 2
_EV_WAKE = 3

_SIGKILL = int(signal.SIGKILL)


# Coordinator-side sockets of live launchers: a launcher forked later closes its copies of them, so
# that each launcher sees end of file as soon as the coordinator is gone.
LIVE_SOCKETS: 'weakref.WeakSet[socket.socket]' = weakref.WeakSet()


# --------------------------------------------------------------------------------------------
# Small helpers, shared with the coordinator's side


def _signal_name(signum: int) -> str:
    """``SIGKILL`` for 9, or ``signal N`` for a number the platform does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f'signal {signum}'


def describe_end(what: str, exitcode: int | None, signum: int | None) -> str:
    """How a process ended, in words: 'task process was killed by signal 9 (SIGKILL)'."""
    if signum is not None:
        return f'{what} was killed by signal {signum} ({_signal_name(signum)})'
    if exitcode is not None:
        return f'{what} exited with code {exitcode}'
    return f'{what} ended for an unknown reason'


def decode_status(status: int) -> tuple[int | None, int | None]:
    """Split a wait status into (exit code, signal); exactly one is set for an ended process."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


# --------------------------------------------------------------------------------------------
# The launcher process


class _Task:
    """A task child as the launcher tracks it, until it is reaped."""

    __slots__ = ('task_id', 'pid', 'rfd', 'pidfd', 'buf', 'cmd', 'slot')

    def __init__(self, task_id: int | None, pid: int, rfd: int) -> None:
        self.task_id = task_id  # None: the spare child, not given a task yet
        self.cmd = -1           # the spare's command pipe, until a task is written to it
        self.pid = pid          # also its process group id
        self.rfd = rfd          # result pipe, -1 once closed
        self.pidfd = -1         # -1 when closed or in SIGCHLD mode
        self.buf = bytearray()
        self.slot = 0           # its entry in the table shared with the keeper; 0: none


def _pidfd_works(wanted: bool) -> bool:
    """Whether pidfds are ``wanted`` (tests turn them off), os.pidfd_open is present, and the kernel
    allows it (seccomp may refuse it)."""
    if not wanted or not hasattr(os, 'pidfd_open'):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True



def _raise_fd_limit() -> tuple[int, int] | None:
    """Raise the soft open-files limit (each running task costs two fds); return the old limits."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 16
        if soft == resource.RLIM_INFINITY or soft >= target:
            return None
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return soft, hard
    except (ImportError, OSError, ValueError):
        return None


class _Launcher:
    """The launcher's event loop: forks task children, collects their outcomes, reports them."""

    def __init__(self, sock: socket.socket, run_child: RunChild, table: memoryview,
                 prctl: Callable[..., int] | None, use_pidfd: bool) -> None:
        self.sock = sock
        self.run_child = run_child
        self.table = table      # [0]: slots in use so far; then the pids of unreaped children
        self.free_slots: list[int] = []
        self.my_pid = os.getpid()
        self.sel = selectors.DefaultSelector()
        self.tasks: dict[int, _Task] = {}          # by pid, until reaped
        self.by_id: dict[int, _Task] = {}          # the same with a task, by task id
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.chunk = bytearray(CHUNK)
        self.view = memoryview(self.chunk)
        self.peer_gone = False
        self.spare: _Task | None = None  # a child forked ahead, waiting for its task
        self.want_write = False
        self.stopping = False
        self.killed = False
        self.deadline = 0.0
        self.wake_r = self.wake_w = -1
        self.prctl = prctl      # loaded (and warmed up: that halves the call in children) by the keeper
        self.old_nofile = _raise_fd_limit()
        self.resource = sys.modules.get('resource')
        self.use_pidfd = _pidfd_works(use_pidfd)
        # Every fd of the launcher's own, which a new child closes first thing.
        self.fds: set[int] = {sock.fileno(), self.sel.fileno()}
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, (_EV_SOCK, None))
        if not self.use_pidfd:
            self._install_sigchld_wakeup()

    def _install_sigchld_wakeup(self) -> None:
        """Fallback without pidfds: SIGCHLD writes to a wakeup pipe that the selector watches."""
        self.wake_r, self.wake_w = os.pipe()
        self.fds.update((self.wake_r, self.wake_w))
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, (_EV_WAKE, None))

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until told to stop (or orphaned) and every child is reaped and reported."""
        while not (self.stopping and not self.tasks and (not self.outbuf or self.peer_gone)):
            timeout = None
            if self.stopping and not self.killed:
                timeout = max(0.0, self.deadline - time.monotonic())
            for key, mask in self.sel.select(timeout):
                kind, task = key.data
                if kind == _EV_RESULT:
                    self._read_result(task)
                elif kind == _EV_EXIT:
                    self._on_pidfd(task)
                elif kind == _EV_SOCK:
                    if mask & selectors.EVENT_READ:
                        self._read_socket()
                else:
                    self._on_sigchld()
            if self.stopping and not self.killed and time.monotonic() >= self.deadline:
                self._signal_all(signal.SIGKILL)
                self.killed = True
            self._flush()

    # -- coordinator socket ------------------------------------------------------------------

    def _read_socket(self) -> None:
        """Take in what the coordinator sent and act on every whole message."""
        try:
            n = self.sock.recv_into(self.chunk)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            self._lose_peer()
            return
        self.inbuf += self.view[:n]
        for message in take_messages(self.inbuf):
            self._dispatch(message)

    def _dispatch(self, message: tuple) -> None:
        """Carry out one coordinator message."""
        kind = message[0]
        if kind == MSG_LAUNCH:
            self._spawn(*message[1:])
        elif kind == MSG_SIGNAL:
            self._signal_all(message[1])
        elif kind == MSG_SIGNAL_TASK:
            self._signal_one(message[1], message[2])
        elif kind == MSG_STOP:
            self._begin_stop(message[1])

    def _lose_peer(self) -> None:
        """The coordinator is gone: nobody to report to, so end the tasks and exit."""
        self.peer_gone = True
        self.outbuf.clear()
        try:
            self.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self._begin_stop(_ORPHAN_GRACE)

    def _flush(self) -> None:
        """Send buffered completions without blocking; watch for writability while some remain."""
        if self.peer_gone:
            return
        if self.outbuf:
            try:
                sent = self.sock.send(self.outbuf, socket.MSG_NOSIGNAL)
                del self.outbuf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._lose_peer()
                return
        want = bool(self.outbuf)
        if want != self.want_write:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self.sel.modify(self.sock, events, (_EV_SOCK, None))
            self.want_write = want

    def _report(self, task_id: int, pid: int, exitcode: int | None, signum: int | None,
                raw: bytes | None, error: str) -> None:
        """Queue one completion for the coordinator; ``raw`` is the child's own pickled outcome."""
        if not self.peer_gone:
            self.outbuf += encode((task_id, pid, exitcode, signum, raw, error))

    # -- stopping ----------------------------------------------------------------------------

    def _signal_all(self, signum: int) -> None:
        """Send a signal to the process group of every task child not yet reaped.

        An unreaped child keeps its pid, and so its group id, from being reused: the group is ours.
        """
        for pid in list(self.tasks):
            try:
                os.killpg(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _signal_one(self, task_id: int, signum: int) -> None:
        """Send a signal to the process group of one task child, if it is not reaped yet (else the
        task has ended and its completion is on its way: nothing to do)."""
        task = self.by_id.get(task_id)
        if task is not None:
            try:
                os.killpg(task.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _end_group(self, task: _Task) -> None:
        """Call just before reaping an ended task child: kill what is left of its group, unlist it.

        SIGKILL, not SIGTERM then SIGKILL: the task has ended, so what is left is work nobody
        waits for; a grace period would mean watching the group after its leader is reaped, when
        its id no longer stays ours.  A program that must shut down cleanly is the task's to wait
        for (SIGTERM reaches the whole group on every stop, while the task still lives).  The
        spare child's group holds only itself until it runs a task.
        """
        try:
            os.killpg(task.pid, _SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._unlist(task)      # before the reap: a listed pid is always one not reaped yet

    def _unlist(self, task: _Task) -> None:
        """Free a child's slot in the table shared with the keeper."""
        if task.slot:
            self.table[task.slot] = 0
            self.free_slots.append(task.slot)
            task.slot = 0

    def _list(self, pid: int) -> int:
        """Enter a new child in the table shared with the keeper; its slot, or 0 when full."""
        if self.free_slots:
            slot = self.free_slots.pop()
        else:
            slot = self.table[0] + 1
            if slot >= len(self.table):
                return 0
            self.table[0] = slot
        self.table[slot] = pid
        return slot

    def _begin_stop(self, grace: float) -> None:
        """SIGTERM the children now; the main loop SIGKILLs them once ``grace`` seconds have passed."""
        deadline = time.monotonic() + max(0.0, grace)
        if self.stopping:
            self.deadline = min(self.deadline, deadline)
            return
        self.stopping = True
        self.deadline = deadline
        spare, self.spare = self.spare, None
        if spare is not None and spare.cmd >= 0:  # EOF on its command pipe: it exits
            self.fds.discard(spare.cmd)
            close_quietly([spare.cmd])
            spare.cmd = -1
        self._signal_all(signal.SIGTERM)

    # -- task children -----------------------------------------------------------------------

    def _spawn(self, task_id: int, step_index: int, sequence: tuple, payload: dict) -> None:
        """Run a task in the spare child if there is one, else in a new child; then fork a spare.

        The spare is forked ahead of need, off the critical path: a dependent task starts as
        soon as its assignment is written, not after a fork (which costs milliseconds here).
        """
        if self.stopping:
            self._report(task_id, 0, None, None, None, 'launcher is stopping; task not started')
            return
        spare, self.spare = self.spare, None
        if spare is not None and self._assign(spare, task_id, (step_index, sequence, payload)):
            self._fork_spare()
            return
        if self._fork(task_id, lambda wfd: child_main(self, wfd, step_index, sequence, payload)):
            self._fork_spare()

    def _fork_spare(self) -> None:
        """Fork the child the next task will run in; it waits on its command pipe until then."""
        self._fork(None, lambda wfd, cmd: child_main(self, wfd, 0, (), {}, cmd))

    def _assign(self, spare: _Task, task_id: int, work: tuple) -> bool:
        """Hand a task to the spare child; False when the spare has gone meanwhile."""
        cmd, spare.cmd = spare.cmd, -1
        self.fds.discard(cmd)
        try:
            if spare.pid not in self.tasks:
                return False
            write_all(cmd, encode(work))
            spare.task_id = task_id
            self.by_id[task_id] = spare
            return True
        except OSError:
            return False
        finally:
            os.close(cmd)

    def _fork(self, task_id: int | None, body: Callable[..., NoReturn]) -> bool:
        """Fork a child running ``body(result_wfd[, command_rfd])`` and watch its pipe and exit.

        ``task_id`` None forks the spare, which also gets a command pipe to wait on.
        """
        pipes: list[int] = []
        try:
            rfd, wfd = os.pipe()
            pipes += [rfd, wfd]
            if task_id is None:
                crfd, cwfd = os.pipe()
                pipes += [crfd, cwfd]
            pid = os.fork()
        except OSError as exc:
            close_quietly(pipes)
            if task_id is not None:
                self._report(task_id, 0, None, None, None, f'could not start task process: {exc}')
            return False
        if pid == 0:
            try:
                if task_id is None:
                    os.close(cwfd)
                    body(wfd, crfd)
                else:
                    body(wfd)
            finally:
                os._exit(1)
        try:        # the child does the same first thing: whichever runs first, the group exists
            os.setpgid(pid, pid)    # before the launcher can signal it or the task can fork
        except OSError:
            pass
        os.close(wfd)
        os.set_blocking(rfd, False)
        self.fds.add(rfd)
        task = _Task(task_id, pid, rfd)
        task.slot = self._list(pid)
        if task_id is not None:
            self.by_id[task_id] = task
        if task_id is None:
            os.close(crfd)
            task.cmd = cwfd
            self.fds.add(cwfd)
            self.spare = task
        self.tasks[pid] = task
        self.sel.register(rfd, selectors.EVENT_READ, (_EV_RESULT, task))
        if self.use_pidfd:
            try:
                task.pidfd = os.pidfd_open(pid)
                self.fds.add(task.pidfd)
            except OSError as exc:
                self._end_group(task)
                self._finish(task, os.waitpid(pid, 0)[1], f'could not watch task process: {exc}')
                return False
            self.sel.register(task.pidfd, selectors.EVENT_READ, (_EV_EXIT, task))
        return True

    def _read_result(self, task: _Task) -> None:
        """Read what a child wrote so far; stop watching the pipe once its outcome is whole."""
        if task.rfd < 0:
            return              # a stale event: the pipe was closed earlier in this round
        try:
            n = os.readv(task.rfd, [self.chunk])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n:
            task.buf += self.view[:n]
        if n == 0 or has_whole_message(task.buf):
            self._close_result(task)

    def _close_result(self, task: _Task) -> None:
        """Unregister and close a child's result pipe."""
        self.sel.unregister(task.rfd)
        self.fds.discard(task.rfd)
        os.close(task.rfd)
        task.rfd = -1

    def _drain_result(self, task: _Task) -> None:
        """After the child ended: take what is left in its pipe (never blocks) and close it."""
        while task.rfd >= 0:
            try:
                n = os.readv(task.rfd, [self.chunk])
            except (BlockingIOError, InterruptedError):
                n = 0   # a grandchild still holds the write end; the child's own writes are all here
            except OSError:
                n = 0
            if n == 0:
                self._close_result(task)
            else:
                task.buf += self.view[:n]

    def _on_pidfd(self, task: _Task) -> None:
        """A child's pidfd is readable: it has ended, so end its group and reap it."""
        if task.pidfd < 0:
            return
        self._end_group(task)
        try:
            pid, status = os.waitpid(task.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = task.pid, -1
        if pid:
            self._finish(task, status)

    def _on_sigchld(self) -> None:
        """Fallback mode: SIGCHLD woke us; reap every child that has ended."""
        try:
            while os.read(self.wake_r, CHUNK):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self.tasks:
            try:    # find an ended child without reaping it, so that its group id stays ours
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is None:
                break
            task = self.tasks.get(info.si_pid)
            if task is not None:
                self._end_group(task)
            try:
                _, status = os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                continue
            if task is not None:
                self._finish(task, status)

    def _finish(self, task: _Task, status: int, error: str = '') -> None:
        """A child was reaped: release its fds and report its outcome, or why there is none."""
        del self.tasks[task.pid]
        if task.task_id is not None and self.by_id.get(task.task_id) is task:
            del self.by_id[task.task_id]
        if task.cmd >= 0:  # a spare that ended before it got a task (stopping, or killed)
            self.fds.discard(task.cmd)
            close_quietly([task.cmd])
            task.cmd = -1
        if self.spare is task:
            self.spare = None
        if task.pidfd >= 0:
            self.sel.unregister(task.pidfd)
            self.fds.discard(task.pidfd)
            os.close(task.pidfd)
            task.pidfd = -1
        self._drain_result(task)
        exitcode, signum = decode_status(status) if status >= 0 else (None, None)
        if task.task_id is None:
            return
        raw = first_message(task.buf)
        if raw is None and not error:
            error = describe_end('task process', exitcode, signum) + ' without a result'
        self._report(task.task_id, task.pid, exitcode, signum, raw, error)


def launcher_main(sock: socket.socket, run_child: RunChild, table: memoryview,
                  prctl: Callable[..., int] | None, use_pidfd: bool) -> NoReturn:
    """Entry point of the launcher process (forked by the keeper); it only ever leaves through os._exit."""
    def body() -> None:
        gc.freeze()   # a collection in a child then skips inherited objects: fewer copy-on-write faults
        _Launcher(sock, run_child, table, prctl, use_pidfd).run()
    exit_after(body)


def exit_after(body: Callable[[], None]) -> NoReturn:
    """Run a forked process's ``body``, then leave through os._exit: 0, or 70 with the traceback
    printed when it raised; a fork must never return into the code it was forked from."""
    code = 0
    try:
        body()
    except BaseException:  # noqa: B036 - whatever happens, the fork ends here
        code = 70
        try:
            traceback.print_exc()
            flush_stdio()
        except BaseException:  # noqa: B036
            pass
    finally:
        os._exit(code)
