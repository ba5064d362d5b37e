"""The process runner of the engine, as the coordinator uses it: :class:`ProcessLauncher`.

The coordinator calls :meth:`ProcessLauncher.start` at the very start of a run, before it opens its
database or starts a thread.  That forks a *keeper*, which forks the *launcher*: a single-threaded
fork of the coordinator that forks one child per task.  What runs in those processes lives in
:mod:`sequent.eventor.keeper`, :mod:`sequent.eventor.forkserver` (the launcher, whose docstring
describes the design: process groups, the keeper, pidfd or SIGCHLD watching) and
:mod:`sequent.eventor.taskchild` (a task child's body).  A task is started by a small message naming it; its completion comes
back the same way, both as the length-prefixed pickles of :mod:`sequent.eventor.wire` over one
``AF_UNIX`` socket pair, which the coordinator can select on.

Nothing a task starts outlives it: every task child leads a process group, and every signal meant
for a task (``signal_tasks``, ``signal_task``, ``stop``, the end of the coordinator) goes to its whole
group.  The
keeper tells this side, through a pipe, the launcher's pid at the start and its wait status at the
end, so that tasks lost with a dead launcher are failed with the reason.
"""

from __future__ import annotations

import os
import pickle
import select
import selectors
import signal
import socket
import threading
import time

from .outcome import OutcomeStatus, TaskOutcome
from .forkserver import (LIVE_SOCKETS, MSG_LAUNCH, MSG_SIGNAL, MSG_SIGNAL_TASK, MSG_STOP, decode_status,
                         describe_end)
from .keeper import KEEPER_REPORT, keeper_main
from .taskchild import RunChild, close_quietly, flush_stdio
from .wire import CHUNK, encode, take_messages

__all__ = ['Completion', 'ProcessLauncher']

_STOP_MARGIN = 10.0            # seconds stop() waits beyond `grace` before it SIGKILLs the launcher

# Tests set this to False to exercise the SIGCHLD fallback; read by start(), which hands it to the
# launcher it forks.
_USE_PIDFD = hasattr(os, 'pidfd_open')


#: What collect() hands out for each task: the engine's one outcome type (kept under this name for
#: the launcher's own users).
Completion = TaskOutcome


class ProcessLauncher:
    """Runs each task in its own forked process, by way of one launcher process forked early.

    Each task process leads a process group; nothing left in it outlives the task (see the docstring
    of :mod:`sequent.eventor.forkserver`, which also describes the keeper, the launcher's parent).

    Use from the coordinator: ``start()`` before any thread or database exists, then ``launch()``
    tasks, select on ``fileno()`` and ``collect()`` completions, and ``stop()`` at the end.  Methods
    are serialized by a lock, but the class is meant for one coordinating thread.
    """

    def __init__(self, run_child: RunChild, *, name: str = 'sequent-launcher',
                 private_fds: tuple[int, ...] = ()) -> None:
        """``run_child(step_index, sequence, payload)`` runs in the task child and returns
        ``(status, result_text, error_text, traceback_text)``, status ``'success'``/``'failure'``.
        ``private_fds`` are closed in the keeper at once, so no task inherits them (an agent's channel)."""
        self._run_child = run_child
        self._name = name
        self._private_fds = tuple(private_fds)
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._keeper: int | None = None       # the keeper's pid: the launcher's parent, our child
        self._keeper_reaped = False
        self._report_fd = -1                  # from the keeper: the launcher's pid, its wait status
        self._report = bytearray()
        self._pid: int | None = None          # the launcher's pid, once the keeper told it
        self._stopped = False
        self._dead = False                    # the launcher ended and was reaped
        self._death: tuple[int | None, int | None] = (None, None)
        self._running: set[int] = set()
        self._pending: list[Completion] = []  # completions made here, handed out by collect()
        self._inbuf = bytearray()
        self._chunk = bytearray(4 * CHUNK)
        self._view = memoryview(self._chunk)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Fork the keeper, which forks the launcher, now (once; later calls do nothing)."""
        with self._lock:
            if self._keeper is not None or self._stopped:
                if self._stopped:
                    raise RuntimeError(f'{self._name}: cannot start a stopped launcher')
                return
            flush_stdio(Exception)   # else the launcher and each task would write it out again
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            report_r, report_w = os.pipe()
            # SIGINT and SIGTERM stay blocked across the fork: the keeper sets its dispositions
            # before it unblocks them, so a signal sent right after start() cannot find it (or the
            # launcher it forks) still running the coordinator's handlers.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                pid = os.fork()
            except BaseException:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                mine.close()
                theirs.close()
                close_quietly([report_r, report_w])
                raise
            if pid == 0:
                try:
                    mine.close()
                    os.close(report_r)
                    close_quietly(list(self._private_fds))
                finally:
                    keeper_main(theirs, report_w, self._run_child, mask, _USE_PIDFD)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            theirs.close()
            os.close(report_w)
            self._sock = mine
            self._keeper = pid
            self._report_fd = report_r
            LIVE_SOCKETS.add(mine)

    def stop(self, grace: float = 5.0) -> list[Completion]:
        """End the launcher and return the completions not collected yet.

        Running tasks get SIGTERM, then SIGKILL after ``grace`` seconds, each with its whole process
        group (what it started); the launcher reaps them and reports them (as failures), then exits.
        A launcher that does not end within ``grace`` + _STOP_MARGIN seconds is SIGKILLed, and its
        keeper kills the groups of the tasks it left.  The keeper is reaped here.  Idempotent.
        """
        with self._lock:
            if self._stopped:
                return []
            self._stopped = True
            if self._sock is None:
                return []
            out = self._take_pending()
            if not self._dead:
                try:
                    self._sock.sendall(encode((MSG_STOP, grace)), socket.MSG_NOSIGNAL)
                except OSError:
                    pass
                self._read_until_eof(out, max(0.0, grace) + _STOP_MARGIN)
                self._launcher_gone(out)
            self._reap_keeper(block=True)
            LIVE_SOCKETS.discard(self._sock)
            self._sock.close()
            return out

    def __enter__(self) -> 'ProcessLauncher':
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- queries -----------------------------------------------------------------------------

    def fileno(self) -> int:
        """The fd to select on: readable when completions (or the launcher's end) can be collected."""
        if self._sock is None or self._stopped:
            raise RuntimeError(f'{self._name}: not running')
        return self._sock.fileno()

    @property
    def running(self) -> int:
        """Tasks launched and not yet collected."""
        return len(self._running)

    @property
    def pid(self) -> int | None:
        """The launcher's process id, once started (None if it could not be forked)."""
        with self._lock:
            return self._launcher_pid()

    @property
    def keeper_pid(self) -> int | None:
        """The keeper's process id, once started: the launcher's parent, which outlives it briefly."""
        return self._keeper

    @property
    def alive(self) -> bool:
        """Started, not stopped, and not seen dead by collect() (a death is noticed on collect)."""
        return self._keeper is not None and not self._stopped and not self._dead

    # -- tasks -------------------------------------------------------------------------------

    def launch(self, task_id: int, step_index: int, sequence: tuple, payload: dict) -> None:
        """Have the launcher fork a child running ``run_child(step_index, sequence, payload)``.

        If the launcher has died, the task's failure is handed out by the next collect().
        """
        with self._lock:
            sock = self._require_started()
            if task_id in self._running:
                raise ValueError(f'task {task_id} is already running')
            if self._dead:
                self._pending.append(self._lost(task_id, 'task not started'))
                return
            message = encode((MSG_LAUNCH, task_id, step_index, sequence, payload))
            self._running.add(task_id)
            try:
                sock.sendall(message, socket.MSG_NOSIGNAL)
            except OSError:
                pass    # the launcher died; collect() sees end of file and fails this task

    def collect(self) -> list[Completion]:
        """Everything completed so far, without blocking.

        If the launcher has died, every task still running is returned as a failure naming how the
        launcher ended (its exit code or signal are in the completion).
        """
        with self._lock:
            if self._sock is None or self._stopped:
                return []
            out = self._take_pending()
            if not self._dead:
                eof = self._receive(out)
                if eof:
                    self._launcher_gone(out)
            return out

    def signal_tasks(self, signum: int) -> None:
        """Send ``signum`` to the process group of every running task: the task and the programs it
        started (for instance SIGINT to interrupt them)."""
        with self._lock:
            sock = self._require_started()
            if self._dead:
                return
            try:
                sock.sendall(encode((MSG_SIGNAL, int(signum))), socket.MSG_NOSIGNAL)
            except OSError:
                pass

    def signal_task(self, task_id: int, signum: int) -> bool:
        """Send ``signum`` to the process group of one running task (the task and the programs it
        started, no other task's); True when it was sent, False when the task is not running here.

        A task that has just ended may still count as running until its completion is collected:
        the signal then reaches nothing, and the completion comes as it would have."""
        with self._lock:
            sock = self._require_started()
            if self._dead or task_id not in self._running:
                return False
            try:
                sock.sendall(encode((MSG_SIGNAL_TASK, task_id, int(signum))), socket.MSG_NOSIGNAL)
            except OSError:
                return False    # the launcher died; collect() fails the task with the reason
            return True

    # -- internals ---------------------------------------------------------------------------

    def _require_started(self) -> socket.socket:
        """The socket, or RuntimeError when the launcher was never started or is stopped."""
        if self._sock is None:
            raise RuntimeError(f'{self._name}: start() was not called')
        if self._stopped:
            raise RuntimeError(f'{self._name}: stopped')
        return self._sock

    def _take_pending(self) -> list[Completion]:
        """Hand out the completions made on this side."""
        out, self._pending = self._pending, []
        return out

    def _receive(self, out: list[Completion]) -> bool:
        """Read all that is available now, append whole completions to ``out``; True at EOF."""
        assert self._sock is not None
        eof = False
        while True:
            try:
                n = self._sock.recv_into(self._chunk, 0, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                n = 0
            if n == 0:
                eof = True
                break
            self._inbuf += self._view[:n]
            if n < len(self._chunk):
                break
        self._parse(out)
        return eof

    def _parse(self, out: list[Completion]) -> None:
        """Turn the whole messages in the input buffer into completions."""
        out.extend(self._completion(*message) for message in take_messages(self._inbuf))

    def _completion(self, task_id: int, pid: int, exitcode: int | None, signum: int | None,
                    raw: bytes | None, error: str) -> Completion:
        """Build a Completion from a launcher message (decoding the child's own outcome)."""
        self._running.discard(task_id)
        if raw is not None:
            try:
                status, result, err, tb = pickle.loads(raw)
                return TaskOutcome(task_id, OutcomeStatus(status), result, err, tb, pid=pid, exitcode=exitcode,
                                   signal=signum)
            except Exception as exc:
                error = f'undecodable outcome from task process: {exc!r}'
        return TaskOutcome.failed(task_id, error, pid=pid, exitcode=exitcode, signal=signum)

    def _read_until_eof(self, out: list[Completion], timeout: float) -> None:
        """Collect until the launcher closes its end; SIGKILL it if it takes more than ``timeout``."""
        assert self._sock is not None and self._keeper is not None
        deadline = time.monotonic() + timeout
        killed = False
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while not self._receive(out):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if killed:
                        return
                    # Its children follow (parent-death signal), and the keeper, to which the kernel
                    # hands them, kills their process groups: nothing the tasks started survives.
                    try:
                        os.kill(self._launcher_pid() or self._keeper, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    killed = True
                    deadline = time.monotonic() + _STOP_MARGIN
                    continue
                sel.select(remaining)

    def _launcher_gone(self, out: list[Completion]) -> None:
        """Learn how the launcher ended (from its keeper) and fail every task it had not reported."""
        self._read_report(2 * KEEPER_REPORT.size, _STOP_MARGIN)
        if len(self._report) >= 2 * KEEPER_REPORT.size:
            status = KEEPER_REPORT.unpack_from(self._report, KEEPER_REPORT.size)[0]
            self._reap_keeper(block=False)      # else stop() reaps it
        else:       # the keeper could not fork the launcher, or died itself: its own end tells
            status = self._reap_keeper(block=True)
        self._death = decode_status(status) if status is not None else (None, None)
        self._dead = True
        for task_id in sorted(self._running):
            out.append(self._lost(task_id, 'task lost'))
        self._running.clear()

    def _launcher_pid(self) -> int | None:
        """The launcher's pid: the first number on the keeper's pipe, sent right after its fork."""
        if self._pid is None and self._keeper is not None:
            self._read_report(KEEPER_REPORT.size, _STOP_MARGIN)
            if len(self._report) >= KEEPER_REPORT.size:
                self._pid = KEEPER_REPORT.unpack_from(self._report)[0] or None
        return self._pid

    def _read_report(self, size: int, timeout: float) -> None:
        """Read the keeper's pipe until ``size`` bytes have come in all, its end, or ``timeout``."""
        if self._report_fd < 0:
            return
        poller = select.poll()
        poller.register(self._report_fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while len(self._report) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return
            data = os.read(self._report_fd, size - len(self._report))
            if not data:
                os.close(self._report_fd)
                self._report_fd = -1
                return
            self._report += data

    def _reap_keeper(self, block: bool) -> int | None:
        """Reap the keeper (it exits soon after the launcher); its wait status, if reaped now."""
        if self._keeper is None or self._keeper_reaped:
            return None
        try:
            pid, status = os.waitpid(self._keeper, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status = self._keeper, None
        if not pid:
            return None
        self._keeper_reaped = True
        if self._report_fd >= 0:
            os.close(self._report_fd)
            self._report_fd = -1
        return status

    def _lost(self, task_id: int, what: str) -> Completion:
        """A failure for a task the launcher can no longer run or report."""
        exitcode, signum = self._death
        error = f'{describe_end(f"launcher process {self._name!r}", exitcode, signum)}; {what}'
        return TaskOutcome.failed(task_id, error, pid=0, exitcode=exitcode, signal=signum)
