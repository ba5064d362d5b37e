"""How a task ended, and how a run ended: the two results the coordinator acts on and records."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Optional


class OutcomeStatus(str, enum.Enum):
    """How a task ended; equal to its value, the text the task process reports ('success', 'failure')."""

    success = "success"
    failure = "failure"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)  # made once per task, often on a worker thread: kept cheap
class TaskOutcome:
    """One task's end as an executor reports it to the coordinator.

    ``host`` is where the task ran (None: the coordinator's own host).  ``exitcode`` and ``signal``
    describe how a task process ended (at most one is set; for a task lost with the process
    launcher they describe the launcher); ``pid`` is 0 when no task process is known.
    """

    task_id: int
    status: OutcomeStatus
    result: str = ""
    error: str = ""
    traceback: str = ""
    host: Optional[str] = None
    pid: Optional[int] = None
    exitcode: Optional[int] = None
    signal: Optional[int] = None
    ended: float = field(default_factory=time.time)
    owner: Optional[str] = None  # the agent that ran a remote task (its token), recorded with its end
    logfile: Optional[str] = None  # that task's log file, on its host

    @classmethod
    def failed(cls, task_id: int, error: str, **kwargs: object) -> "TaskOutcome":
        """A failure the engine itself reports (a task abandoned, or never started)."""
        return cls(task_id, OutcomeStatus.failure, error=error, **kwargs)  # type: ignore[arg-type]


class RunEnd(str, enum.Enum):
    """How an attempt at a run ended; the value is what the store records."""

    success = "success"  # every failure was handled
    failure = "failure"  # a failure reached the root unhandled, or resources deadlocked
    incomplete = "incomplete"  # stopped by max_loops before its end
    interrupted = "interrupted"  # SIGINT or SIGTERM stopped it
    error = "error"  # the store (or the engine) failed under it; recoverable
    lost = "lost"  # another coordinator took the run over; only this attempt ends so

    def __str__(self) -> str:
        return self.value
