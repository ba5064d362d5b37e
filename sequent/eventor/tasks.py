"""What the coordinator keeps of a run in flight: its tasks, the iterations they belong to, and
the delays it waits for.  Plain records; the coordinator owns and changes them."""

from __future__ import annotations

from typing import Iterator, Optional

from .model import StepDef, StepStatus, format_sequence


class Iteration:
    """One iteration of a container (``owner``), or the root of the run (``owner`` None)."""

    __slots__ = ("owner", "seq", "parent", "pending", "failed", "stopping", "item")

    def __init__(self, owner: Optional["Task"], seq: tuple, parent: Optional["Iteration"], item: object = None):
        self.owner = owner
        self.seq = seq
        self.parent = parent
        self.pending = 0  # tasks, delays and child containers not yet ended
        self.failed = False  # an unhandled failure happened inside
        self.stopping = False  # no new task may start inside
        self.item = item  # what the container's repeats gave for this iteration (None: the root)

    def halted(self) -> bool:
        """True when this iteration or one around it is stopping."""
        iteration: Optional[Iteration] = self
        while iteration is not None:
            if iteration.stopping:
                return True
            iteration = iteration.parent
        return False

    def within(self, other: "Iteration") -> bool:
        iteration: Optional[Iteration] = self
        while iteration is not None:
            if iteration is other:
                return True
            iteration = iteration.parent
        return False


class Task:
    """A step at a sequence, in this attempt."""

    __slots__ = ("id", "step", "seq", "seq_str", "iteration", "status", "created", "started", "recorded",
                 "repeat", "holds", "executor", "host", "try_number", "try_started", "timed_out", "resume_at")

    def __init__(self, id: int, step: StepDef, seq: tuple, iteration: Iteration, now: float):
        self.id = id
        self.step = step
        self.seq = seq
        self.seq_str = format_sequence(seq)
        self.iteration = iteration
        self.status = StepStatus.ready
        self.created = now
        self.started: Optional[float] = None
        self.recorded = False  # has a row in the store (committed or buffered)
        self.repeat: Optional[Repeat] = None  # a container's iterations, once it started
        self.holds = False  # holds resources it has not given back yet
        self.executor = None  # what runs it, once it started (processing steps)
        self.host: Optional[str] = None  # where it runs, when not here (a container: its copy's host)
        # processing steps only: tries
        self.try_number = 1  # the try running, or the next one while it waits for a retry
        self.try_started: Optional[float] = None
        self.timed_out: Optional[int] = None  # the try stopped for running past the step's timeout
        self.resume_at: Optional[float] = None  # a recovery continues its tries: the next one not before

    def __repr__(self) -> str:
        return (f"<Task(id='{self.id}', step_id='{self.step.name}', sequence='{self.seq_str}', "
                f"status='{self.status}')>")


class Repeat:
    """A started container's iterations: what its repeats give, how many started and run now."""

    __slots__ = ("iterator", "iterations", "open", "exhausted", "failure")

    def __init__(self, iterator: Iterator):
        self.iterator = iterator
        self.iterations = 0  # started so far
        self.open = 0  # running now
        self.exhausted = False  # its repeats gave their last item
        self.failure: Optional[str] = None  # why the container fails: no new iteration starts


class Timer:
    """Something due at a time: a delay started at a sequence (its step is created or its event
    fired), or, for a task (``kind``), its next try (``retry``), its timeout (``timeout``) or the
    SIGKILL that follows a timeout's SIGTERM after the grace (``kill``)."""

    __slots__ = ("due", "target", "is_step", "seq", "iteration", "cancelled", "kind", "task", "try_number")

    def __init__(self, due: float, target: str, is_step: bool, seq: tuple, iteration: Iteration,
                 kind: str = "delay", task: Optional["Task"] = None, try_number: int = 0):
        self.due, self.target, self.is_step, self.seq, self.iteration = due, target, is_step, seq, iteration
        self.cancelled = False
        self.kind, self.task, self.try_number = kind, task, try_number

    @classmethod
    def for_task(cls, kind: str, due: float, task: "Task") -> "Timer":
        return cls(due, task.step.name, True, task.seq, task.iteration, kind, task, task.try_number)
