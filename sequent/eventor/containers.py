"""How a container runs: its iterations one after another, each a fresh :class:`Iteration`.

An iteration fires the container's starters at its sequence (``S.1``, ``S.2``, ...) and ends
when nothing started inside it is pending; the container then starts its next one, or ends
(failed when an iteration had an unhandled failure, or when the run stops around it).  This is
part of the coordinator, kept in a module of its own: :class:`ContainerRuns` is mixed into
:class:`~sequent.eventor.coordinator.Coordinator`, whose state and transitions it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .model import StepStatus, format_sequence
from .tasks import Iteration, Task
from .text import SEQUENCE_LIMIT, exception_text

if TYPE_CHECKING:
    from .admission import Admission
    from .model import Program

_END = object()


class ContainerRuns:
    """The coordinator's container steps (see the module docstring)."""

    # what it uses of the coordinator
    program: Program
    admission: Admission
    open_iterations: dict[tuple[str, tuple], Iteration]
    fired: dict[tuple, set[str]]
    log: Any
    now: Callable[[], float]
    _move: Callable[..., None]
    _fire: Callable[[str, tuple], None]
    _failed: Callable[[Task, str, str], None]
    _release: Callable[[Iteration], None]

    def _start_container(self, task: Task) -> None:
        task.started = self.now()
        task.host = task.step.host  # recorded with it: a copy of a container on several hosts shows its own
        self._move(task, StepStatus.active)
        repeats = task.step.repeats
        try:
            task.iterator = iter(repeats() if callable(repeats) else repeats if repeats is not None else ())
        except Exception as exc:
            self._end_container(task, failed=True, error=f"repeats of container {task.step.name} failed: {exception_text(exc)}")
            return
        self._next_iteration(task)

    def _next_iteration(self, task: Task) -> None:
        """Start the container's next iteration, skipping through empty ones, or end it."""
        while True:
            try:
                item = next(task.iterator, _END)
            except Exception as exc:
                self._end_container(task, failed=True,
                                    error=f"repeats of container {task.step.name} failed: {exception_text(exc)}")
                return
            if item is _END or item is None:
                self._end_container(task, failed=False)
                return
            task.iterations += 1
            seq = task.seq + (task.iterations,)
            if len(format_sequence(seq)) > SEQUENCE_LIMIT:
                self._end_container(task, failed=True, error=f"iteration {task.iterations} would have a sequence "
                                    f"longer than the store keeps ({SEQUENCE_LIMIT} characters)")
                return
            iteration = Iteration(task, seq, task.iteration)
            task.current = iteration
            self.open_iterations[(task.step.name, iteration.seq)] = iteration
            iteration.pending += 1  # hold the iteration open while its starters fire
            for name in task.step.starts:
                self._fire(name, iteration.seq)
            iteration.pending -= 1
            if iteration.pending > 0:
                return
            if not self._close_iteration(iteration):
                return

    def _iteration_over(self, iteration: Iteration) -> None:
        if self._close_iteration(iteration):
            self._next_iteration(iteration.owner)

    def _close_iteration(self, iteration: Iteration) -> bool:
        """Forget an ended iteration; True when its container may go on to the next one."""
        task = iteration.owner
        del self.open_iterations[(task.step.name, iteration.seq)]
        task.current = None
        fired = self.fired.pop(iteration.seq, None)
        if fired:  # keep the events of other containers iterating at the same sequence
            scope = task.step.name
            events = self.program.events
            rest = {name for name in fired if events[name].scope != scope}
            if rest:
                self.fired[iteration.seq] = rest
        if iteration.failed:
            self._end_container(task, failed=True, error=f"an unhandled failure in iteration {format_sequence(iteration.seq)}")
            return False
        if iteration.halted():
            self._end_container(task, failed=True, error="stopped before its end: the run is stopping", quiet=True)
            return False
        return True

    def _end_container(self, task: Task, *, failed: bool, error: str = "", quiet: bool = False) -> None:
        self.admission.give_back(task)  # held from its start to its end
        status = StepStatus.failure if failed else StepStatus.success
        if failed and not quiet:
            self.log.info("[ Task %s/%s ] Completed, status: %s", task.step.name, task.seq_str, status.name)
        elif not failed:
            self.log.debug("[ Task %s/%s ] Completed, status: %s", task.step.name, task.seq_str, status.name)
        self._move(task, status, ended=self.now(), error=error or None)
        if failed and not quiet:
            self._failed(task, error, "")
        self._release(task.iteration)
