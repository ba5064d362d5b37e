"""The history of a store, for users and the ``sequent`` command: its runs, their attempts and tasks.

Every function raises :class:`~sequent.errors.SequentError` when it cannot read what was asked,
and its subclass :class:`~sequent.errors.NoRunError` when there is no such store or run.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

from .errors import NoRunError, SequentError
from .eventor import history
from .eventor.errors import EventorError
from .eventor.errors import NoRunError as _EngineNoRunError
from .eventor.history import AttemptInfo, IterationInfo, RunDetail, RunInfo, TaskInfo, TryInfo

__all__ = ["list_runs", "run_tasks", "run_detail", "RunInfo", "TaskInfo", "RunDetail", "AttemptInfo", "TryInfo",
           "IterationInfo"]

_T = TypeVar("_T")


def _facade(read: Callable[[], _T]) -> _T:
    """Run ``read``, turning the engine's errors into the facade's (no such run or store: NoRunError)."""
    try:
        return read()
    except _EngineNoRunError as exc:
        raise NoRunError(str(exc)) from None
    except EventorError as exc:
        raise SequentError(str(exc)) from exc


def list_runs(store: Any, *, flow: Optional[str] = None, config: Any = None) -> list[RunInfo]:
    """The runs kept in ``store`` (a path, URL or DATABASES key), oldest first; of ``flow`` when given
    (``simple`` or ``simple.py`` alike)."""
    return _facade(lambda: history.list_runs(store, flow=flow, config=config))


def run_tasks(store: Any, run_id: str, *, recovery: Optional[int] = None, config: Any = None) -> list[TaskInfo]:
    """The tasks of ``run_id`` in ``store``, of every attempt or of attempt ``recovery``, in creation order."""
    return _facade(lambda: history.run_tasks(store, run_id, recovery=recovery, config=config))


def run_detail(store: Any, run_id: Optional[str] = None, *, latest: bool = False, flow: Optional[str] = None,
               config: Any = None) -> RunDetail:
    """Run ``run_id`` of ``store`` with its attempts and every task, or (``latest=True``) the newest run,
    of ``flow`` when given: what ``sequent show``, ``logs`` and ``report`` print."""
    return _facade(lambda: history.run_detail(store, run_id, latest=latest, flow=flow, config=config))
