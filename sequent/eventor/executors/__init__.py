"""Executors: what runs the coordinator's tasks, one kind per task construct, behind one interface.

:func:`make_executors` builds those a program needs; the coordinator and the engine use them only
through :class:`Executor`, so a new way of running tasks is one module here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..model import StepDef, TaskConstruct
from .base import Executor, Report, RunInfo
from .local import MAX_THREADS, InvokeExecutor, ThreadExecutor
from .process import ProcessExecutor

__all__ = ["Executor", "ExecutorSetup", "InvokeExecutor", "MAX_THREADS", "ProcessExecutor", "RunInfo",
           "ThreadExecutor", "make_executors"]


@dataclass(frozen=True)
class ExecutorSetup:
    """What executors may need from the run that makes them."""

    name: str  # the flow's name, for process and thread names
    steps: Sequence[StepDef]  # the program's steps, by index
    report: Report  # where in-process executors report outcomes (the coordinator's inbox)
    on_task_start: Callable[[str], None]  # a forked task registers its log file with it


_FACTORIES: dict[TaskConstruct, Callable[[ExecutorSetup], Executor]] = {
    TaskConstruct.process: lambda s: ProcessExecutor(s.steps, on_task_start=s.on_task_start,
                                                     name=f"sequent-launcher-{s.name}"),
    TaskConstruct.thread: lambda s: ThreadExecutor(s.report, name=f"sequent-{s.name}"),
    TaskConstruct.invoke: lambda s: InvokeExecutor(s.report, name=f"sequent-{s.name}"),
}


def make_executors(constructs: set[TaskConstruct], setup: ExecutorSetup) -> dict[TaskConstruct, Executor]:
    """One executor per construct the program's steps use (none started yet)."""
    return {construct: _FACTORIES[construct](setup) for construct in TaskConstruct if construct in constructs}
