"""What the coordinator keeps of a run in flight: its tasks, the iterations they belong to, and
the delays it waits for.  Plain records; the coordinator owns and changes them."""

from __future__ import annotations

from typing import Iterator, Optional

from .model import StepDef, StepStatus, format_sequence


class Iteration:
    """One iteration of a container (``owner``), or the root of the run (``owner`` None)."""

    __slots__ = ("owner", "seq", "parent", "pending", "failed", "stopping")

    def __init__(self, owner: Optional["Task"], seq: tuple, parent: Optional["Iteration"]):
        self.owner = owner
        self.seq = seq
        self.parent = parent
        self.pending = 0  # tasks, delays and child containers not yet ended
        self.failed = False  # an unhandled failure happened inside
        self.stopping = False  # no new task may start inside

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
                 "iterator", "iterations", "current", "holds", "executor", "host")

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
        # containers only
        self.iterator: Optional[Iterator] = None
        self.iterations = 0  # started so far
        self.current: Optional[Iteration] = None
        self.holds = False  # holds resources it has not given back yet
        self.executor = None  # what runs it, once it started (processing steps)
        self.host: Optional[str] = None  # where it runs, when not here (a container: its copy's host)

    def __repr__(self) -> str:
        return (f"<Task(id='{self.id}', step_id='{self.step.name}', sequence='{self.seq_str}', "
                f"status='{self.status}')>")


class Timer:
    """A delay started at a sequence: when it is due, its step is created or its event fired."""

    __slots__ = ("due", "target", "is_step", "seq", "iteration", "cancelled")

    def __init__(self, due: float, target: str, is_step: bool, seq: tuple, iteration: Iteration):
        self.due, self.target, self.is_step, self.seq, self.iteration = due, target, is_step, seq, iteration
        self.cancelled = False
