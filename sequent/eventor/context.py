"""Who is running: the current task's identity, for thread and process tasks alike.

A process task sets the real environment of its own process.  Thread tasks share one process,
so while a run has thread tasks, ``os.environ`` is replaced by a view that shows each thread
its own task's variables (``os.getenv('SEQUENT_STEP_NAME')`` then works in a thread as in a
process); everything else reads and writes the real environment as before.
"""

from __future__ import annotations

import contextvars
import os
import threading
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional


@dataclass(frozen=True)
class TaskContext:
    """The identity of a running task, as its function may ask for it."""

    step: str
    sequence: str
    recovery: int
    logger_name: str
    run_id: str
    env: Mapping[str, str]  # the variables set for the task, e.g. SEQUENT_STEP_NAME
    try_number: int = 1  # which try of the step this is (1, 2, ... with retries)
    final_try: bool = True  # a failure of this try is the task's failure (no retry is left)
    item: object = None  # the item of the innermost repeated container around it (None: none)


_current: contextvars.ContextVar[Optional[TaskContext]] = contextvars.ContextVar("sequent_task", default=None)


def current_task() -> Optional[TaskContext]:
    """The task running in this thread or process, or None outside tasks."""
    return _current.get()


def enter_task(ctx: TaskContext) -> contextvars.Token:
    return _current.set(ctx)


def leave_task(token: contextvars.Token) -> None:
    _current.reset(token)


class _TaskEnviron(os._Environ):  # type: ignore[name-defined,misc]
    """``os.environ`` with the current thread task's variables laid over it."""

    def __init__(self, base: "os._Environ"):  # type: ignore[name-defined]
        super().__init__(base._data, base.encodekey, base.decodekey, base.encodevalue, base.decodevalue)
        self._base = base

    def _overlay(self) -> Optional[Mapping[str, str]]:
        ctx = _current.get()
        return ctx.env if ctx is not None else None

    def __getitem__(self, key: str) -> str:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            return overlay[key]
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        overlay = self._overlay()
        seen = set()
        for key in super().__iter__():
            seen.add(key)
            yield key
        if overlay:
            yield from (key for key in overlay if key not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict:
        return dict(self)


_install_lock = threading.Lock()
_install_count = 0
_original_environ: Optional[os._Environ] = None  # type: ignore[name-defined]


def install_thread_environ() -> None:
    """Show thread tasks their own variables through ``os.environ`` (counted; see :func:`uninstall`)."""
    global _install_count, _original_environ
    with _install_lock:
        if _install_count == 0:
            _original_environ = os.environ
            os.environ = _TaskEnviron(os.environ)  # type: ignore[assignment]
        _install_count += 1


def uninstall_thread_environ() -> None:
    """Undo one :func:`install_thread_environ`; the real mapping is back after the last one."""
    global _install_count, _original_environ
    with _install_lock:
        if _install_count == 0:
            return
        _install_count -= 1
        if _install_count == 0 and _original_environ is not None:
            os.environ = _original_environ
            _original_environ = None
