"""Calling a step's function, and the inbox where in-process executors report to the coordinator.

:func:`run_step` is the one wrapper every executor uses (thread, invoke, and the child of a
process task), so a task's environment, logger and error report are the same everywhere.
"""

from __future__ import annotations

import logging
import os
import queue
from typing import Any, Optional

from .context import TaskContext, enter_task, leave_task
from .logs import describe_exception, reset_task_label, set_task_label
from .model import StepDef
from .text import ERROR_LIMIT, RESULT_LIMIT, TRACEBACK_LIMIT, storable

#: What run_step returns, and a task process pickles to its launcher: (status, result, error,
#: traceback) as plain text, the smallest thing to send; executors make a TaskOutcome of it.
Outcome = tuple[str, str, str, str]


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
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return storable(text, RESULT_LIMIT)


def _describe(exc: BaseException) -> tuple[str, str]:
    """The error text and traceback, starting at the user's function (this wrapper's frame cut),
    made storable and capped; an exception whose repr or traceback itself fails is still described."""
    try:
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
            exc = exc.with_traceback(exc.__traceback__.tb_next)
        error, tb = describe_exception(exc)
    except BaseException as inner:  # noqa: B036 - a broken __repr__/__str__ must not lose the failure
        error, tb = f"<{type(exc).__name__} whose description failed: {type(inner).__name__}>", ""
    return storable(error, ERROR_LIMIT), storable(tb, TRACEBACK_LIMIT, keep_ends=True)


def run_step(step: StepDef, ctx: TaskContext) -> Outcome:
    """Call ``step.func`` as the task ``ctx``: context, label and extra kwargs set, errors caught."""
    kwargs = dict(step.kwargs)
    if step.config.sequence_arg_name:
        kwargs[step.config.sequence_arg_name] = ctx.sequence
    if step.config.item_arg_name:
        kwargs[step.config.item_arg_name] = ctx.item
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


class Inbox:
    """Completions reported from other threads; the coordinator blocks on it.

    With process tasks the coordinator selects on the launcher's socket too, so a put also
    writes a byte to a pipe (:meth:`wake_on_put`); without them a blocking get is enough.
    """

    def __init__(self) -> None:
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._r = self._w = -1

    def wake_on_put(self) -> int:
        """Make every put also wake a select on the returned fd."""
        if self._r < 0:
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)
        return self._r

    def put(self, item: Any) -> None:
        self._items.put(item)
        if self._w >= 0:
            try:
                os.write(self._w, b"\0")
            except BlockingIOError:  # the pipe is full of wake-ups already: the coordinator will wake
                pass
            except OSError:  # closed: the run is over and no longer waits for this (abandoned) thread
                pass

    def wait(self, timeout: Optional[float]) -> list:
        """Block until something arrives (or ``timeout`` passes), then take everything there is."""
        try:
            first = self._items.get(timeout=timeout) if timeout is None or timeout > 0 else self._items.get_nowait()
        except queue.Empty:
            return []
        return [first] + self.take()

    def take(self) -> list:
        if self._r >= 0:
            try:
                while os.read(self._r, 65536):
                    pass
            except (BlockingIOError, OSError):
                pass
        items = []
        try:
            while True:
                items.append(self._items.get_nowait())
        except queue.Empty:
            return items

    def __bool__(self) -> bool:
        return not self._items.empty()

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._r = self._w = -1
