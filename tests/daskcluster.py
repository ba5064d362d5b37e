"""A real Dask distributed cluster on one machine, for the Dask tests, CI and by hand::

    .venv/bin/python tests/daskcluster.py start DIR                # prints the scheduler's address
    .venv/bin/python tests/daskcluster.py stop DIR                 # stops everything it started
    .venv/bin/python tests/daskcluster.py start-worker DIR NAME    # (re)launches one worker, no wait

``start`` runs one scheduler on 127.0.0.1, on a port free when it starts (``tcp://127.0.0.1:PORT``),
and three workers named w1, w2, w3 with two threads each, every one a process of its own in a
session of its own, and returns once the scheduler lists all three workers.  ``stop`` sends
SIGTERM to the workers, then to the scheduler (each one's whole process tree), SIGKILL a few
seconds later to what is left, and waits until they are all gone.  ``start-worker`` starts one
stopped worker of a running set again under its name and returns at once (it is how
:meth:`DaskCluster.restart_worker` starts a worker that is no child of its caller; that method
then waits for the scheduler).

The scheduler and the workers run with ``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0`` (a
task whose worker dies fails with ``KilledWorker`` instead of running again elsewhere) and
``DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT=5s`` (a task that no worker may run fails with
``NoValidWorkerError`` instead of waiting forever), and with ``PYTHONPATH=<repo>:<repo>/tests``, so
that tasks import this repository and the tests' modules: on the workers, which run them, and on
the scheduler too, which unpickles the task graph (a test module's function travels by name).
There is no dashboard and no memory limit (a busy machine must not pause a worker).  Every process
listens on 127.0.0.1 only: ``--no-dashboard`` drops the dashboard's pages but each process still
serves HTTP (health, metrics), by default on 0.0.0.0 and, for the scheduler, on the fixed port
8787, so ``--dashboard-address 127.0.0.1:0`` moves that to a free loopback port.

DIR holds everything: ``state.json`` (address, port, and per process its PID, start time and
log), ``scheduler.log``, one ``wN.log`` and one local (scratch) directory ``wN/`` per worker.

Why this shape (see /work/shared/DISTRIBUTED.md, sections 3 and 5):

- Workers run without a nanny (``--no-nanny``): each worker is then one process, so killing it
  (SIGKILL) is exactly a worker's death as the scheduler sees it, and nothing starts it again
  behind the test's back (a nanny restarts its worker at once, under the same name, racing with
  :meth:`DaskCluster.restart_worker`).  Tasks also run in a normal, non-daemonic process, so they
  may use ``multiprocessing``.  The price: such a worker may ignore SIGTERM for minutes while it
  closes, so ``stop`` ends with SIGKILL.
- Every process is started through a short-lived intermediate process, so that it is the child of
  no caller: the test session checks that it has no child processes, and a CLI that exits must
  leave its daemons running.
- Processes are found, and stopped, by PID (checked against their start time, since a PID is
  reused) and by parentage and session, so a task's own subprocesses go with their worker.

The CLI itself needs only the standard library (and tests/proctree.py beside it), except
``start``, which asks the scheduler for its workers through ``distributed`` (so it must run with
the virtualenv's python, where dask is installed; the ``dask`` command used is the one next to
that python).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import proctree  # tests/proctree.py: this script's own folder is on sys.path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
WORKERS = ("w1", "w2", "w3")
HOST = "127.0.0.1"
NTHREADS = 2
START_TIMEOUT = 60.0  # seconds for the scheduler to listen and list every worker
REGISTER_TIMEOUT = 30.0  # seconds for a restarted worker to be listed by the scheduler
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL in stop()
KILL_TIMEOUT = 10.0  # seconds every process of a set may take to be gone after SIGKILL
PORT_ATTEMPTS = 3  # a chosen port taken between choosing and binding is retried with another one
STATE = "state.json"
#: The environment of the scheduler and the workers, on top of the caller's.
DASK_ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
    "DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "5s",
}
#: The program of the intermediate process: start argv (from a JSON argument) in a new session
#: with its output appended to a log, print its PID and exit, leaving it to init.
_SPAWNER = """\
import json, os, subprocess, sys
spec = json.loads(sys.argv[1])
with open(spec["log"], "ab") as log:
    proc = subprocess.Popen(spec["argv"], env=spec["env"], cwd=spec["cwd"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(proc.pid, flush=True)
"""


class DaskClusterError(RuntimeError):
    """The cluster could not be started, found or stopped; the message says why."""


# ----------------------------------------------------------------------------------- /proc helpers


def _tree(roots: dict[int, Optional[int]]) -> set[int]:
    """Every live process among ``roots`` (PID: start time) and below them: their descendants, and
    the processes of the sessions they lead (each was started in a session of its own), which
    includes those orphaned when their parent died (a session's id is not reused while it has
    processes)."""
    live = [pid for pid, start_time in roots.items() if proctree.alive(pid, start_time)]
    return proctree.tree(live, lambda pid, stat: stat.session in roots and pid not in roots)


def _kill_all(collect: Callable[[], set[int]], timeout: float = KILL_TIMEOUT) -> set[int]:
    """SIGKILL what ``collect()`` returns until it returns nothing, and return every PID killed
    (:func:`proctree.kill_all`)."""
    return proctree.kill_all(collect, timeout, DaskClusterError)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# ------------------------------------------------------------------------------ asking the scheduler


def scheduler_workers(address: str, timeout: float = 5.0) -> dict[str, dict]:
    """The workers the scheduler at ``address`` lists now: ``{name: its identity}`` (``address``,
    ``status`` ('running', ...), ``nthreads``, ...).  Raises OSError (or asyncio's TimeoutError)
    when the scheduler does not answer.

    One short request through ``distributed``'s RPC on an event loop of its own, which is closed
    again: no Client, and no thread left running in the caller."""
    import asyncio

    from distributed.core import rpc

    async def ask() -> dict:
        async with rpc(address, timeout=timeout) as scheduler:
            return await asyncio.wait_for(scheduler.identity(), timeout)

    identity = asyncio.run(ask())
    return {str(worker["name"]): {**worker, "address": worker_address}
            for worker_address, worker in identity["workers"].items()}


def _wait_workers(address: str, until: Callable[[dict[str, dict]], bool], deadline: float,
                  failed: Callable[[], Optional[str]], what: str) -> dict[str, dict]:
    """Ask the scheduler until ``until(workers)`` holds; raise when ``failed()`` gives a reason or
    at ``deadline``."""
    last: object = None
    while True:
        try:
            workers = scheduler_workers(address, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        except Exception as exc:  # noqa: BLE001 - not up yet, or dead: failed() says which
            workers, last = None, exc
        if workers is not None:
            if until(workers):
                return workers
            last = sorted(workers)
        why = failed()
        if why is not None:
            raise DaskClusterError(why)
        if time.monotonic() > deadline:
            raise DaskClusterError(f"{what}: not within the time allowed (scheduler's last answer: {last!r})")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------- the set


def _dask_command() -> str:
    """The ``dask`` command of this python's environment (the virtualenv's)."""
    return os.path.join(os.path.dirname(sys.executable), "dask")


def available() -> Optional[str]:
    """None when a cluster can be started here (``distributed`` imports and the ``dask`` command
    exists next to this python), else the reason it cannot."""
    try:
        importlib.import_module("distributed")
    except Exception as exc:  # noqa: BLE001 - any import failure is the reason
        return (f"distributed does not import in {sys.executable} ({type(exc).__name__}: {exc}): run this "
                f"with the virtualenv's python, where pip install -e '.[test]' (or '.[dask]') installs it")
    if not os.access(_dask_command(), os.X_OK):
        return f"no dask command at {_dask_command()}"
    return None


def _write_state(directory: Path, state: dict) -> None:
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, directory / STATE)


def _spawn(argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path) -> tuple[int, Optional[int]]:
    """Start ``argv`` in a session of its own through an intermediate process that exits at once, so
    that it is no child of ours; return its (PID, start time)."""
    spec = json.dumps({"argv": list(argv), "env": env, "log": str(log), "cwd": str(cwd)})
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _SPAWNER, spec], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise DaskClusterError(f"could not start {argv[0]}: {done.stderr.strip()[-2000:]}")
    pid = int(done.stdout)
    stat = proctree.stat(pid)
    return pid, None if stat is None else stat.start_time


def _environment() -> dict[str, str]:
    """The caller's environment with DASK_ENV, and this repository and its tests on PYTHONPATH: the
    workers import the tasks' modules, and so does the scheduler, which unpickles the task graph
    (a function of a test module is pickled by reference)."""
    return {**os.environ, **DASK_ENV, "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class DaskCluster:
    """A running set, loaded from the directory ``start`` made (its ``state.json``).

    ``address`` is the scheduler's (``tcp://127.0.0.1:PORT``, for ``distributed.Client``),
    ``names`` the workers' names (``["w1", "w2", "w3"]``).  The state file is read again on every
    call, so a worker restarted by another process (or another instance) is seen here too.
    """

    def __init__(self, directory: os.PathLike | str) -> None:
        self.directory = Path(directory).resolve()
        state = self._state()
        self.address: str = state["address"]
        self.port: int = state["port"]
        self.names: list[str] = [worker["name"] for worker in state["workers"]]

    def __repr__(self) -> str:
        return f"DaskCluster({str(self.directory)!r}, address={self.address!r}, names={self.names})"

    def _state(self) -> dict:
        try:
            return json.loads((self.directory / STATE).read_text())
        except (OSError, ValueError) as exc:
            raise DaskClusterError(f"no dask cluster was started in {self.directory}: {exc}") from None

    def _worker(self, name: str, state: Optional[dict] = None) -> dict:
        for worker in (state or self._state())["workers"]:
            if worker["name"] == name:
                return worker
        raise DaskClusterError(f"no worker {name!r} here (workers: {', '.join(self.names)})")

    @property
    def scheduler_pid(self) -> int:
        """The PID of the scheduler process (whether or not it still runs)."""
        return self._state()["scheduler"]["pid"]

    def scheduler_running(self) -> bool:
        """True while the scheduler process start() started runs."""
        scheduler = self._state()["scheduler"]
        return proctree.alive(scheduler["pid"], scheduler["start_time"])

    def worker_pid(self, name: str) -> int:
        """The PID of worker ``name``'s process (its latest start; whether or not it still runs)."""
        return self._worker(name)["pid"]

    def running(self, name: str) -> bool:
        """True while worker ``name``'s process (its latest start) runs."""
        worker = self._worker(name)
        return proctree.alive(worker["pid"], worker["start_time"])

    def log(self, name: str) -> Path:
        """The log file of worker ``name`` (``"scheduler"``: the scheduler's)."""
        if name == "scheduler":
            return Path(self._state()["scheduler"]["log"])
        return Path(self._worker(name)["log"])

    def _roots(self, names: Optional[Sequence[str]] = None) -> dict[int, Optional[int]]:
        """{PID: start time} of the scheduler and the workers (or of the workers ``names`` only)
        that still run as the processes recorded."""
        state = self._state()
        entries = [state["scheduler"], *state["workers"]] if names is None else \
            [self._worker(name, state) for name in names]
        return {entry["pid"]: entry["start_time"] for entry in entries
                if proctree.alive(entry["pid"], entry["start_time"])}

    def processes(self) -> set[int]:
        """Every live process of the set: the scheduler, the workers and whatever runs below them."""
        return _tree(self._roots())

    def worker_processes(self, name: str) -> set[int]:
        """Worker ``name``'s live process and every process below it (its tasks' subprocesses)."""
        return _tree(self._roots([name]))

    def workers(self, timeout: float = 5.0) -> dict[str, dict]:
        """The workers the scheduler lists now, by name (see :func:`scheduler_workers`)."""
        return scheduler_workers(self.address, timeout)

    def kill_worker(self, name: str, timeout: float = KILL_TIMEOUT) -> set[int]:
        """SIGKILL worker ``name``'s process tree (the worker dies mid-task) and return the PIDs
        killed once they are all gone.  The scheduler notices the closed connection on its own."""
        roots = self._roots([name])  # checked once, before any signal: a PID reused later is not ours
        return _kill_all(lambda: _tree(roots), timeout) if roots else set()

    def restart_worker(self, name: str, timeout: float = REGISTER_TIMEOUT) -> int:
        """Start worker ``name`` again under the same name (killing it first if it still runs) and
        return its new PID once the scheduler lists it as running.

        The scheduler refuses a second worker of the same name, so this first waits until it has
        dropped the old one.  The worker is started by the CLI's ``start-worker`` in a process of
        its own, so that it is no child of the caller."""
        self.kill_worker(name)
        deadline = time.monotonic() + timeout
        _wait_workers(self.address, lambda workers: name not in workers, deadline,
                      lambda: None if self.scheduler_running() else "the scheduler is not running",
                      f"the scheduler to drop worker {name}")
        done = subprocess.run([sys.executable, __file__, "start-worker", str(self.directory), name],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise DaskClusterError(done.stderr.strip())
        self._wait_registered([name], deadline)
        return self.worker_pid(name)

    def _wait_registered(self, names: Sequence[str], deadline: float) -> None:
        """Return once the scheduler lists every one of ``names`` as running; raise (with the log's
        tail) if the scheduler or one of those workers exits first, or at ``deadline``."""
        def failed() -> Optional[str]:
            if not self.scheduler_running():
                return f"the scheduler exited; its log:\n{_log_tail(self.log('scheduler'))}"
            for name in names:
                if not self.running(name):
                    return f"worker {name} exited; its log:\n{_log_tail(self.log(name))}"
            return None

        _wait_workers(self.address,
                      lambda workers: all(workers.get(name, {}).get("status") == "running" for name in names),
                      deadline, failed, f"the scheduler at {self.address} to list workers {', '.join(names)}")

    def _launch_worker(self, name: str) -> int:
        """Start worker ``name`` (no wait) and record its PID in the state file."""
        state = self._state()
        worker = self._worker(name, state)
        if proctree.alive(worker["pid"], worker["start_time"]):
            raise DaskClusterError(f"worker {name} still runs (pid {worker['pid']}); kill it first")
        local = self.directory / name
        local.mkdir(exist_ok=True)
        argv = [state["dask"], "worker", self.address, "--name", name, "--nthreads", str(NTHREADS), "--no-nanny",
                "--no-dashboard", "--dashboard-address", f"{HOST}:0", "--host", HOST, "--memory-limit", "0",
                "--local-directory", str(local)]
        worker["pid"], worker["start_time"] = _spawn(argv, _environment(), Path(worker["log"]),
                                                     self.directory)
        _write_state(self.directory, state)
        return worker["pid"]


# ----------------------------------------------------------------------------------- start and stop


def _start_once(directory: Path, workers: Sequence[str], port: int) -> DaskCluster:
    """Start the scheduler on ``port`` and the workers, and wait until the scheduler lists them."""
    dask = _dask_command()
    address = f"tcp://{HOST}:{port}"
    log = directory / "scheduler.log"
    state = {"address": address, "port": port, "dask": dask,
             "scheduler": {"pid": None, "start_time": None, "log": str(log)},
             "workers": [{"name": name, "pid": None, "start_time": None, "log": str(directory / f"{name}.log")}
                         for name in workers]}
    for path in [log, *(Path(worker["log"]) for worker in state["workers"])]:
        path.write_text("")
    argv = [dask, "scheduler", "--host", HOST, "--port", str(port), "--no-dashboard",
            "--dashboard-address", f"{HOST}:0"]
    state["scheduler"]["pid"], state["scheduler"]["start_time"] = _spawn(argv, _environment(), log,
                                                                         directory)
    _write_state(directory, state)  # at once, so that stop() finds whatever has started
    cluster = DaskCluster(directory)
    deadline = time.monotonic() + START_TIMEOUT
    _wait_workers(address, lambda _: True, deadline,  # the scheduler answers
                  lambda: None if cluster.scheduler_running()
                  else f"the scheduler exited; its log:\n{_log_tail(log)}",
                  f"the scheduler to listen at {address}")
    for name in workers:
        cluster._launch_worker(name)
    cluster._wait_registered(workers, deadline)
    return cluster


def start(directory: os.PathLike | str, workers: Sequence[str] = WORKERS) -> DaskCluster:
    """Start a scheduler and the named workers with their logs and state in ``directory``
    (created if missing), and return the set once the scheduler lists every worker as running.

    The scheduler's port is one free when it starts; one taken before the scheduler binds it is
    retried with another.  On failure everything started is stopped and DaskClusterError says why,
    with the failing process's log tail.  No process of the set is a child of the caller.
    """
    if not workers or len(set(workers)) != len(workers):
        raise DaskClusterError(f"workers need distinct names: {list(workers)}")
    why = available()
    if why is not None:
        raise DaskClusterError(why)
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / STATE).exists() and DaskCluster(directory).processes():
        raise DaskClusterError(f"{directory} holds a running dask cluster; stop it first")
    for attempt in range(PORT_ATTEMPTS):
        try:
            return _start_once(directory, workers, _free_port())
        except BaseException as exc:
            stop(directory)
            if not (isinstance(exc, DaskClusterError) and "Address already in use" in str(exc)
                    and attempt + 1 < PORT_ATTEMPTS):
                raise
    raise AssertionError("not reached")


def stop(directory: os.PathLike | str, grace: float = STOP_GRACE) -> None:
    """Stop every process of the set in ``directory`` with its whole tree: SIGTERM to the workers,
    then to the scheduler, each given ``grace`` seconds to end, then SIGKILL to whatever is left;
    return once they are all gone (a zombie is gone).  A directory without a set, or a set already
    stopped, is fine.

    The workers go first: a worker told to close by its closing scheduler while it closes itself
    may hang (its close is cancelled) and would wait for the SIGKILL."""
    try:
        cluster = DaskCluster(directory)
    except DaskClusterError:
        return
    roots = cluster._roots()  # checked once, before any signal: a PID reused later is not ours
    workers = cluster._roots(cluster.names)

    def collect() -> set[int]:
        return _tree(roots)

    proctree.send_signal(_tree(workers), signal.SIGTERM)
    proctree.wait_gone(lambda: _tree(workers), grace)
    proctree.send_signal(collect(), signal.SIGTERM)
    if not proctree.wait_gone(collect, grace):
        _kill_all(collect)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = (len(args) == 2 and args[0] in ("start", "stop")) or (len(args) == 3 and args[0] == "start-worker")
    if not usage:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    command, directory = args[0], args[1]
    try:
        if command == "start":
            print(start(directory).address, flush=True)
        elif command == "stop":
            stop(directory)
        else:
            DaskCluster(directory)._launch_worker(args[2])
    except DaskClusterError as exc:
        print(f"daskcluster {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
