"""The history of a store, for users and the ``sequent`` command: its runs and their tasks."""

from __future__ import annotations

from typing import Any, Optional

from .errors import SequentError
from .eventor import history
from .eventor.errors import EventorError
from .eventor.history import RunInfo, TaskInfo

__all__ = ["list_runs", "run_tasks", "RunInfo", "TaskInfo"]


def list_runs(store: Any, *, flow: Optional[str] = None, config: Any = None) -> list[RunInfo]:
    """The runs kept in ``store`` (a path, URL or DATABASES key), of ``flow`` when given, oldest first."""
    try:
        return history.list_runs(store, flow=flow, config=config)
    except EventorError as exc:
        raise SequentError(str(exc)) from exc


def run_tasks(store: Any, run_id: str, *, recovery: Optional[int] = None, config: Any = None) -> list[TaskInfo]:
    """The tasks of ``run_id`` in ``store``, of every attempt or of attempt ``recovery``, in creation order."""
    try:
        return history.run_tasks(store, run_id, recovery=recovery, config=config)
    except EventorError as exc:
        raise SequentError(str(exc)) from exc
