"""The seam between the coordinator and whatever runs its tasks.

The coordinator keeps every decision (which task starts, limits, pools, recovery); an executor
only runs what it is given and reports how each task ended as a :class:`TaskOutcome`.  It
reports either through ``report`` (an executor that runs tasks on threads of this process) or
by making :meth:`Executor.fileno` readable, after which the coordinator calls
:meth:`Executor.collect`; the coordinator waits on every executor in one ``select``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..context import TaskContext
from ..model import StepDef, TaskConstruct
from ..outcome import TaskOutcome

#: How an executor that runs tasks in this process reports an outcome (thread-safe).
Report = Callable[[TaskOutcome], None]


@dataclass(frozen=True)
class RunInfo:
    """The attempt an executor's tasks belong to, known once the run's lock is taken (see bind)."""

    target: Any  # the store's StoreTarget: where agents record their tasks
    busy_timeout: float
    run_id: str
    recovery: int
    logger_name: str  # the flow logger's name
    logging: Mapping[str, Any]  # the LOGGING settings
    grace: float  # shutdown_grace


class Executor(abc.ABC):
    """Runs tasks of one construct for one run.

    Life: :meth:`start` once (before the store is opened when :attr:`forks`), :meth:`bind` once
    the attempt is known, then any number of :meth:`submit`, :meth:`signal` and :meth:`signal_task`,
    then :meth:`stop`.
    """

    #: The construct whose tasks it runs.
    construct: TaskConstruct
    #: Tasks it runs at once at most (None: no limit of its own); more wait in the coordinator.
    capacity: Optional[int] = None
    #: It forks processes: it must start before the store (and its connections) exist.
    forks: bool = False
    #: The host its tasks run on, as the flow names it (None: this one, or not known before the end).
    host: Optional[str] = None
    #: Its tasks run elsewhere: they keep their log files there, and record their ends in the store
    #: themselves (the coordinator's own final write is then fenced: the first one wins).
    remote: bool = False

    def start(self) -> None:
        """Get ready to run tasks."""

    def bind(self, run: RunInfo) -> None:
        """Learn the attempt its tasks belong to, before any task starts; raises when it cannot serve it."""

    @abc.abstractmethod
    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        """Start running ``step`` as task ``task_id``; never blocks on the task."""

    def fileno(self) -> Optional[int]:
        """A file descriptor that is readable when :meth:`collect` has outcomes (None: it reports)."""
        return None

    def collect(self) -> list[TaskOutcome]:
        """The outcomes that arrived since the last call, without blocking."""
        return []

    @property
    def alive(self) -> bool:
        """False once it can report nothing more (its fileno is then no longer waited on)."""
        return True

    def signal(self, signum: int) -> None:
        """Ask every running task to stop (SIGTERM) or to end at once (SIGKILL), where it can."""

    def signal_task(self, task_id: int, signum: int) -> bool:
        """Send ``signum`` to task ``task_id``'s whole process group (the task and what it started) if
        it is running; True when it was sent, False when this executor cannot stop one task (threads)
        or the task is not running.  The task's end is then reported as any other (for instance a
        failure "killed by signal 15", or the exception of a task that handled SIGTERM)."""
        return False

    def unkillable(self) -> bool:
        """True when its running tasks cannot be killed (threads): after the grace they are abandoned."""
        return False

    @property
    def holder_pid(self) -> Optional[int]:
        """A process that outlives the coordinator while it stops the tasks (named in the run lock)."""
        return None

    @abc.abstractmethod
    def stop(self, grace: float, *, abandon: bool) -> None:
        """Stop for good: wait for running tasks (at most ``grace`` s, or not at all with ``abandon``)."""
