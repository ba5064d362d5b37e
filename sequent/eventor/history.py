"""Reading a store's history: the runs it holds, and the attempts and tasks of one run.

This is what the ``sequent`` command and users' own tools build on; recovery reads the same
tables through :class:`~sequent.eventor.store.Store`.  Reading never changes a store.

Durations: a run's is the time its attempts ran, added up (the hours between a failure and its
recovery are not counted).  An attempt that has no end yet counts up to now while its run is
running, else (its coordinator died) up to the last start or end of a task it recorded.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Optional

from . import config as _config
from . import runlock
from .dburl import StoreTarget, resolve_store
from .errors import EventorError, NoRunError

if TYPE_CHECKING:  # SQLAlchemy is imported when a store is read, not with the package
    from .store import Store

__all__ = ["RunInfo", "TaskInfo", "AttemptInfo", "TryInfo", "IterationInfo", "RunDetail", "STATES", "NOT_STARTED",
           "open_store", "list_runs", "run_tasks", "run_detail", "flow_matches", "error_line", "state_of",
           "task_log_path", "log_files", "known_steps"]

#: What a task (a step at a sequence) is, as ``RunDetail.counts`` and ``sequent show`` name it:
#: the statuses of the store, with ``skipped`` (a success recorded by a recovery without running
#: it: it succeeded in an earlier attempt) apart from ``success``, and ``not started``.
NOT_STARTED = "not started"
STATES = ("success", "skipped", "failure", "active", "ready", NOT_STARTED)

#: The outcomes after which a run can be recovered (running and success cannot).
RECOVERABLE = frozenset({"failure", "incomplete", "interrupted", "error", "abandoned"})


def _when(value: Optional[float]) -> Optional[datetime.datetime]:
    return None if value is None else datetime.datetime.fromtimestamp(value, datetime.timezone.utc)


def _seconds(started: Optional[datetime.datetime], ended: Optional[datetime.datetime]) -> Optional[float]:
    return None if started is None or ended is None else max((ended - started).total_seconds(), 0.0)


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
    duration: Optional[float] = None  # seconds its attempts ran, added up (see the module's text)


class _Ended:
    """What a task and a try both tell of their times and error (they have started, ended, error)."""

    started: Optional[datetime.datetime]
    ended: Optional[datetime.datetime]
    error: Optional[str]

    @property
    def duration(self) -> Optional[float]:
        """Seconds from its start to its end; None when it did not start or has not ended."""
        return _seconds(self.started, self.ended)

    @property
    def error_line(self) -> str:
        """The line of its error that names the exception (see :func:`error_line`); '' without an error."""
        return error_line(self.error)


@dataclass(frozen=True)
class TaskInfo(_Ended):
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
    item: Optional[str] = None  # repr of the item of its innermost repeated container, if any
    tries: Optional[int] = None  # the try running now or run last; None: its first (or an older store)
    retry_at: Optional[datetime.datetime] = None  # when its next try is due, while it waits for one (UTC)



@dataclass(frozen=True)
class TryInfo(_Ended):
    """One recorded try of a task (a step at a sequence, in attempt ``recovery``): how it ended."""

    step: str
    sequence: str
    recovery: int
    try_number: int  # 1, 2, ...
    started: Optional[datetime.datetime]
    ended: Optional[datetime.datetime]
    host: Optional[str]
    pid: Optional[int]
    error: Optional[str]
    timed_out: bool  # stopped because it ran past its step's timeout



@dataclass(frozen=True)
class IterationInfo:
    """One iteration of a repeated container in attempt ``recovery``: its own sequence and its item."""

    step: str  # the container
    sequence: str  # the iteration's own sequence (``1.2``: the second iteration of the container at 1)
    recovery: int
    item: Optional[str]  # the repr of its item
    started: Optional[datetime.datetime]


@dataclass(frozen=True)
class AttemptInfo:
    """One attempt at a run: the first (recovery 0) or a recovery, and how it ended."""

    recovery: int
    mode: str  # restart, recover or continue_
    based_on: Optional[int]  # the attempt a recovery compared against
    host: Optional[str]
    pid: Optional[int]
    started: Optional[datetime.datetime]
    ended: Optional[datetime.datetime]  # None while it runs, or when its coordinator died
    outcome: Optional[str]  # success, failure, incomplete, interrupted, error, lost; None without an end
    graph: Optional[dict]  # the flow's steps and requires as its builder described them, if recorded
    logging: Optional[dict]  # where its logs went: {"logger", "run_log", "logdir", "file_prefix", "file_suffix"}

    @property
    def duration(self) -> Optional[float]:
        """Seconds from its start to its end; None while it has no end."""
        return _seconds(self.started, self.ended)


@dataclass(frozen=True)
class RunDetail:
    """Everything a store holds about one run: the run, its attempts, and every task of each."""

    run: RunInfo
    attempts: list[AttemptInfo]  # oldest first
    tasks: list[TaskInfo]  # of every attempt, in the order created
    shape: list[tuple[str, Optional[str], str]]  # the latest attempt's steps: (step, container, 'step'|'container')
    # when the detail was read (the clock of a running attempt's duration)
    read_at: float = field(default_factory=time.time, compare=False, repr=False)
    tries: list[TryInfo] = field(default_factory=list)  # every recorded try, by attempt and start
    iterations: list[IterationInfo] = field(default_factory=list)  # every recorded iteration, by attempt and start

    def tries_of(self, task: TaskInfo) -> list[TryInfo]:
        """The recorded tries of ``task`` (its step and sequence, in its attempt), first try first."""
        return sorted((t for t in self.tries if (t.step, t.sequence, t.recovery) == (task.step, task.sequence,
                                                                                     task.recovery)),
                      key=lambda t: t.try_number)

    def attempt(self, recovery: int) -> Optional[AttemptInfo]:
        """Attempt number ``recovery`` (0 is the first run), or None."""
        return next((a for a in self.attempts if a.recovery == recovery), None)

    def latest(self) -> list[TaskInfo]:
        """Per (step, sequence), the row of the newest attempt that has it: where each task stands now.

        In the flow's order (the latest shape's), each step's sequences in the order they were first
        created; steps that the latest shape no longer has come last.
        """
        newest: dict[tuple[str, str], TaskInfo] = {}
        for task in self.tasks:
            key = (task.step, task.sequence)
            if key not in newest or task.recovery >= newest[key].recovery:
                newest[key] = task  # dict order stays that of the first creation
        place = {step: i for i, (step, _, _) in enumerate(self.shape)}
        rows = list(newest.values())
        return sorted(rows, key=lambda t: place.get(t.step, len(place)))  # stable: creation order within

    def not_started(self) -> list[str]:
        """The steps of the latest shape that no attempt created a task for, in the flow's order."""
        seen = {t.step for t in self.tasks}
        return [step for step, _, _ in self.shape if step not in seen]

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state (:data:`STATES`, every key present) by :meth:`latest`.

        ``skipped`` is counted apart from ``success``: success + skipped is what is done, the
        skipped having succeeded in an earlier attempt.  ``not started`` counts steps (their
        sequences were never known), the others tasks.
        """
        counts = dict.fromkeys(STATES, 0)
        for task in self.latest():
            state = state_of(task)
            counts[state] = counts.get(state, 0) + 1
        counts[NOT_STARTED] = len(self.not_started())
        return counts

    def failures(self) -> list[TaskInfo]:
        """The tasks whose latest row is a failure, in the order of :meth:`latest`."""
        return [t for t in self.latest() if t.status == "failure"]

    @property
    def recoverable(self) -> bool:
        """Whether the run ended in a way that ``sequent recover`` can take on (not success, not running)."""
        return self.run.outcome in RECOVERABLE

    @property
    def graph(self) -> Optional[dict]:
        """The graph the latest attempt recorded, or None (older stores, or a flow built on the engine)."""
        return self.attempts[-1].graph if self.attempts else None

    @property
    def duration(self) -> float:
        """Seconds its attempts ran, added up (see the module's text for an attempt without an end)."""
        last: dict[int, float] = {}
        for task in self.tasks:
            for moment in (task.started, task.ended):
                if moment is not None:
                    last[task.recovery] = max(last.get(task.recovery, 0.0), moment.timestamp())
        newest = self.attempts[-1].recovery if self.attempts else None
        total = 0.0
        for attempt in self.attempts:
            running = self.run.outcome == "running" and attempt.recovery == newest
            total += _attempt_seconds(_stamp(attempt.started), _stamp(attempt.ended), last.get(attempt.recovery),
                                      running, self.read_at)
        return total


def _stamp(value: Optional[datetime.datetime]) -> Optional[float]:
    return None if value is None else value.timestamp()


def _attempt_seconds(started: Optional[float], ended: Optional[float], last_activity: Optional[float],
                     running: bool, now: float) -> float:
    """How long one attempt ran: to its end, else to now while running, else to its last recorded task time."""
    if started is None:
        return 0.0
    if ended is None:
        ended = now if running else max(last_activity or started, started)
    return max(ended - started, 0.0)


def state_of(task: TaskInfo) -> str:
    """The task's state as :data:`STATES` name it: its status, or ``skipped`` for a success a recovery skipped."""
    return "skipped" if task.skipped and task.status == "success" else task.status


def error_line(text: Optional[str]) -> str:
    """The line of a recorded error that names the exception (``ValueError: bad input``).

    The engine records ``repr(exc)`` and the traceback; this is the first line after the last
    frame, else (an error without a traceback, such as a lost host) the last non-empty line.
    """
    lines = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    if frames:
        for line in lines[frames[-1] + 1:]:
            if not line.startswith(" "):  # a frame's source and caret lines are indented
                return line.strip()
    return lines[-1].strip()


def flow_matches(flow: str, wanted: str) -> bool:
    """Whether a stored flow name is the one asked for, with or without ``.py`` on either side.

    Flows are named after their file by default (``simple.py``); ``simple`` finds them too.
    """
    def bare(name: str) -> str:
        return name[:-3] if name.endswith(".py") else name
    return flow == wanted or bare(flow) == bare(wanted)


def task_log_path(attempt: Optional[AttemptInfo], task: TaskInfo) -> Optional[str]:
    """Where the task's log file is on the host that ran it: the one a remote host recorded, else
    the one the attempt's logging settings name; None when the attempt did not record them."""
    if task.logfile:
        return task.logfile
    if attempt is None or not attempt.logging:
        return None
    from .logs import task_log_file

    try:
        return task_log_file(attempt.logging, task.step, task.sequence)
    except (KeyError, TypeError):  # a logging record of another shape
        return None


def open_store(store: Any, config: Any = None) -> Store:
    """Open an existing store named as ``Sequent(store=...)`` would name it (no default file).

    A SQLite file that does not exist raises :class:`~sequent.eventor.errors.NoRunError`.
    """
    cfg = _config.load_config(config, "")
    target: StoreTarget = resolve_store(store, cfg.get("DATABASES") or {}, "")
    if not store and not (cfg.get("DATABASES") or {}).get("default"):
        raise EventorError("name the store to read: a path, a SQLAlchemy URL or a DATABASES key")
    import sqlalchemy as sa

    from .store import Store

    if target.is_sqlite and not target.is_memory:
        path = sa.engine.make_url(target.url).database
        if not path or not os.path.exists(path):
            raise NoRunError(f"no store at {target.display}")
    # reading never changes a store: no tables made, no journal mode switched
    return Store(target, busy_timeout=float(cfg.get("busy_timeout", 10.0)), readonly=True).open()


def list_runs(store: Any, *, flow: Optional[str] = None, config: Any = None) -> list[RunInfo]:
    """The runs kept in ``store`` (of ``flow`` when given, with or without ``.py``), oldest first."""
    opened = open_store(store, config)
    if opened.empty:
        opened.dispose()
        return []
    try:
        rows = [r for r in opened.list_runs() if flow is None or flow_matches(r.flow, flow)]
        outcomes = {r.run_id: _outcome(opened, r) for r in rows}
        durations = _durations(opened, {r.run_id for r in rows}, {k for k, v in outcomes.items() if v == "running"})
        return [_run_info(r, outcomes[r.run_id], durations.get(r.run_id)) for r in rows]
    finally:
        opened.dispose()


def _run_info(row: Any, outcome: str, duration: Optional[float]) -> RunInfo:
    return RunInfo(run_id=row.run_id, flow=row.flow, recoveries=row.recovery, started=_when(row.started),
                   ended=_when(row.ended), outcome=outcome, host=row.host, program=row.program, duration=duration)


def _durations(store: Store, run_ids: set[str], running: set[str]) -> dict[str, float]:
    """Each run's duration (see the module's text), from its attempts and, for one without an end, its tasks."""
    import sqlalchemy as sa

    from .schema import attempts, tasks

    if not run_ids:
        return {}
    spans: list[tuple[str, int, float, Optional[float]]] = [
        (r.run_id, r.recovery, r.started, r.ended) for r in store.conn.execute(
            sa.select(attempts.c.run_id, attempts.c.recovery, attempts.c.started, attempts.c.ended))
        if r.run_id in run_ids]
    newest: dict[str, int] = {}
    for run_id, recovery, _, _ in spans:
        newest[run_id] = max(newest.get(run_id, recovery), recovery)
    open_ones = {(run_id, recovery) for run_id, recovery, _, ended in spans if ended is None}
    last: dict[tuple[str, int], float] = {}
    for run_id, recovery in open_ones:  # few: attempts still running, or whose coordinator died
        moment = sa.func.max(sa.func.coalesce(tasks.c.ended, tasks.c.started))
        value = store.conn.execute(sa.select(moment).where(tasks.c.run_id == run_id,
                                                           tasks.c.recovery == recovery)).scalar()
        if value is not None:
            last[(run_id, recovery)] = float(value)
    now = time.time()
    totals: dict[str, float] = {}
    for run_id, recovery, started, ended in spans:
        is_running = run_id in running and recovery == newest[run_id]
        totals[run_id] = totals.get(run_id, 0.0) + _attempt_seconds(started, ended, last.get((run_id, recovery)),
                                                                    is_running, now)
    return totals


def _outcome(store: Store, run: Any) -> str:
    """A run still marked running whose coordinator is gone was abandoned (killed, or its host died)."""
    if run.status != "running":
        return run.status
    holder = store.lock_holder(run.run_id)
    return "abandoned" if holder is None or runlock.is_stale(holder) else "running"


def _task_info(t: Any) -> TaskInfo:
    return TaskInfo(step=t.step, sequence=t.sequence, recovery=t.recovery, status=t.status,
                    skipped=bool(t.skipped), started=_when(t.started), ended=_when(t.ended), host=t.host,
                    pid=t.pid, result=t.result, error=t.error, logfile=t.logfile, owner=t.owner, item=t.item,
                    tries=t.tries, retry_at=_when(t.retry_at))


def _try_info(t: Any) -> TryInfo:
    return TryInfo(step=t.step, sequence=t.sequence, recovery=t.recovery, try_number=t._mapping["try"],
                   started=_when(t.started), ended=_when(t.ended), host=t.host, pid=t.pid, error=t.error,
                   timed_out=bool(t.timed_out))


def _iteration_info(t: Any) -> IterationInfo:
    return IterationInfo(step=t.step, sequence=t.sequence, recovery=t.recovery, item=t.item, started=_when(t.started))


def _no_run(store: Store, run_id: str) -> NoRunError:
    return NoRunError(f"no run {run_id!r} in store {store.target.display}")


def run_tasks(store: Any, run_id: str, *, recovery: Optional[int] = None, config: Any = None) -> list[TaskInfo]:
    """The tasks of run ``run_id`` (of one attempt when ``recovery`` is given), in the order created."""
    opened = open_store(store, config)
    try:
        if opened.empty or opened.get_run(run_id) is None:
            raise _no_run(opened, run_id)
        return [_task_info(t) for t in opened.task_rows(run_id, recovery)]
    finally:
        opened.dispose()


def run_detail(store: Any, run_id: Optional[str] = None, *, latest: bool = False, flow: Optional[str] = None,
               config: Any = None) -> RunDetail:
    """Run ``run_id`` of ``store`` with its attempts and tasks; ``latest=True``: the newest run (of ``flow``
    when given, with or without ``.py``).  No store, no such run, or no run at all: NoRunError."""
    if (run_id is None) == (not latest):
        raise EventorError("name one run: a run_id, or latest=True" if run_id is None else
                           f"name one run: run_id {run_id!r} or latest=True, not both")
    opened = open_store(store, config)
    try:
        if latest:
            run_id = _newest_run(opened, flow)
        row = None if opened.empty else opened.get_run(str(run_id))
        if row is None:
            raise _no_run(opened, str(run_id))
        attempts = _attempts(opened, row.run_id)
        shape = _shape(attempts[-1][1]) if attempts else []
        tasks = [_task_info(t) for t in opened.task_rows(row.run_id)]
        last = next((a for a, _ in attempts if a.recovery == row.recovery), None)
        run = RunInfo(run_id=row.run_id, flow=row.flow, recoveries=row.recovery,
                      started=attempts[0][0].started if attempts else None, ended=last.ended if last else None,
                      outcome=_outcome(opened, row), host=row.host, program=row.program)
        detail = RunDetail(run=run, attempts=[a for a, _ in attempts], tasks=tasks, shape=shape,
                           tries=[_try_info(t) for t in opened.try_rows(row.run_id)],
                           iterations=[_iteration_info(t) for t in opened.iteration_rows(row.run_id)])
        return dataclasses.replace(detail, run=dataclasses.replace(run, duration=detail.duration))
    finally:
        opened.dispose()


def _newest_run(store: Store, flow: Optional[str]) -> str:
    """The run_id of the newest run in the store (of ``flow`` when given)."""
    import sqlalchemy as sa

    from .schema import runs

    where = f" of flow {flow!r}" if flow else ""
    if not store.empty:
        query = sa.select(runs.c.run_id, runs.c.flow).order_by(runs.c.created.desc(), runs.c.run_id.desc())
        for run_id, name in store.conn.execute(query):
            if flow is None or flow_matches(name, flow):
                return run_id
    raise NoRunError(f"no run{where} in store {store.target.display}")


def _attempts(store: Store, run_id: str) -> list[tuple[AttemptInfo, Optional[str]]]:
    """The attempts of a run, oldest first, each with its shape as stored (JSON text)."""
    import sqlalchemy as sa

    from .schema import attempts as table

    names = ["recovery", "mode", "based_on", "host", "pid", "started", "ended", "outcome", "steps"]
    if store.version >= 3:  # the graph and logging columns came with schema version 3
        names += ["graph", "logging"]
    query = sa.select(*[table.c[n] for n in names]).where(table.c.run_id == run_id).order_by(table.c.recovery)
    found = []
    for row in store.conn.execute(query):
        values = dict(zip(names, row))
        found.append((AttemptInfo(recovery=values["recovery"], mode=values["mode"], based_on=values["based_on"],
                                  host=values["host"], pid=values["pid"], started=_when(values["started"]),
                                  ended=_when(values["ended"]), outcome=values["outcome"],
                                  graph=_json_object(values.get("graph")), logging=_json_object(values.get("logging"))),
                      values["steps"]))
    return found


def _json_object(text: Optional[str]) -> Optional[dict]:
    """A JSON object column as a dict; None when empty or not an object."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _shape(text: Optional[str]) -> list[tuple[str, Optional[str], str]]:
    """An attempt's steps column as (step, container, kind) tuples."""
    if not text:
        return []
    try:
        items: Iterable[Any] = json.loads(text)
    except ValueError:
        return []
    shape = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, (list, tuple)) and len(item) == 3:
            shape.append((str(item[0]), None if item[1] is None else str(item[1]), str(item[2])))
    return shape


def log_files(detail: RunDetail) -> list[tuple[Optional[str], list[int]]]:
    """The run's log files in the order its attempts first wrote them, each with those attempts;
    (None, attempts) for the attempts that did not record where their logs went."""
    found: dict[Optional[str], list[int]] = {}
    for attempt in detail.attempts:
        path = (attempt.logging or {}).get("run_log")
        found.setdefault(path if isinstance(path, str) and path else None, []).append(attempt.recovery)
    return list(found.items())


def known_steps(detail: RunDetail) -> list[str]:
    """Every step the run knows: the latest shape's, then those only its tasks name."""
    steps = [step for step, _, _ in detail.shape]
    seen = set(steps)
    for task in detail.tasks:
        if task.step not in seen:
            seen.add(task.step)
            steps.append(task.step)
    return steps

