"""One coordinator per run: who holds a run, and whether that holder is still alive.

The lock is a row in the store (see :meth:`Store.take_lock`).  A holder on this host is alive
while its process exists with the same start time (a reused pid does not count); a holder on
another host is alive while it keeps its heartbeat fresh.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from .logs import HOST

#: A holder on another host that has not beaten for this long is taken for dead.
STALE_AFTER = 60.0
#: How often a coordinator refreshes its heartbeat.
HEARTBEAT_EVERY = 10.0


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # a zombie is dead, only not reaped yet
        return None
    return fields[19]


def my_token() -> str:
    """This process's identity as a lock holder: host, pid and start time."""
    pid = os.getpid()
    return f"{HOST}:{pid}:{_start_time(pid) or time.time()}"


def is_stale(holder: Any, now: Optional[float] = None) -> bool:
    """True when the holder of a lock row can no longer be running the run."""
    host, _, rest = holder.token.partition(":")
    if host == HOST:
        pid_text, _, started = rest.partition(":")
        try:
            pid = int(pid_text)
        except ValueError:
            return True
        if pid == os.getpid() and holder.token == my_token():
            return False
        return _start_time(pid) != started
    return ((now or time.time()) - holder.heartbeat) > STALE_AFTER


def describe(holder: Any) -> str:
    return f"process {holder.pid} on {holder.host} (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.acquired))})"
