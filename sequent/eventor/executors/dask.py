"""The executors of tasks on a Dask cluster (``task_construct: 'dask'``).

One :class:`DaskCluster` per run holds the ``distributed`` client (and, without an ``address``, a
local cluster started for the run and closed after it).  Each :class:`DaskExecutor` submits tasks
through it: the one without a host to any worker, one per pinned worker name to that worker only
(never to another), so that per-host limits and "first host with room" work as for SSH hosts.
What runs on the worker is :func:`sequent.eventor.daskworker.run_task`: it hands the task to the
attempt's agent beside the worker, which claims it in the store, runs it in a process group of its
own, records its end (fenced); the outcome comes back as the Dask task's result.

Dask must never rerun or park a task silently: the claim refuses a second run, a worker's death
is the task's failure (``KilledWorker``), a pin to a worker that does not exist fails at once and
one whose worker goes away fails within :data:`GONE_AFTER` seconds, and :meth:`DaskCluster.start`
warns when the scheduler's settings would hide a failure.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Optional

from ..context import TaskContext
from ..errors import EventorError
from ..model import StepDef, TaskConstruct
from ..outcome import TaskOutcome
from .base import Executor, Report, RunInfo
from .remote import task_blob

#: Seconds a task pinned to a worker that left the cluster waits before it fails.
GONE_AFTER = 5.0

#: Worker processes of the local cluster started for a run without a scheduler address.
LOCAL_WORKERS = 2

#: Seconds the run's client waits between two batches of messages to the scheduler.  Dask's client
#: holds a message sent within 10 ms of its previous batch until those 10 ms are over; in a chain,
#: where the next task is submitted a millisecond or two after the previous one ended, that wait was
#: most of sequent's cost per task (23.5 -> 18.2 ms a task, benchmarks/dasktasks.py).  1 ms is what
#: Dask's own workers use towards their peers.
CLIENT_BATCH_INTERVAL = 0.001

#: The most futures whose outcome was taken that the run holds until its next submit (DaskCluster.keep).
KEEP_ENDED = 256


class DaskCluster:
    """The run's connection to Dask, shared by its Dask executors."""

    def __init__(self, settings: dict):
        self.address: Optional[str] = settings.get("address")
        self.options = dict(settings.get("options") or {})
        self.client: Any = None
        self.local: Any = None  # the cluster started for the run, when no address was given
        self.log = logging.getLogger("sequent.dask")
        self.users = 0
        self.run: Optional[RunInfo] = None
        self.names: set[str] = set()
        self.signalled: set[int] = set()
        self.watcher: Optional[threading.Thread] = None
        self.closing = threading.Event()
        self.executors: list[DaskExecutor] = []
        self.workers: list[subprocess.Popen] = []  # the local cluster's worker processes
        self.prepared = False  # the workers were asked to start their agents for the run
        self.reruns = True  # until the scheduler says otherwise: Dask may run a task again elsewhere
        self.ended: list = []  # futures whose outcome was taken, held until the next submit (see release)
        self.ended_lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"Dask scheduler {self.address}" if self.address else "the local Dask cluster"

    def start(self) -> None:
        """Connect (once for all its executors); raises naming the scheduler when it cannot."""
        self.users += 1
        if self.client is not None:
            return
        try:
            import dask
            import distributed
        except ImportError as exc:
            raise EventorError(f"task_construct 'dask' needs Dask distributed: pip install 'sequent[dask]' "
                               f"({exc})") from None
        try:
            if self.address:
                self.client = distributed.Client(self.address, **{"timeout": 10, **self.options})
            else:
                with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                      "distributed.scheduler.no-workers-timeout": f"{GONE_AFTER:g}s"}):
                    # (no setting turns the HTTP dashboard off: keep it on loopback, on a free port)
                    self.local = distributed.LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0",
                                                          silence_logs=logging.ERROR)
                self._start_workers(self.local.scheduler_address)
                self.client = distributed.Client(self.local, **self.options)
                self.client.wait_for_workers(len(self.workers), timeout=60)
        except Exception as exc:
            self.close()
            raise EventorError(f"cannot connect to {self.where}: {type(exc).__name__}: {exc}") from None
        batches = getattr(self.client, "scheduler_comm", None)  # (a Dask without it just batches at 10 ms)
        if batches is not None and isinstance(getattr(batches, "interval", None), (int, float)):
            batches.interval = min(batches.interval, CLIENT_BATCH_INTERVAL)
        self.refresh()

    def _start_workers(self, address: str) -> None:
        """The local cluster's workers: processes of their own (``dask worker``, no nanny), so that the
        flow's script is never imported again by a worker (a spawned process would run it anew)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the flow's modules import there
        env.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
        count = max(1, min(LOCAL_WORKERS, os.cpu_count() or 1))
        for i in range(1, count + 1):
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", f"local-{i}",
                 "--nthreads", "2", "--no-nanny", "--dashboard-address", "127.0.0.1:0", "--host", "127.0.0.1"],
                env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def _stop_workers(self) -> None:
        """SIGTERM the local workers, SIGKILL those still there after a few seconds; reap them all."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in self.workers:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers = []

    def refresh(self) -> set[str]:
        """The names of the workers the scheduler knows now."""
        info = self.client.scheduler_info()
        self.names = {str(w.get("name")) for w in info.get("workers", {}).values()}
        return self.names

    def bind(self, run: RunInfo, log: logging.Logger) -> None:
        """Say what the scheduler's settings would hide (once per run)."""
        if self.run is not None:
            return
        self.run = run
        self.log = log

        def settings(dask_scheduler: Any = None) -> tuple:  # runs in the scheduler: its own values
            return (getattr(dask_scheduler, "allowed_failures", None),
                    getattr(dask_scheduler, "no_workers_timeout", None))

        try:
            allowed, no_workers = self.client.run_on_scheduler(settings)
        except Exception as exc:
            log.warning("Could not read the settings of %s: %s", self.where, exc)
            return
        self.reruns = allowed not in (0, "0")  # Dask may send a task again: agents must claim it first
        if allowed not in (0, "0"):
            log.warning("%s reruns a task up to %s times when its worker dies (distributed.scheduler."
                        "allowed-failures); sequent refuses such a rerun, so the task fails only once the reruns "
                        "are done: set DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 on the scheduler to see a "
                        "worker's death at once (KilledWorker)", self.where, allowed)
        if no_workers in (None, "None", "null"):
            log.warning("%s waits forever for a task's worker when none can run it (distributed.scheduler."
                        "no-workers-timeout is unset); sequent fails a task pinned to a gone worker after %g s, "
                        "but set DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT=5s on the scheduler",
                        self.where, GONE_AFTER)
        log.info("Dask: %s with workers %s", self.where, ", ".join(sorted(self.names)) or "(none yet)")

    def watch(self) -> None:
        """Fail the pinned tasks whose worker has been gone for GONE_AFTER seconds (a thread)."""
        if self.watcher is not None:
            return

        def loop() -> None:
            gone_since: dict[str, float] = {}
            while not self.closing.wait(1.0):
                pinned = [ex for ex in self.executors if ex.host is not None and ex.futures]
                if not pinned:
                    continue
                try:
                    names = self.refresh()
                except Exception:
                    continue
                now = time.monotonic()
                for ex in pinned:
                    if ex.host in names:
                        gone_since.pop(ex.host, None)
                    elif now - gone_since.setdefault(ex.host, now) >= GONE_AFTER:
                        ex.fail_all(f"Dask worker {ex.host!r} is gone from {self.where}")

        self.watcher = threading.Thread(target=loop, daemon=True, name="sequent-dask-watch")
        self.watcher.start()

    def keep(self, future: Any) -> None:
        """Hold a future whose outcome was taken until the next submit, the run's end, or until
        KEEP_ENDED are held (their results stay in the workers' memory meanwhile)."""
        with self.ended_lock:
            self.ended.append(future)
            if len(self.ended) >= KEEP_ENDED:
                self.ended = []

    def release(self) -> None:
        """Let go of the futures held by :meth:`keep`.  Called right after a submit, so that Dask's
        client sends their release in the same batch as the new task and the scheduler tells the
        worker to forget their results together with the task: released on their own, a moment
        before the next submit, they made the scheduler hold that task up to 5 ms (its batching
        towards a worker) and cost a chain about 4 ms a task (benchmarks/dasktasks.py)."""
        with self.ended_lock:
            self.ended = []

    def signal(self, signum: int) -> None:
        """Signal the run's tasks on every worker (in a thread: a dead worker must not hold us up)."""
        if signum in self.signalled or self.client is None or self.run is None:
            return
        self.signalled.add(signum)
        from .. import daskworker

        run = self.run

        def send() -> None:
            try:
                self.client.run(daskworker.signal_tasks, run.run_id, run.recovery, signum, on_error="ignore")
            except Exception as exc:
                self.log.warning("Could not signal the tasks on %s: %s", self.where, exc)

        thread = threading.Thread(target=send, daemon=True, name="sequent-dask-signal")
        thread.start()
        thread.join(10.0)

    def signal_one(self, key: str, signum: int) -> None:
        """Signal the task submitted as ``key`` on whichever worker runs it (or will: it then does not
        start); in a thread that nobody waits for, so that a dead worker holds nothing up."""
        client = self.client
        if client is None:
            return
        from .. import daskworker

        def send() -> None:
            try:
                client.run(daskworker.signal_task, key, signum, on_error="ignore")
            except Exception as exc:
                self.log.warning("Could not signal task %s on %s: %s", key, self.where, exc)

        threading.Thread(target=send, daemon=True, name="sequent-dask-signal-task").start()

    def stop(self, abandon: bool) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self.closing.set()
        self.release()
        if self.client is not None and self.run is not None:
            from .. import daskworker

            if abandon:
                self.signal(9)
            try:
                self.client.run(daskworker.forget_run, self.run.run_id, self.run.recovery, on_error="ignore")
            except Exception:
                pass
        self.close()

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        self._stop_workers()
        if self.local is not None:
            try:
                self.local.close()
            except Exception:
                pass
        self.client = self.local = None


class DaskExecutor(Executor):
    """Submits tasks to a Dask cluster: to the worker named ``host``, or to any worker (None)."""

    construct = TaskConstruct.dask
    remote = True

    def __init__(self, cluster: DaskCluster, host: Optional[str], report: Report,
                 max_concurrent: Optional[int] = None, imports: tuple[str, ...] = ()):
        self.cluster = cluster
        self.imports = list(imports)  # the modules of the Dask steps' functions: imported once per worker
        self.host = host
        self.report = report
        self.capacity = max_concurrent if max_concurrent and max_concurrent >= 1 else None
        self.futures: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.settings: dict = {}
        self.shared: Any = None  # the settings, scattered to the workers on the first submit
        cluster.executors.append(self)

    def start(self) -> None:
        self.cluster.start()

    def bind(self, run: RunInfo) -> None:
        log = logging.getLogger(run.logger_name)
        self.cluster.bind(run, log)
        self.log = log
        from ..agent import versions

        self.settings = {"target": run.target, "busy_timeout": run.busy_timeout, "run_id": run.run_id,
                         "recovery": run.recovery, "logger_name": run.logger_name, "logging": dict(run.logging),
                         "grace": run.grace, "imports": self.imports, "versions": versions(),
                         "claim_first": self.cluster.reruns}
        if self.host is not None:
            self.cluster.watch()
        if not self.cluster.prepared:  # every worker starts its agent for the run now, side by side
            self.cluster.prepared = True
            from .. import daskworker

            try:
                self.cluster.client.run(daskworker.prepare, self.settings, wait=False)
            except Exception as exc:  # the first task says what is wrong
                log.debug("Could not prepare the Dask workers: %s", exc)

    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        where = self.cluster.where
        if self.host is not None and self.host not in self.cluster.names and self.host not in self.cluster.refresh():
            self.report(TaskOutcome.failed(task_id, f"no Dask worker is named {self.host!r} in {where} (its workers: "
                                           f"{', '.join(sorted(self.cluster.names)) or 'none'})", host=self.host))
            return
        blob = task_blob(step, ctx, "Dask", task_id, self.report, self.host)
        if blob is None:
            return
        from .. import daskworker

        key = f"sequent-{self.settings['run_id']}-{self.settings['recovery']}-{task_id}-{uuid.uuid4().hex[:8]}"
        task = {"id": task_id, "key": key, "ctx": ctx, "blob": blob}
        if self.shared is None:  # the run's settings travel once to every worker, then by reference
            self.shared = self.cluster.client.scatter(self.settings, broadcast=True, hash=False)
        future = self.cluster.client.submit(daskworker.run_task, self.shared, task, key=key,
                                            workers=[self.host] if self.host else None, allow_other_workers=False,
                                            pure=False, retries=0)
        with self.lock:
            self.futures[task_id] = future
        self.cluster.release()
        future.add_done_callback(functools.partial(self._done, task_id))

    def _take(self, task_id: int) -> bool:
        with self.lock:
            future = self.futures.pop(task_id, None)
        if future is None:
            return False
        self.cluster.keep(future)
        return True

    def _done(self, task_id: int, future: Any) -> None:
        """A future ended (called on a thread of the client): report the task's outcome."""
        if not self._take(task_id):
            return  # reported already (failed as gone, or cancelled by a signal)
        try:
            status = future.status
            if status == "finished":
                result = future.result()
                for data in result.get("records", ()):
                    record = logging.makeLogRecord(data)
                    logging.getLogger(record.name).handle(record)
                self.report(TaskOutcome(**result["outcome"]))
                return
            if status == "cancelled":
                self.report(TaskOutcome.failed(task_id, "cancelled on Dask", host=self.host))
                return
            exc = future.exception()
            if type(exc).__name__ == "KilledWorker":
                worker = self.host or getattr(getattr(exc, "last_worker", None), "name", None)
                named = f" {worker!r}" if worker is not None else ""
                why = f"the Dask worker{named} running it died ({type(exc).__name__}: {exc})"
            else:
                why = f"Dask could not run it: {type(exc).__name__}: {exc}"
            self.report(TaskOutcome.failed(task_id, why, host=self.host))
        except Exception as exc:  # the outcome itself did not arrive whole
            self.report(TaskOutcome.failed(task_id, f"no outcome from Dask: {type(exc).__name__}: {exc}",
                                           host=self.host))

    def fail_all(self, why: str) -> None:
        """Fail (and cancel) every task of this executor still waiting on Dask."""
        with self.lock:
            futures, self.futures = self.futures, {}
        for task_id, future in futures.items():
            try:
                future.cancel()
            except Exception:
                pass
            self.report(TaskOutcome.failed(task_id, why, host=self.host))

    def signal(self, signum: int) -> None:
        """Signal the tasks on the workers: they end, and report, as killed; what waits never starts."""
        if self.futures:
            self.cluster.signal(signum)

    def signal_task(self, task_id: int, signum: int) -> bool:
        """Signal one task's process group on its worker, by the Dask key of its current try."""
        with self.lock:
            future = self.futures.get(task_id)
        if future is None:
            return False
        self.cluster.signal_one(future.key, int(signum))
        return True

    def unkillable(self) -> bool:
        """Past the grace, a task whose worker does not answer is given up (its agent still records it)."""
        return True

    def stop(self, grace: float, *, abandon: bool) -> None:
        if self.futures:
            self.fail_all("abandoned: the run ended")
        self.cluster.stop(abandon)


def dask_executors(program: Any, config: Any, report: Report) -> tuple[Optional[DaskExecutor], dict]:
    """The run's Dask executors: one for unpinned tasks (when a Dask step has no hosts) and one per
    worker name that Dask steps pin to, sharing one cluster connection."""
    from .. import config as _config

    steps = [s for s in program.step_list if not s.is_container and s.config.task_construct is TaskConstruct.dask]
    if not steps:
        return None, {}
    cluster = DaskCluster(dict(config.get("DASK") or {}))
    from ..hosts import function_modules

    imports = tuple(function_modules(steps))
    unpinned = DaskExecutor(cluster, None, report, imports=imports) if any(not s.hosts for s in steps) else None
    pinned = {}
    for step in steps:
        for name in step.hosts:
            if name not in pinned:
                entry = _config.host_settings(name, config)
                pinned[name] = DaskExecutor(cluster, name, report, max_concurrent=entry.max_concurrent,
                                            imports=imports)
    return unpinned, pinned
