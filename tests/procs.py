"""Looking at processes through /proc in tests: whether one lives, and what lives in a group.

A zombie has ended (only its parent has not reaped it yet), so it never counts as alive here.
"""

from __future__ import annotations

import os
import selectors
import time

import pytest

from sequent.eventor.launcher import Completion, ProcessLauncher
from sequent.eventor.procfs import stat_fields


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process, or None when it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else (fields[0].decode(), int(fields[1]), int(fields[2]))


def is_alive(pid: int) -> bool:
    """Not gone and not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ('Z', 'X')


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir('/proc') if entry.isdigit()]


def group_alive(pgrp: int) -> set[int]:
    """The live processes of a process group."""
    alive = set()
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat[2] == pgrp and stat[0] not in ('Z', 'X'):
            alive.add(pid)
    return alive


def wait_for(launcher: ProcessLauncher, n: int, timeout: float = 30.0) -> list[Completion]:
    """Select on the launcher until ``n`` completions are collected; fail (not hang) on timeout."""
    got: list[Completion] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(launcher.fileno(), selectors.EVENT_READ)
        while len(got) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f'only {len(got)} of {n} completions within {timeout}s: {got!r:.2000}')
            sel.select(remaining)
            got += launcher.collect()
    assert len(got) == n, got
    return got
