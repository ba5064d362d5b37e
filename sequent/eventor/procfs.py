"""Reading a process's state from /proc (Linux), for the run lock and the keeper."""

from __future__ import annotations

from typing import Optional


def stat_fields(pid: int) -> Optional[list[bytes]]:
    """The fields of /proc/PID/stat after the command name (state first), or None when it is gone.

    The command name sits between parentheses and may hold spaces or parentheses itself, so the
    fields are split after its last ')'.
    """
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b')') + 2:].split()
