"""What runs on a Dask worker for sequent tasks: one agent per attempt, beside the worker.

:func:`run_task` is the function the coordinator submits.  It runs in a worker thread and hands
the task to an agent (:mod:`.agent`, the one SSH hosts run) that the worker process starts for the
attempt on first use, over pipes instead of SSH.  The agent is a small process of its own: it
imports the steps' modules once, forks each task from there into a process group of its own (fast,
and with none of the worker's sockets, so the scheduler sees a worker's death at once), claims the
task in the store (first, and then runs it only if it was active and nobody had claimed it, where
the scheduler may run a task again after its worker died: so it never runs twice), records its end
(the first final write wins), and beats in the store, so that a recovery waits for the tasks it
still runs.  When the worker dies, its agents stop their
tasks (SIGTERM, then SIGKILL after the grace).  The task's log records come back with its outcome,
for the run log.  :func:`signal_tasks` (sent with ``Client.run``) stops an attempt's tasks, and
:func:`signal_task` one task (by its Dask key, which names one try): cancelling a Dask future does
not stop a task that runs.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from typing import Optional

from .errors import EventorError
from .executors.base import RunInfo
from .executors.remote import RemoteExecutor
from .outcome import TaskOutcome
from .ssh import BOOTSTRAP, SshOptions

#: Seconds an agent with no task may stay idle before the worker stops it (a run whose coordinator
#: died never says it is over).
IDLE_FOR = 60.0

#: The most log records, and characters of them, a task hands back to the coordinator's run log.
RECORDS_LIMIT = 1000
RECORDS_CHARS = 1_000_000

#: The most keys of signalled tasks a worker remembers (a signal to one task goes to every worker,
#: and one that comes before the task is remembered: the task then does not start).
SIGNALLED_KEYS = 4096

_LOCK = threading.Lock()
_RUNS: dict[tuple[str, int], "_Attempt"] = {}
_REAPER: Optional[threading.Thread] = None

_KEYS_LOCK = threading.Lock()
_STARTED: dict[str, tuple["_Attempt", int]] = {}  # Dask key -> (its attempt, task id), while it runs here
_SIGNALLED: "collections.OrderedDict[str, int]" = collections.OrderedDict()  # Dask key -> the signal sent


class _LocalAgent(RemoteExecutor):
    """An agent started by the worker process itself (no SSH); its tasks stop when the worker dies."""

    on_eof = "kill"

    def argv(self) -> list[str]:
        return [sys.executable, "-c", BOOTSTRAP]

    def _send_task(self, frame: bytes) -> None:
        """Write the task straight into the agent's input from the worker's thread (which waits for
        the task anyway): one thread hop less per task than through the writer thread."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            with self.write_lock:
                self.proc.stdin.write(frame)
        except OSError:  # the agent is gone: its reader fails the task
            pass

    def _read_stderr(self) -> None:
        """What the agent and its tasks print goes to the worker's own stderr (the worker's log)."""
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr.append(line)
            try:
                sys.stderr.write(f"[sequent agent for {self.host}] {line}\n")
            except Exception:
                pass


class _Attempt:
    """One attempt's agent in this worker process, and the tasks waiting for it."""

    def __init__(self, settings: dict, worker: str):
        self.settings = settings
        self.worker = worker
        self.lock = threading.Lock()
        self.waiting: dict[int, tuple[threading.Event, list]] = {}  # task id -> (ended, [outcome])
        self.records: dict[str, list] = {}  # task logger name -> its log records so far
        self.stopping: Optional[int] = None  # the signal the coordinator sent: nothing more starts
        self.used = time.monotonic()
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # what this worker imports, it does
        self.agent = _LocalAgent(worker, worker, python=sys.executable, env=env, report=self._ended,
                                 imports=settings["imports"], on_record=self._record, versions=settings["versions"],
                                 options=SshOptions(alive_interval=5.0, alive_count=3))
        self.agent.eof_why = f"the Dask worker {worker!r} running it died"
        self.agent.claim_first = bool(settings.get("claim_first", True))
        self.agent.start()
        self.agent.bind(RunInfo(target=settings["target"], busy_timeout=settings["busy_timeout"],
                                run_id=settings["run_id"], recovery=settings["recovery"],
                                logger_name=settings["logger_name"], logging=settings["logging"],
                                grace=settings["grace"]))

    def _ended(self, outcome: TaskOutcome) -> None:
        with self.lock:
            waiter = self.waiting.pop(outcome.task_id, None)
        if waiter is not None:
            waiter[1].append(outcome)
            waiter[0].set()

    def _record(self, data: dict) -> None:
        name = str(data.get("name", ""))
        with self.lock:
            while name:
                records = self.records.get(name)
                if records is not None:
                    if len(records) < RECORDS_LIMIT and sum(len(str(r.get("msg", ""))) for r in records[-1:]) \
                            < RECORDS_CHARS:
                        records.append(data)
                    return
                name = name.rpartition(".")[0]

    def run(self, task: dict) -> tuple[TaskOutcome, list]:
        ctx = task["ctx"]
        key = task.get("key")
        ended = threading.Event()
        slot: list = []
        with self.lock:
            self.waiting[task["id"]] = (ended, slot)
            self.records[ctx.logger_name] = []
            self.used = time.monotonic()
        try:
            if not self.agent.submit_blob(task["id"], ctx, task["blob"]):
                return TaskOutcome.failed(task["id"], f"the agent of Dask worker {self.worker!r} is gone: "
                                          f"{self.agent.dead}"), []
            if key is not None:  # only now: a signal for it must reach the agent after the task itself
                with _KEYS_LOCK:
                    _STARTED[key] = (self, task["id"])
                    signum = _SIGNALLED.pop(key, None)
                if signum is not None:  # it came in between
                    self.agent.signal_task(task["id"], signum)
            ended.wait()
            return slot[0], self.records.get(ctx.logger_name, [])
        finally:
            with _KEYS_LOCK:
                _STARTED.pop(key, None)
                _SIGNALLED.pop(key, None)
            with self.lock:
                self.waiting.pop(task["id"], None)
                self.records.pop(ctx.logger_name, None)
                self.used = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.waiting else time.monotonic() - self.used

    def stop(self) -> None:
        self.agent.stop(float(self.settings["grace"]), abandon=False)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except Exception:  # not in a worker (a test calling run_task directly)
        from .logs import HOST

        return HOST


def _attempt(settings: dict, worker: str) -> _Attempt:
    """The attempt's agent in this worker process, started on first use (EventorError when it cannot)."""
    key = (settings["run_id"], settings["recovery"])
    with _LOCK:
        attempt = _RUNS.get(key)
        if attempt is not None and attempt.agent.alive:
            return attempt
        attempt = _RUNS[key] = _Attempt(settings, worker)
        _start_reaper()
        return attempt


def _start_reaper() -> None:
    """Stop, now and then, the agents of attempts that have had no task for IDLE_FOR seconds (under _LOCK)."""
    global _REAPER
    if _REAPER is not None and _REAPER.is_alive():
        return

    def reap() -> None:
        while True:
            time.sleep(min(IDLE_FOR, 10.0))
            with _LOCK:
                idle = [(key, a) for key, a in _RUNS.items() if a.idle_for() > IDLE_FOR]
                for key, _ in idle:
                    del _RUNS[key]
            for _, attempt in idle:
                attempt.stop()

    _REAPER = threading.Thread(target=reap, daemon=True, name="sequent-dask-reaper")
    _REAPER.start()


def run_task(settings: dict, task: dict) -> dict:
    """Run one task (submitted by the coordinator) through the attempt's agent; its outcome as plain data."""
    worker = _worker_name()
    out, records = _outcome(settings, task, worker)
    out.host = worker
    return {"outcome": {name: getattr(out, name) for name in TaskOutcome.__slots__}, "records": records,
            "worker": worker}


def _outcome(settings: dict, task: dict, worker: str) -> tuple[TaskOutcome, list]:
    """The task's outcome and log records: run by the attempt's agent, or why it did not start."""
    with _KEYS_LOCK:
        signum = _SIGNALLED.pop(task.get("key"), None)
    if signum is not None:  # the coordinator stopped it while it waited for this worker
        return TaskOutcome.failed(task["id"], f"not started: the coordinator stopped it (signal {signum}) before "
                                  f"it started", signal=signum), []
    try:
        attempt = _attempt(settings, worker)
    except EventorError as exc:
        return TaskOutcome.failed(task["id"], f"Dask worker {worker!r} cannot run it: {exc}"), []
    if attempt.stopping is not None:
        return TaskOutcome.failed(task["id"], "not started: the run was stopped"), []
    return attempt.run(task)


def prepare(settings: dict) -> None:
    """Start the attempt's agent on this worker ahead of its first task (Client.run, at the run's start),
    in a thread: Client.run calls this on the worker's event loop, which must not wait for it."""
    worker = _worker_name()

    def start() -> None:
        try:
            _attempt(settings, worker)
        except Exception:  # the first task that comes here says what is wrong
            pass

    threading.Thread(target=start, daemon=True, name="sequent-dask-prepare").start()


def signal_tasks(run_id: str, recovery: int, signum: int) -> int:
    """Signal every task of an attempt running on this worker (Client.run); from now on none starts."""
    with _LOCK:
        attempt = _RUNS.get((run_id, recovery))
    if attempt is None:
        return 0
    attempt.stopping = signum
    attempt.agent.signal(signum)
    return len(attempt.waiting)


def signal_task(key: str, signum: int) -> bool:
    """Signal the task submitted as Dask ``key`` if it runs on this worker (Client.run, on every
    worker); True when it did.  Elsewhere the key is remembered for a while: should the task come
    here later (it waited for a thread of the worker), it does not start."""
    with _KEYS_LOCK:
        started = _STARTED.get(key)
        if started is None:
            if _SIGNALLED.get(key) != signal.SIGKILL:  # (SIGTERM and SIGKILL may come in either order)
                _SIGNALLED[key] = signum
            _SIGNALLED.move_to_end(key)
            while len(_SIGNALLED) > SIGNALLED_KEYS:
                _SIGNALLED.popitem(last=False)
            return False
    attempt, task_id = started
    return attempt.agent.signal_task(task_id, signum)


def forget_run(run_id: str, recovery: int) -> None:
    """The attempt is over: stop its agent here (Client.run, at the run's end), in a thread: Client.run
    calls this on the worker's event loop, which must not wait for the agent to end."""
    with _LOCK:
        attempt = _RUNS.pop((run_id, recovery), None)
    if attempt is not None:
        threading.Thread(target=attempt.stop, daemon=True, name="sequent-dask-forget").start()
