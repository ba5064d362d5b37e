"""Executors that run tasks in the coordinator's own process: on worker threads, or inline."""

from __future__ import annotations

import os
import queue
import threading
from typing import Optional

from ..context import TaskContext, install_thread_environ, uninstall_thread_environ
from ..model import StepDef, TaskConstruct
from ..outcome import OutcomeStatus, TaskOutcome
from ..runners import Outcome, run_step
from .base import Executor, Report

#: Threads a run keeps at most; more tasks than this wait in the coordinator, not in a pool.
MAX_THREADS = 256


def to_outcome(task_id: int, outcome: Outcome, pid: int) -> TaskOutcome:
    """A runner's (status, result, error, traceback) as the TaskOutcome of a task of process ``pid``."""
    status, result, error, tb = outcome
    return TaskOutcome(task_id, OutcomeStatus(status), result, error, tb, pid=pid)


class ThreadRunner:
    """An elastic pool: a task starts on an idle worker, or on a new one when none is idle.

    Workers live until :meth:`stop`, so a flow of many short tasks pays for few threads, and a
    flow of many long concurrent tasks is not throttled by a small pool size.
    """

    def __init__(self, report: Report, name: str = "sequent"):
        self._report = report
        self._name = name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._pid = os.getpid()

    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # claimed: a second submit must not count on the same worker
        self._work.put((task_id, step, ctx))
        if spawn:
            thread = threading.Thread(target=self._worker, name=f"{self._name}-worker-{len(self._threads)}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            task_id, step, ctx = item
            outcome = to_outcome(task_id, run_step(step, ctx), self._pid)
            with self._lock:
                self._idle += 1
            self._report(outcome)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Let the workers finish what they run and end; join them (``timeout``: give up after)."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]


class _InProcess(Executor):
    """What thread and invoke tasks share: they see their own variables through an environ overlay."""

    def __init__(self, report: Report, name: str):
        self._report = report
        self._name = name

    def start(self) -> None:
        install_thread_environ()

    def unkillable(self) -> bool:
        return True

    def signal_task(self, task_id: int, signum: int) -> bool:
        """Always False: a task on a thread of this process cannot be stopped on its own."""
        return False

    def stop(self, grace: float, *, abandon: bool) -> None:
        uninstall_thread_environ()


class ThreadExecutor(_InProcess):
    """Each task on a worker thread of this process (at most MAX_THREADS at once)."""

    construct = TaskConstruct.thread
    capacity = MAX_THREADS

    def __init__(self, report: Report, name: str = "sequent"):
        super().__init__(report, name)
        self._threads: Optional[ThreadRunner] = None

    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        if self._threads is None:
            self._threads = ThreadRunner(self._report, name=self._name)
        self._threads.submit(task_id, step, ctx)

    def stop(self, grace: float, *, abandon: bool) -> None:
        """Wait for the running threads, unless they are abandoned (a thread cannot be stopped)."""
        try:
            if self._threads is not None:
                self._threads.stop(timeout=0 if abandon else None)
        finally:
            super().stop(grace, abandon=abandon)


class InvokeExecutor(_InProcess):
    """Each task called by the coordinator itself, there and then: only for trivial steps."""

    construct = TaskConstruct.invoke

    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        self._report(to_outcome(task_id, run_step(step, ctx), os.getpid()))
