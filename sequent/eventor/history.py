"""Reading a store's history: the runs it holds, and the tasks of one run.

This is what the ``sequent`` command and users' own tools build on; recovery reads the same
tables through :class:`~sequent.eventor.store.Store`.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Optional

from typing import TYPE_CHECKING

from . import config as _config
from . import runlock
from .dburl import StoreTarget, resolve_store
from .errors import EventorError

if TYPE_CHECKING:  # SQLAlchemy is imported when a store is read, not with the package
    from .store import Store


def _when(value: Optional[float]) -> Optional[datetime.datetime]:
    return None if value is None else datetime.datetime.fromtimestamp(value, datetime.timezone.utc)


@dataclass(frozen=True)
class RunInfo:
    """One run in a store: what ran, how often it was recovered, and how its last attempt ended."""

    run_id: str
    flow: str
    recoveries: int  # 0 for a run never recovered
    started: Optional[datetime.datetime]  # when its first attempt started (UTC)
    ended: Optional[datetime.datetime]  # when its last attempt ended; None while running or if killed
    # success, failure, incomplete, interrupted, error (the store or engine failed mid-run; recoverable),
    # running, or abandoned (its coordinator died)
    outcome: str
    host: Optional[str]
    program: Optional[str]


@dataclass(frozen=True)
class TaskInfo:
    """One task of a run: a step at a sequence, in one attempt (``recovery``)."""

    step: str
    sequence: str
    recovery: int
    status: str  # ready, active, success, failure
    skipped: bool  # recorded as succeeded by a recovery without running
    started: Optional[datetime.datetime]
    ended: Optional[datetime.datetime]
    host: Optional[str]
    pid: Optional[int]
    result: Optional[str]
    error: Optional[str]
    logfile: Optional[str] = None  # where its log file is, on its host (remote tasks)
    owner: Optional[str] = None  # the agent that ran it on a remote host (host:pid:start)


def open_store(store: Any, config: Any = None) -> Store:
    """Open an existing store named as ``Sequent(store=...)`` would name it (no default file)."""
    cfg = _config.load_config(config, "")
    target: StoreTarget = resolve_store(store, cfg.get("DATABASES") or {}, "")
    if not store and not (cfg.get("DATABASES") or {}).get("default"):
        raise EventorError("name the store to read: a path, a SQLAlchemy URL or a DATABASES key")
    import sqlalchemy as sa

    from .store import Store

    if target.is_sqlite and not target.is_memory:
        path = sa.engine.make_url(target.url).database
        if not path or not os.path.exists(path):
            raise EventorError(f"no store at {target.display}")
    # reading never changes a store: no tables made, no journal mode switched
    return Store(target, busy_timeout=float(cfg.get("busy_timeout", 10.0)), readonly=True).open()


def list_runs(store: Any, *, flow: Optional[str] = None, config: Any = None) -> list[RunInfo]:
    """The runs kept in ``store`` (of ``flow`` when given), oldest first."""
    opened = open_store(store, config)
    if opened.empty:
        opened.dispose()
        return []
    try:
        return [RunInfo(run_id=r.run_id, flow=r.flow, recoveries=r.recovery, started=_when(r.started),
                        ended=_when(r.ended), outcome=_outcome(opened, r), host=r.host, program=r.program)
                for r in opened.list_runs(flow)]
    finally:
        opened.dispose()


def _outcome(store: Store, run: Any) -> str:
    """A run still marked running whose coordinator is gone was abandoned (killed, or its host died)."""
    if run.status != "running":
        return run.status
    holder = store.lock_holder(run.run_id)
    return "abandoned" if holder is None or runlock.is_stale(holder) else "running"


def run_tasks(store: Any, run_id: str, *, recovery: Optional[int] = None, config: Any = None) -> list[TaskInfo]:
    """The tasks of run ``run_id`` (of one attempt when ``recovery`` is given), in the order created."""
    opened = open_store(store, config)
    try:
        if opened.empty or opened.get_run(run_id) is None:
            raise EventorError(f"no run {run_id!r} in store {opened.target.display}")
        return [TaskInfo(step=t.step, sequence=t.sequence, recovery=t.recovery, status=t.status,
                         skipped=bool(t.skipped), started=_when(t.started), ended=_when(t.ended), host=t.host,
                         pid=t.pid, result=t.result, error=t.error, logfile=t.logfile, owner=t.owner)
                for t in opened.task_rows(run_id, recovery)]
    finally:
        opened.dispose()
