"""One coordinator per run: who holds a run, whether that holder is still alive, and the lease.

The lock is a row in the store (see :meth:`Store.take_lock`).  Its token names the holder's host
and its processes (the coordinator and, with process tasks, its launcher), each with its kernel
start time, so a reused pid never passes for the holder.  A holder on this host is alive while
one of its processes is; a holder on another host while it keeps its heartbeat fresh.

A coordinator keeps its hold as a :class:`Lease`: a thread of its own refreshes the heartbeat,
whatever the coordinator's thread is busy with, and the coordinator starts a task only while
the lease is confirmed recent.  A coordinator that was paused (SIGSTOP, a frozen machine) finds
its lease too old when it wakes, confirms it against the store before it starts anything, and
learns there that another coordinator took the run over.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional

from .logs import HOST
from .procfs import stat_fields

#: A holder on another host that has not beaten for this long is taken for dead.
STALE_AFTER = 60.0
#: How often a coordinator refreshes its heartbeat.
HEARTBEAT_EVERY = 10.0


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), or None if it is gone."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):  # a zombie is dead, only not reaped yet
        return None
    return fields[19].decode()


def _identity(pid: int) -> str:
    return f"{pid}:{_start_time(pid) or time.time()}"


def my_token(helper_pid: Optional[int] = None) -> str:
    """This process's identity as a lock holder: host, pid and start time, then its helper's (the
    process launcher, which may outlive it for a moment while it stops the tasks)."""
    token = f"{HOST}:{_identity(os.getpid())}"
    return token if helper_pid is None else f"{token}:{_identity(helper_pid)}"


def _processes(token: str) -> tuple[str, list[tuple[int, str]]]:
    """The host and the (pid, start time) pairs a token names."""
    host, *rest = token.split(":")
    pairs = []
    for i in range(0, len(rest) - 1, 2):
        try:
            pairs.append((int(rest[i]), rest[i + 1]))
        except ValueError:
            pass
    return host, pairs


def _alive(pid: int, started: str) -> bool:
    return _start_time(pid) == started


#: The run_ids this process coordinates now: a lock row naming this process for another run_id is
#: left over from a run whose end could not be written (the store was away), so it is stale.
ACTIVE: set[str] = set()


def is_stale(holder: Any, now: Optional[float] = None) -> bool:
    """True when the holder of a lock row can no longer be running the run, or its tasks."""
    host, pairs = _processes(holder.token)
    if host == HOST:
        if pairs and pairs[0][0] == os.getpid() and _alive(*pairs[0]) and holder.run_id not in ACTIVE:
            return not any(_alive(pid, started) for pid, started in pairs[1:])
        return not any(_alive(pid, started) for pid, started in pairs)
    return ((now or time.time()) - holder.heartbeat) > STALE_AFTER


def draining(holder: Any) -> Optional[int]:
    """The pid of a holder's helper still stopping its tasks after its coordinator died, else None.

    A recovery waits for it: starting a task again while its first copy is being stopped would
    run it twice.
    """
    host, pairs = _processes(holder.token)
    if host != HOST or not pairs or _alive(*pairs[0]):
        return None
    return next((pid for pid, started in pairs[1:] if _alive(pid, started)), None)


def describe(holder: Any) -> str:
    return (f"process {holder.pid} on {holder.host} "
            f"(since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.acquired))})")


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


#: Seconds on a clock that also counts time the process or machine was stopped.
_clock: Callable[[], float] = _boottime if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


class Lease:
    """A coordinator's hold on its run's lock, refreshed by a thread and checked before each start.

    ``beat()`` refreshes the heartbeat in the store and returns False once the lock is no longer
    ours; ``on_lost()`` is called (from the heartbeat thread) when that is found, to wake the
    coordinator.  :meth:`check` is what the coordinator calls before it starts tasks: cheap while
    the last confirmation is recent, a synchronous beat otherwise.
    """

    def __init__(self, beat: Callable[[], bool], *, on_lost: Callable[[], None] = lambda: None,
                 every: Optional[float] = None, stale_after: Optional[float] = None,
                 logger: Optional[logging.Logger] = None):
        self._beat = beat
        self._on_lost = on_lost
        self.every = HEARTBEAT_EVERY if every is None else every
        self.stale_after = STALE_AFTER if stale_after is None else stale_after
        # how old a confirmation may be for a start to rely on it: half the stale limit, so a
        # replacement on another host, which waits for the whole limit, can never overlap a start
        self.fresh_for = self.stale_after / 2
        self._log = logger or logging.getLogger(__name__)
        self._mutex = threading.Lock()  # one beat at a time: the thread's or the coordinator's
        self._confirmed = (_clock(), time.time())
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.lost = False
        self.error: Optional[BaseException] = None  # the last failed beat's error, if it failed

    def check(self) -> bool:
        """True when the run is still ours: may the coordinator start tasks now?"""
        if self.lost:
            return False
        mono, wall = self._confirmed  # by both clocks; this runs before every launch
        if _clock() - mono < self.fresh_for and time.time() - wall < self.fresh_for:
            return True
        return self.confirm()

    def confirm(self) -> bool:
        """Beat now; False (and lost) when another coordinator holds the run.  Store errors propagate."""
        with self._mutex:
            if self.lost:
                return False
            if self._beat():
                self._confirmed = (_clock(), time.time())
                self.error = None
                return True
            self.lost = True
        return False

    def start(self) -> None:
        """Start the heartbeat thread."""
        self._thread = threading.Thread(target=self._run, name="sequent-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                ours = self.confirm()
            except Exception as exc:  # noqa: BLE001 - the store is away: try again next beat
                if self.error is None:
                    self._log.warning("Could not refresh the run's heartbeat: %s; retrying every %g s", exc,
                                      self.every)
                self.error = exc
                continue
            if not ours:
                self._on_lost()
                return
