"""The keeper: the launcher's parent, which ends what the launcher's death leaves of the tasks.

:class:`sequent.eventor.launcher.ProcessLauncher` (the coordinator's side) forks the keeper with
:func:`keeper_main` at the very start of a run, before the coordinator opens its database or starts
a thread.  The launcher (:mod:`sequent.eventor.forkserver`, which describes the whole design) is
not forked by the coordinator directly but by the keeper.

The keeper is a small process (also a fork of the coordinator) that is the launcher's parent and a
child subreaper (``PR_SET_CHILD_SUBREAPER``).  The launcher lists the pid of every unreaped task
child in a table in memory shared with the keeper.  Should the launcher die outright (``SIGKILL``,
sent by ``stop`` to an unresponsive launcher or by anyone else), the kernel hands its children to
the keeper, which sends ``SIGKILL`` to the group of every listed child before it reaps it, tells the
coordinator how the launcher ended (through a pipe: the launcher's pid at the start, its wait status
at the end), and exits.  The keeper also reaps the programs orphaned inside task groups, so none is
left a zombie.  It runs in a process group of its own, so a ``SIGKILL`` to the coordinator's whole
group still leaves it to clean up; only a ``SIGKILL`` of the keeper itself (which sequent never
sends) leaves the programs of running tasks to be ended by hand.

The coordinator's side takes from here the keeper's report format, :data:`KEEPER_REPORT`.
"""

from __future__ import annotations

import gc
import mmap
import os
import signal
import socket
import struct
from typing import Callable, NoReturn

from .forkserver import LIVE_SOCKETS, exit_after, launcher_main
from .procfs import stat_fields
from .taskchild import PR_SET_PDEATHSIG, RunChild, close_quietly

__all__ = ['KEEPER_REPORT', 'keeper_main']

_PR_SET_CHILD_SUBREAPER = 36
_PF_EXITING = 0x4              # /proc/PID/stat flags: the process has begun to exit
_TABLE_SLOTS = 1 << 16         # task children the keeper can know of at once (256 KiB, touched as used)
_KEEPER_DRAIN = 10             # seconds the keeper waits at most for killed processes to end
KEEPER_REPORT = struct.Struct('!i')   # keeper -> coordinator: the launcher's pid, then its wait status

_SIGKILL = int(signal.SIGKILL)
_SIGKILL_BIT = 1 << (_SIGKILL - 1)


# --------------------------------------------------------------------------------------------
# Setting up the keeper (the launcher inherits it)


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl via ctypes (loaded once in the launcher), or None where unavailable."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


def _reset_inherited_signals(mask: set[signal.Signals]) -> None:
    """In the keeper (the launcher inherits it): drop the coordinator's Python signal handlers and
    wakeup fd, which mean nothing here, then take ``mask``, the coordinator's signal mask.

    ProcessLauncher.start() forks with SIGINT and SIGTERM blocked, so neither can arrive before
    they are set here.
    """
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a pending SIGINT is discarded here
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)    # SIG_IGN would reap children behind our back
    # A task's group is not the terminal's foreground group: reading the terminal would stop it
    # (SIGTTIN) and hang the run.  Ignored, such a read fails with EIO instead, and a write goes
    # through even with ``stty tostop``.  Children, and programs they exec, inherit this.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    # A SIGTERM to the whole process group must not kill the launcher (and, through the
    # parent-death signal, every task at once): the coordinator decides, and ends the launcher
    # through its socket.  Blocked, not ignored, so a child only has to unblock it.
    signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) | {signal.SIGTERM})


# --------------------------------------------------------------------------------------------
# The keeper


def _proc_stat(pid: int) -> tuple[str, int, int, int, int] | None:
    """(state, parent pid, process group, flags, pending signals) of a process; None when gone."""
    fields = stat_fields(pid)
    try:
        return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[6]), int(fields[28])
    except (TypeError, ValueError, IndexError):  # gone (None), or unreadable
        return None


def _children(pid: int) -> list[int]:
    """The pids of a process's children, from /proc."""
    try:
        with open(f'/proc/{pid}/task/{pid}/children', 'rb') as f:
            return [int(x) for x in f.read().split()]
    except OSError:    # a kernel without CONFIG_PROC_CHILDREN: look through every process
        return [int(e) for e in os.listdir('/proc')
                if e.isdigit() and (_proc_stat(int(e)) or ('', 0))[1] == pid]


def _tell(fd: int, value: int) -> None:
    """Send one number to the coordinator; it may be gone, which is no error here."""
    try:
        os.write(fd, KEEPER_REPORT.pack(value))
    except OSError:
        pass


class _Keeper:
    """The launcher's parent and subreaper: it ends what the launcher's death leaves of the tasks.

    While the launcher lives, the keeper only reaps what is orphaned below it (a program whose task
    has ended and whose group the launcher killed), so none is left a zombie.  When the launcher
    dies, the kernel hands its children to the keeper; the keeper kills the group of every one the
    launcher listed as unreaped before reaping it.  It kills a group only while the group's leader is
    its own unreaped child (checked in /proc), so the group id cannot be someone else's.
    """

    def __init__(self, launcher: int, table: memoryview) -> None:
        self.me = os.getpid()
        self.launcher = launcher
        self.table = table

    def wait_launcher(self) -> int:
        """Reap the orphans handed to the keeper until the launcher ends; its wait status."""
        while True:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)   # found, not reaped yet
            if info.si_pid == self.launcher:
                return os.waitpid(self.launcher, 0)[1]
            if info.si_pid in self._listed():   # a task child of a launcher that is dying
                self._kill_group(info.si_pid)
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                pass

    def end_tasks(self) -> None:
        """After the launcher's death: kill the group of every task child it left unreaped."""
        for pid in self._listed():
            self._kill_group(pid)

    def drain(self) -> None:
        """Reap the children that are ending (killed with their group); within _KEEPER_DRAIN s."""
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(_KEEPER_DRAIN)     # a process stuck in the kernel must not keep us (and stop())
        reaped = True
        while reaped:
            reaped = False
            for child in _children(self.me):
                stat = _proc_stat(child)
                if stat is None or stat[1] != self.me:
                    continue
                state, _, _, flags, pending = stat
                if state in 'ZX' or flags & _PF_EXITING or pending & _SIGKILL_BIT:
                    try:
                        os.waitpid(child, 0)
                        reaped = True
                    except ChildProcessError:
                        pass
            # what is left lives on (a program that left its task's group): init inherits it

    def _listed(self) -> set[int]:
        """The pids the launcher listed as its unreaped task children."""
        used = min(self.table[0], len(self.table) - 1)
        return set(self.table[1:used + 1].tolist()) - {0}

    def _kill_group(self, pid: int) -> None:
        """SIGKILL the process group led by ``pid``, if ``pid`` is our own child not yet reaped."""
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == self.me and stat[2] == pid:
            try:
                os.killpg(pid, _SIGKILL)
            except OSError:
                pass


def keeper_main(sock: socket.socket, report: int, run_child: RunChild,
                mask: set[signal.Signals], use_pidfd: bool) -> NoReturn:
    """Entry point of the keeper process (forked by ProcessLauncher.start()); it only ever leaves
    through os._exit.

    It forks the launcher, tells the coordinator the launcher's pid through ``report``, waits for
    the launcher's end, ends the tasks it left, tells the coordinator the launcher's wait status,
    reaps what it killed, and exits.  ``sock`` is the launcher's end of the coordinator's socket,
    ``mask`` the coordinator's signal mask, and ``use_pidfd`` False makes the launcher watch its
    children through SIGCHLD even where pidfds work (tests exercise that fallback so).
    """
    def body() -> None:
        _reset_inherited_signals(mask)
        for other in list(LIVE_SOCKETS):   # detach: the copied object must not close a reused fd
            if other.fileno() >= 0:
                close_quietly([other.detach()])
        prctl = _load_prctl()
        if prctl is not None:
            prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)   # orphans below come to us, not to init
            prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)          # warm ctypes up for the task children
        table = memoryview(mmap.mmap(-1, _TABLE_SLOTS * 4)).cast('i')   # shared with the launcher
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            _tell(report, 0)
            raise
        if pid == 0:
            try:
                os.close(report)
            finally:
                launcher_main(sock, run_child, table, prctl, use_pidfd)
        # A group of its own: a signal to the coordinator's whole group (SIGKILL, SIGQUIT) that ends
        # the launcher leaves the keeper to end the tasks.  The launcher stays in the coordinator's.
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        sock.close()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})  # a gone coordinator: EPIPE, no death
        keeper = _Keeper(pid, table)
        _tell(report, pid)
        status = keeper.wait_launcher()
        keeper.end_tasks()
        _tell(report, status)
        os.close(report)
        keeper.drain()
    exit_after(body)
