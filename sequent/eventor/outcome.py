"""How a task ended, and how a run ended: the two results the coordinator acts on and records."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Optional

from .model import StepStatus


@dataclass(slots=True)  # made once per task, often on a worker thread: kept cheap
class TaskOutcome:
    """One task's end as an executor reports it to the coordinator.

    ``host`` is where the task ran (None: the coordinator's own host); ``exit_code`` and ``signal``
    describe a task process that ended without reporting (at most one of them is set).
    """

    task_id: int
    status: StepStatus  # success or failure
    result: str = ""
    error: str = ""
    traceback: str = ""
    host: Optional[str] = None
    pid: Optional[int] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    ended: float = field(default_factory=time.time)

    @classmethod
    def failed(cls, task_id: int, error: str, **kwargs: object) -> "TaskOutcome":
        """A failure the engine itself reports (a task abandoned, or never started)."""
        return cls(task_id, StepStatus.failure, error=error, **kwargs)  # type: ignore[arg-type]


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
