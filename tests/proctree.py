"""Finding and killing a set of processes by PID through /proc: the shared core of the test
daemons' ``stop`` (tests/sshhosts.py, tests/daskcluster.py, tests/pgserver.py).

Those daemons are found and stopped by PID rather than by a name or a process group, because what
they start (ssh sessions, a worker's task subprocesses, commands that detached themselves) leaves
their group and outlives its parent.  A PID is reused once its process is gone, so a recorded PID
is only trusted together with the start time it had (:func:`alive`), and a zombie counts as gone:
it has ended, only its parent has not reaped it yet.

Only the standard library is used, so that the scripts importing this one run with the system
python3 (before the virtualenv exists) as well as with the virtualenv's; each imports it as
``proctree``, its own folder being on ``sys.path`` whether it runs as a script or is imported by
the tests' conftest.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Iterable, NamedTuple, Optional

KILL_TIMEOUT = 10.0  # seconds every process of a set may take to be gone after SIGKILL


class Stat(NamedTuple):
    """The fields of ``/proc/PID/stat`` the helpers here use."""

    state: str  # R, S, D, T, Z, X, ...
    ppid: int  # the parent's PID
    session: int  # the session id: the PID of the session's leader
    start_time: int  # clock ticks after boot; with the PID, it names one process for good


def stat(pid: int) -> Optional[Stat]:
    """The :class:`Stat` of process ``pid``, or None when it is gone.

    The command name in parentheses may hold spaces and parentheses itself, so the fields are
    split after its last ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return Stat(fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19]))


def alive(pid: Optional[int], start_time: Optional[int] = None) -> bool:
    """True while ``pid`` runs (a zombie has ended) and, when ``start_time`` is given, is still the
    process started then (not another one that reused its PID)."""
    if pid is None:
        return False
    info = stat(pid)
    return (info is not None and info.state not in ("Z", "X")
            and (start_time is None or info.start_time == start_time))


def tree(roots: Iterable[int], also: Optional[Callable[[int, Stat], bool]] = None) -> set[int]:
    """Every live process among ``roots`` and below them, with the processes for which
    ``also(pid, stat)`` holds and their descendants (one scan of /proc).

    ``also`` catches what parentage misses: a process whose parent died is re-parented to init, so
    it is found again by what it kept of its origin (its session, its namespace)."""
    children: dict[int, list[int]] = {}
    seeds = set(roots)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        info = stat(pid)
        if info is None:
            continue
        children.setdefault(info.ppid, []).append(pid)
        if also is not None and also(pid, info):
            seeds.add(pid)
    found: set[int] = set()
    todo = list(seeds)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return {pid for pid in found if alive(pid)}


def send_signal(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids``; one already gone is skipped."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(pids: Iterable[int]) -> None:
    """Reap those of ``pids`` that are our own ended children (a daemon started in-process), so
    that they do not stay zombies; the others are left alone."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except OSError:  # not our child, or gone
            pass


def wait_gone(collect: Callable[[], set[int]], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until ``collect()`` is empty; True if it became so."""
    deadline = time.monotonic() + timeout
    while collect():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def kill_all(collect: Callable[[], set[int]], timeout: float = KILL_TIMEOUT,
             error: type[Exception] = RuntimeError, settle: float = 0.5) -> set[int]:
    """SIGKILL what ``collect()`` returns until it returns nothing; return every PID killed.

    The processes are first stopped (SIGSTOP) until no new one appears, so that none forks a
    child we have not seen while its siblings are being killed.  Those killed are reaped if they
    are our children, and given ``settle`` seconds to be gone before ``collect()`` is swept again;
    ``error`` (the caller's own exception class) is raised when some are still there ``timeout``
    seconds after the first SIGKILL."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        seen: set[int] = set()
        for _ in range(20):
            pids = collect() - seen
            if not pids:
                break
            send_signal(pids, signal.SIGSTOP)
            seen |= pids
        send_signal(seen, signal.SIGKILL)
        killed |= seen
        reap(killed)
        if wait_gone(collect, settle):
            return killed
        if time.monotonic() > deadline:
            raise error(f"processes still alive {timeout:.0f} s after SIGKILL: {sorted(collect())}")
