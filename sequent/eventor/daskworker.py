"""What runs on a Dask worker for a sequent task: claim it in the store, run it in a process of its
own, record its end, and hand the outcome back as the Dask task's result.

:func:`run_task` is the function the coordinator submits.  It runs in a worker thread; the task
itself runs in a child forked from there, leading its own process group, so that a signal from
the coordinator (:func:`signal_tasks`, sent with ``Client.run``) stops it and everything it
started: cancelling a Dask future does not stop a task that runs.  The claim is a write that
applies only to an active task no agent claimed yet, so Dask rerunning a task after its worker
died never runs it twice; the end is recorded only while the task is still active (the first
final write wins), so a task that ends after its coordinator died is still recorded.  While an
attempt has tasks running in this worker process, the process beats as an agent of that attempt
in the store, so that a recovery waits for them (see attempts.wait_for_agents).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
import time
import traceback
from typing import Any, Optional

from . import runlock
from .context import TaskContext
from .logs import HOST, RunLogging
from .model import StepConfig, StepDef
from .outcome import OutcomeStatus, TaskOutcome
from .runners import run_step
from .taskchild import close_quietly
from .wire import read_exactly

#: The most log records, and characters of them, a task hands back to the coordinator's run log.
RECORDS_LIMIT = 1000
RECORDS_CHARS = 1_000_000

_LOCK = threading.Lock()
_RUNS: dict[tuple[str, int], "_Attempt"] = {}
_BEATING: Optional[threading.Thread] = None


class _Attempt:
    """One attempt's state in this worker process: its store connection, running tasks, heartbeat."""

    def __init__(self, settings: dict, worker: str):
        from .store import Store

        self.settings = settings
        self.worker = worker
        self.store = Store(settings["target"], busy_timeout=settings["busy_timeout"]).open()
        self.store_lock = threading.Lock()  # one connection, several worker threads
        self.token = f"dask:{worker}:{os.getpid()}:{time.time():.6f}"
        self.groups: dict[str, int] = {}  # Dask key -> process group of the running task
        self.stopping: Optional[int] = None  # the signal the coordinator sent: nothing more starts
        self.logs = RunLogging(settings["logger_name"], settings["logging"])

    def write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self.store_lock:
            return getattr(self.store, method)(*args, **kwargs)


def _attempt(settings: dict, worker: str) -> _Attempt:
    key = (settings["run_id"], settings["recovery"])
    with _LOCK:
        attempt = _RUNS.get(key)
        if attempt is None:
            attempt = _RUNS[key] = _Attempt(settings, worker)
            _start_beating()
        return attempt


def _start_beating() -> None:
    """One thread per worker process beats for every attempt with tasks running here (under _LOCK)."""
    global _BEATING
    if _BEATING is not None and _BEATING.is_alive():
        return

    def beat() -> None:
        while True:
            time.sleep(runlock.HEARTBEAT_EVERY)
            with _LOCK:
                busy = [a for a in _RUNS.values() if a.groups]
            for attempt in busy:
                try:
                    attempt.write("agent_running", token=attempt.token, run_id=attempt.settings["run_id"],
                                  recovery=attempt.settings["recovery"], host=attempt.worker, hostname=HOST,
                                  pid=os.getpid())
                except Exception:  # the store is away for now: beat again later
                    pass

    _BEATING = threading.Thread(target=beat, daemon=True, name="sequent-dask-heartbeat")
    _BEATING.start()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except Exception:  # not in a worker (a test calling run_task directly)
        return HOST


def run_task(settings: dict, task: dict) -> dict:
    """Run one task (submitted by the coordinator); its outcome, recorded, as plain data."""
    worker = _worker_name()
    attempt = _attempt(settings, worker)
    ctx: TaskContext = task["ctx"]
    step, seq, key = ctx.step, ctx.sequence, task["key"]
    run_id, recovery = settings["run_id"], settings["recovery"]

    def outcome(out: TaskOutcome, recorded: bool, records: list) -> dict:
        out.host = worker
        return {"outcome": {name: getattr(out, name) for name in TaskOutcome.__slots__}, "recorded": recorded,
                "records": records, "worker": worker}

    if attempt.stopping is not None:
        return outcome(TaskOutcome.failed(task["id"], "not started: the run was stopped"), False, [])
    logfile = attempt.logs.task_log_path(ctx.logger_name)
    if not attempt.write("claim_task", run_id, recovery, step, seq, owner=attempt.token, pid=None, logfile=logfile):
        return outcome(TaskOutcome.failed(task["id"], f"not run on Dask worker {worker!r}: the task is no longer "
                                          f"active, or another worker ran it already (Dask reran it after a "
                                          f"worker died)"), False, [])
    with _LOCK:
        first = not attempt.groups  # the attempt's first task running here: beat for it
        attempt.groups[key] = 0
    if first:
        attempt.write("agent_running", token=attempt.token, run_id=run_id, recovery=recovery, host=worker,
                      hostname=HOST, pid=os.getpid())
    try:
        out, records = _run_child(attempt, task, key)
    finally:
        with _LOCK:
            attempt.groups.pop(key, None)
            idle = not attempt.groups
    status = "success" if out.status is OutcomeStatus.success else "failure"
    error = (out.error + ("\n" + out.traceback if out.traceback else "")) or None
    recorded = False
    for _ in range(3):
        try:
            recorded = attempt.write("finish_task", run_id, recovery, step, seq, status=status, ended=out.ended,
                                     pid=out.pid, host=worker, result=out.result or None, error=error)
            break
        except Exception:
            time.sleep(1.0)
    if idle:
        try:
            attempt.write("agent_ended", attempt.token)
        except Exception:
            pass
    return outcome(out, recorded, records)


def _run_child(attempt: _Attempt, task: dict, key: str) -> tuple[TaskOutcome, list]:
    """Fork the task's process (a group of its own), wait for it, and kill what it left behind."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends in os._exit
        code = 1
        try:
            os.setpgid(0, 0)
            os.close(rfd)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                result = _child(attempt, task)
            except BaseException as exc:  # noqa: B036 - e.g. the step's function does not unpickle here
                result = (("failure", "", f"{type(exc).__name__}: {exc}", traceback.format_exc()), [])
            data = pickle.dumps(result)
            os.write(wfd, len(data).to_bytes(8, "big"))
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        os.setpgid(pid, pid)  # also here: a signal may come before the child's own setpgid
    except OSError:
        pass
    with _LOCK:
        attempt.groups[key] = pid
        stopping = attempt.stopping
    if stopping is not None:
        _kill_group(pid, stopping)
    try:
        header = read_exactly(rfd, 8)
        payload = read_exactly(rfd, int.from_bytes(header, "big")) if header else None
    except (EOFError, OSError):
        payload = None
    finally:
        close_quietly([rfd])
    _, status = os.waitpid(pid, 0)
    _kill_group(pid, signal.SIGKILL)  # what the task left running in its group
    if payload is not None:
        (status_text, result, error, tb), records = pickle.loads(payload)
        return TaskOutcome(task["id"], OutcomeStatus(status_text), result, error, tb, pid=pid,
                           exitcode=0), records
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        why = f"killed by signal {signum} ({signal.Signals(signum).name})"
        return TaskOutcome.failed(task["id"], f"the task process {why}", pid=pid, signal=signum), []
    return TaskOutcome.failed(task["id"], f"the task process exited with status {os.waitstatus_to_exitcode(status)} "
                              f"without a result", pid=pid, exitcode=os.waitstatus_to_exitcode(status)), []


def _child(attempt: _Attempt, task: dict) -> tuple[tuple, list]:
    """In the task's process: its environment, logger and log file, then its function."""
    from .agent import record_data

    ctx: TaskContext = task["ctx"]
    os.environ.update(ctx.env)
    records: list = []
    size = [0]

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if len(records) < RECORDS_LIMIT and size[0] < RECORDS_CHARS:
                data = record_data(record, self.formatter)
                size[0] += len(data.get("msg") or "")
                records.append(data)

    logs = RunLogging(attempt.settings["logger_name"], attempt.settings["logging"])
    try:
        logs.make_logdir()
        logs.start_on_agent(Collect())
        logs.task_started(ctx.logger_name)
    except OSError:  # no log folder on this worker: the records still reach the run log
        pass
    spec = pickle.loads(task["blob"])
    step = StepDef(name=ctx.step, func=spec["func"], args=spec["args"], kwargs=spec["kwargs"],
                   config=StepConfig(sequence_arg_name=spec["sequence_arg_name"],
                                     pass_logger_to_task=spec["pass_logger_to_task"]))
    outcome = run_step(step, ctx)
    return outcome, records


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def signal_tasks(run_id: str, recovery: int, signum: int) -> int:
    """Signal every task of an attempt running in this worker process (Client.run); from now on none starts."""
    with _LOCK:
        attempt = _RUNS.get((run_id, recovery))
        if attempt is None:
            return 0
        attempt.stopping = signum
        groups = [pid for pid in attempt.groups.values() if pid]
    for pgid in groups:
        _kill_group(pgid, signum)
    return len(groups)


def forget_run(run_id: str, recovery: int) -> None:
    """The attempt is over: close its store connection here (Client.run, at the run's end)."""
    with _LOCK:
        attempt = _RUNS.get((run_id, recovery))
        if attempt is None or attempt.groups:
            return
        del _RUNS[(run_id, recovery)]
    try:
        attempt.store.close()
    except Exception:
        pass
