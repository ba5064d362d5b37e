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
from .tasks import Iteration, Repeat, Task
from .text import SEQUENCE_LIMIT, exception_text, item_text

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
    writer: Any
    previous_items: dict
    items_changed: dict[str, list[str]]

    def _start_container(self, task: Task) -> None:
        task.started = self.now()
        task.host = task.step.host  # recorded with it: a copy of a container on several hosts shows its own
        self._move(task, StepStatus.active)
        repeats = task.step.repeats
        try:
            task.repeat = Repeat(iter(repeats() if callable(repeats) else repeats if repeats is not None else ()))
        except Exception as exc:
            self._end_container(task, failed=True, error=f"repeats of container {task.step.name} failed: {exception_text(exc)}")
            return
        self._fill(task)

    def _fill(self, task: Task) -> None:
        """Start the container's next iterations while it has room (``parallel_iterations``: 1, one at
        a time as the original; 0, no limit), going through empty ones; end it once none is open and
        none may start: its repeats are used up, an iteration failed, or the run stops around it."""
        limit = task.step.config.parallel_iterations
        run = task.repeat
        assert run is not None
        while not (run.exhausted or run.failure is not None or task.iteration.halted()) and \
                (limit < 1 or run.open < limit):
            try:
                item = next(run.iterator, _END)
            except Exception as exc:
                run.failure = f"repeats of container {task.step.name} failed: {exception_text(exc)}"
                break
            if item is _END or item is None:
                run.exhausted = True
                break
            run.iterations += 1
            seq = task.seq + (run.iterations,)
            if len(format_sequence(seq)) > SEQUENCE_LIMIT:
                run.failure = (f"iteration {run.iterations} would have a sequence longer than the store keeps "
                               f"({SEQUENCE_LIMIT} characters)")
                break
            self._open_iteration(task, seq, item)
        if run.open == 0:
            if run.failure is not None:
                self._end_container(task, failed=True, error=run.failure)
            elif run.exhausted:
                self._end_container(task, failed=False)
            else:  # the run stops around it
                self._end_container(task, failed=True, error="stopped before its end: the run is stopping", quiet=True)

    def _open_iteration(self, task: Task, seq: tuple, item: object) -> None:
        """Start one iteration: record its item, fire its starters; close it at once when nothing started."""
        iteration = Iteration(task, seq, task.iteration, item)
        task.repeat.open += 1  # type: ignore[union-attr]
        self.open_iterations[(task.step.name, seq)] = iteration
        self.writer.iteration(task.step.name, format_sequence(seq), item_text(item), self.now())
        self._check_item(task, seq, item)
        iteration.pending += 1  # hold the iteration open while its starters fire
        for name in task.step.starts:
            self._fire(name, seq)
        iteration.pending -= 1
        if iteration.pending == 0:
            self._close_iteration(iteration)

    def _iteration_over(self, iteration: Iteration) -> None:
        self._close_iteration(iteration)
        self._fill(iteration.owner)

    def _close_iteration(self, iteration: Iteration) -> None:
        """Forget an ended iteration; a failed or stopped one keeps its container from starting more."""
        task = iteration.owner
        del self.open_iterations[(task.step.name, iteration.seq)]
        run = task.repeat
        assert run is not None
        run.open -= 1
        fired = self.fired.pop(iteration.seq, None)
        if fired:  # keep the events of other containers iterating at the same sequence
            scope = task.step.name
            events = self.program.events
            rest = {name for name in fired if events[name].scope != scope}
            if rest:
                self.fired[iteration.seq] = rest
        if iteration.failed and run.failure is None:
            run.failure = f"an unhandled failure in iteration {format_sequence(iteration.seq)}"

    def _check_item(self, task: Task, seq: tuple, item: object) -> None:
        """In a recovery, say when the repeats give an iteration another item than the run recorded
        (tasks still match by sequence); said once per container, listing the changed iterations."""
        if not self.previous_items:
            return
        seq_str = format_sequence(seq)
        before = self.previous_items.get((task.step.name, seq_str))
        if before is None or before == item_text(item):
            return
        changed = self.items_changed.setdefault(task.step.name, [])
        changed.append(f"{seq_str}: {before} -> {item_text(item)}")

    def _end_container(self, task: Task, *, failed: bool, error: str = "", quiet: bool = False) -> None:
        self.admission.give_back(task)  # held from its start to its end
        changed = self.items_changed.pop(task.step.name, None)
        if changed:
            shown = "; ".join(changed[:10]) + (f"; and {len(changed) - 10} more" if len(changed) > 10 else "")
            self.log.warning("Container %s: its repeats gave other items than the run recorded (iterations are "
                             "matched by sequence): %s", task.step.name, shown)
        status = StepStatus.failure if failed else StepStatus.success
        if failed and not quiet:
            self.log.info("[ Task %s/%s ] Completed, status: %s", task.step.name, task.seq_str, status.name)
        elif not failed:
            self.log.debug("[ Task %s/%s ] Completed, status: %s", task.step.name, task.seq_str, status.name)
        self._move(task, status, ended=self.now(), error=error or None)
        if failed and not quiet:
            self._failed(task, error, "")
        self._release(task.iteration)
