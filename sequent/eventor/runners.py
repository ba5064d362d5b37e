"""Calling a step's function, and the thread pool that runs thread tasks.

:func:`run_step` is the one wrapper every construct uses (thread, invoke, and the child of a
process task), so a task's environment, logger and error report are the same everywhere.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any, Callable, Optional

from .context import TaskContext, enter_task, leave_task
from .logs import describe_exception, reset_task_label, set_task_label
from .model import StepDef

#: A task's outcome as runners report it: (status, result text, error text, traceback text).
Outcome = tuple[str, str, str, str]

_RESULT_LIMIT = 10_000


def task_label(step: str, sequence: str) -> str:
    """The name a task's log lines show as their process, e.g. ``Task-s2(1)``."""
    return f"Task-{step}({sequence})"


def result_text(value: Any) -> str:
    """The stored form of a return value: its repr, cut to a sane size; never raises."""
    if value is None:
        return ""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not fail a task that succeeded
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= _RESULT_LIMIT else text[:_RESULT_LIMIT] + "...<cut>"


def _describe(exc: BaseException) -> tuple[str, str]:
    """The error text and traceback, starting at the user's function (this wrapper's frame cut)."""
    if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
        exc = exc.with_traceback(exc.__traceback__.tb_next)
    return describe_exception(exc)


def run_step(step: StepDef, ctx: TaskContext) -> Outcome:
    """Call ``step.func`` as the task ``ctx``: context, label and extra kwargs set, errors caught."""
    kwargs = dict(step.kwargs)
    if step.config.sequence_arg_name:
        kwargs[step.config.sequence_arg_name] = ctx.sequence
    if step.config.pass_logger_to_task:
        kwargs["logger"] = logging.getLogger(ctx.logger_name)
    token = enter_task(ctx)
    label = set_task_label(task_label(ctx.step, ctx.sequence))
    try:
        value = step.func(*step.args, **kwargs) if step.func is not None else None
    except SystemExit as exc:
        if exc.code in (None, 0):
            return ("success", "", "", "")
        return ("failure", "", *_describe(exc))
    except BaseException as exc:  # a task's KeyboardInterrupt is its failure, not the coordinator's
        return ("failure", "", *_describe(exc))
    finally:
        reset_task_label(label)
        leave_task(token)
    return ("success", result_text(value), "", "")


class ThreadRunner:
    """An elastic pool: a task starts at once on an idle worker, or on a new one when none is idle.

    Workers live until :meth:`stop`, so a flow of many short tasks pays for few threads, and a
    flow of many long concurrent tasks is not throttled by a pool size it never asked for.
    """

    def __init__(self, report: Callable[[int, Outcome], None], name: str = "sequent"):
        self._report = report
        self._name = name
        self._lock = threading.Lock()
        self._work: deque = deque()
        self._idle = 0
        self._cond = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        with self._cond:
            self._work.append((task_id, step, ctx))
            if self._idle:
                self._idle -= 1  # claimed: a second submit must not count on the same worker
                self._cond.notify()
                return
            thread = threading.Thread(target=self._worker, name=f"{self._name}-worker-{len(self._threads)}",
                                      daemon=True)
            self._threads.append(thread)
        thread.start()

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._work:
                    if self._stopping:
                        return
                    self._idle += 1
                    self._cond.wait()
                    # a submit that notified us already took our idle count back
                task_id, step, ctx = self._work.popleft()
            self._report(task_id, run_step(step, ctx))

    def stop(self, timeout: Optional[float] = None) -> None:
        """Let the workers finish what they run and end; join them."""
        with self._cond:
            self._stopping = True
            self._idle = 0
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]


class Inbox:
    """Completions reported from other threads, and a pipe that wakes the coordinator's select."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def put(self, item: Any) -> None:
        self._items.append(item)
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:  # the pipe is full of wake-ups already: the coordinator will wake
            pass
        except OSError:  # closed: the run is over and no longer waits for this (abandoned) thread
            pass

    def take(self) -> list:
        try:
            while os.read(self._r, 65536):
                pass
        except BlockingIOError:
            pass
        items = []
        while self._items:
            items.append(self._items.popleft())
        return items

    def __bool__(self) -> bool:
        return bool(self._items)

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
