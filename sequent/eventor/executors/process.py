"""The executor of process tasks: each task in a process forked by the run's launcher."""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from ..context import TaskContext
from ..launcher import ProcessLauncher
from ..model import StepDef, TaskConstruct
from ..outcome import TaskOutcome
from ..runners import Outcome, run_step
from .base import Executor


class ProcessExecutor(Executor):
    """Runs each task in its own process group, forked from a launcher forked when the run starts.

    The launcher is a fork of the coordinator made before the store is opened, so tasks inherit
    the whole program (functions, closures, arguments) and nothing is pickled but the task's context.
    """

    construct = TaskConstruct.process
    forks = True

    def __init__(self, steps: Sequence[StepDef], *, on_task_start: Callable[[str], None],
                 name: str = "sequent-launcher"):
        def run_child(step_index: int, sequence: tuple, payload: dict) -> Outcome:
            ctx: TaskContext = payload["ctx"]
            os.environ.update(ctx.env)
            on_task_start(ctx.logger_name)
            return run_step(steps[step_index], ctx)

        self._launcher = ProcessLauncher(run_child, name=name)

    def start(self) -> None:
        self._launcher.start()

    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        self._launcher.launch(task_id, step.index, (), {"ctx": ctx})

    def fileno(self) -> Optional[int]:
        return self._launcher.fileno()

    def collect(self) -> list[TaskOutcome]:
        return self._launcher.collect()

    @property
    def alive(self) -> bool:
        return self._launcher.alive

    def signal(self, signum: int) -> None:
        if self._launcher.running:
            self._launcher.signal_tasks(signum)

    def signal_task(self, task_id: int, signum: int) -> bool:
        """Signal one task's process group through the launcher (which holds every task's group)."""
        if not self._launcher.alive:
            return False
        return self._launcher.signal_task(task_id, signum)

    @property
    def holder_pid(self) -> Optional[int]:
        return self._launcher.keeper_pid

    def stop(self, grace: float, *, abandon: bool) -> None:
        self._launcher.stop(grace=grace)
